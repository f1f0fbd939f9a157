"""/api/v1/projects/{owner}/{name}/revisions/{number}/checks: results of a revision's checks."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from hwrepo.adapters import eventbus
from hwrepo.checks.registry import all_kinds
from hwrepo.domain.checks import EXTERNAL, Check, CheckState, missing_required
from hwrepo.domain.errors import NotFound
from hwrepo.domain.model import MAX_OFFSET, Project
from hwrepo.entrypoints.api.deps import (
    UNTRUSTED_CONTENT,
    BackendsDep,
    ByteOffset,
    KeptReadDep,
    Page,
    RevisionNumber,
    UserDep,
    download,
)
from hwrepo.entrypoints.api.schemas import (
    ArtifactOut,
    CheckDetailOut,
    CheckOut,
    ChecksOut,
    RerunOut,
    ViolationPage,
)
from hwrepo.service_layer import checks, waveforms

router = APIRouter(
    prefix="/api/v1/projects/{owner}/{name}/revisions/{number}/checks", tags=["checks"]
)
FIRST_PAGE = 100


async def found_check(
    owner: str,
    name: str,
    number: RevisionNumber,
    check_id: str,
    backends: BackendsDep,
    user: UserDep,
) -> tuple[Project, Check]:
    """The check named by the path, after the same visibility rules as its project."""
    return await run_in_threadpool(checks.get_check, backends, user, owner, name, number, check_id)


FoundCheck = Annotated[tuple[Project, Check], Depends(found_check)]


async def _live_kinds(request: Request) -> set[str]:
    """Kinds some worker runs; when NATS cannot tell, every kind (no false alarm)."""
    nc = request.app.state.nats
    try:
        return await eventbus.live_worker_kinds(nc.jetstream())
    except Exception:
        return {kind.name for kind in all_kinds()}


@router.get("", response_model=ChecksOut)
async def list_checks(
    owner: str,
    name: str,
    number: RevisionNumber,
    request: Request,
    backends: BackendsDep,
    user: UserDep,
    read: KeptReadDep,
) -> Response:
    if (kept := await read.kept()) is not None:
        return kept
    found = await run_in_threadpool(checks.list_checks, backends, user, owner, name, number)
    project, items = found.project, found.checks
    queued = {c.kind for c in items if c.state is CheckState.QUEUED and c.kind != EXTERNAL}
    waiting = sorted(queued - await _live_kinds(request)) if queued else []
    out = ChecksOut(
        state=found.state.value,
        checks_state=found.checks_state.value,
        review=found.review.model_dump(),
        planned=found.planned,
        plan_errors=found.errors,
        waiting_for=waiting,
        required=project.required_checks,
        missing_required=missing_required(items, project.required_checks),
        counts=checks.counts_by_state(items),
        checks=[CheckOut.of(project, c) for c in items],
    )
    # `waiting_for` depends on which workers live now, not on the index: kept only without it
    return read.answer(out) if queued else read.keep(out)


@router.post("/rerun", response_model=RerunOut, status_code=202)
async def rerun_all(
    owner: str, name: str, number: RevisionNumber, backends: BackendsDep, user: UserDep
) -> RerunOut:
    queued = await run_in_threadpool(checks.rerun, backends, user, owner, name, number)
    return RerunOut(queued=[c.id for c in queued])


@router.get("/{check_id}", response_model=CheckDetailOut)
async def get_check(found: FoundCheck, backends: BackendsDep) -> CheckDetailOut:
    project, check = found
    details = await run_in_threadpool(checks.check_details, backends, check)
    violations = details.get("violations")
    if isinstance(violations, list):
        details = {
            **details,
            "violations": violations[:FIRST_PAGE],
            "violations_total": len(violations),
        }
    base = CheckOut.of(project, check)
    return CheckDetailOut(
        **base.model_dump(),
        detected=check.detected,
        artifacts=[
            ArtifactOut(
                name=a["name"],
                media_type=a["media_type"],
                size=a["size"],
                description=a.get("description", ""),
                url=f"{base.url}/artifacts/{quote(a['name'])}",
            )
            for a in check.artifacts
        ],
        details=details,
    )


@router.post("/{check_id}/rerun", response_model=RerunOut, status_code=202)
async def rerun_one(
    owner: str,
    name: str,
    number: RevisionNumber,
    check_id: str,
    backends: BackendsDep,
    user: UserDep,
) -> RerunOut:
    queued = await run_in_threadpool(checks.rerun, backends, user, owner, name, number, check_id)
    return RerunOut(queued=[c.id for c in queued])


def _matches(
    v: dict[str, Any], type: str | None, severity: str | None, waived: bool | None
) -> bool:
    return (
        (type is None or v.get("type") == type)
        and (severity is None or v.get("severity") == severity)
        and (waived is None or bool(v.get("waived")) == waived)
    )


@router.get("/{check_id}/violations", response_model=ViolationPage)
async def violations(
    found: FoundCheck,
    backends: BackendsDep,
    type: str | None = None,
    severity: str | None = None,
    waived: bool | None = None,
    page: Page = 1,
    per_page: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ViolationPage:
    _, check = found
    details = await run_in_threadpool(checks.check_details, backends, check)
    # Each with its index in the check's full list: the stable anchor of a violation
    # (`#violation-{index}` on its page, `hwrepo kicad show ... INDEX`).
    matching = [
        {**v, "index": i}
        for i, v in enumerate(details.get("violations", []))
        if _matches(v, type, severity, waived)
    ]
    start = (page - 1) * per_page
    return ViolationPage(
        items=matching[start : start + per_page],
        page=page,
        per_page=per_page,
        total=len(matching),
    )


async def artifact_response(
    backends: BackendsDep, item: dict[str, Any], via: str, disposition: str = "inline"
) -> Response:
    if via == "presigned":
        url = await run_in_threadpool(
            backends.store.presigned_url, item["key"], item["name"], timedelta(minutes=15)
        )
        return RedirectResponse(url, status_code=307)
    chunks = await run_in_threadpool(backends.store.stream, item["key"])
    filename = item["name"].rsplit("/", 1)[-1]
    return StreamingResponse(
        chunks,
        media_type=item["media_type"],
        headers={
            "Content-Length": str(item["size"]),
            "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(filename)}",
            **UNTRUSTED_CONTENT,
        },
    )


Via = Annotated[Literal["stream", "presigned"], Query()]


@router.get(
    "/{check_id}/artifacts/{artifact:path}",
    **download("*/*", "the artifact, of its own media type", redirects=True),
)
async def download_artifact(
    artifact: str, found: FoundCheck, backends: BackendsDep, via: Via = "stream"
) -> Response:
    _, check = found
    return await artifact_response(backends, checks.artifact(check, artifact), via)


@router.get("/{check_id}/sarif", **download("application/sarif+json", "SARIF 2.1.0"))
async def sarif(found: FoundCheck, backends: BackendsDep) -> Response:
    _, check = found
    return await artifact_response(
        backends, checks.artifact(check, "result.sarif"), "stream", "attachment"
    )


@router.get(
    "/{check_id}/waveform",
    **download("application/octet-stream", "the waveform (FST, VCD)", redirects=True),
)
async def waveform(found: FoundCheck, backends: BackendsDep, via: Via = "stream") -> Response:
    _, check = found
    for item in check.artifacts:
        if item["name"].endswith((".fst", ".vcd", ".ghw")):
            return await artifact_response(backends, item, via, "attachment")
    raise NotFound(f"check {check.name!r} stored no waveform")


@router.get("/{check_id}/waveform/signals")
async def waveform_signals(found: FoundCheck, backends: BackendsDep) -> dict[str, Any]:
    """The waveform's signals (full names and widths), its timescale (`timescale_s`: seconds
    per time unit) and its end; read in a sandbox, as every file a design produced."""
    _, check = found
    return await run_in_threadpool(waveforms.signals, backends, check)


@router.get("/{check_id}/waveform/changes")
async def waveform_changes(
    found: FoundCheck,
    backends: BackendsDep,
    signal: Annotated[list[str], Query(max_length=64, description="full names, repeated")],
    start: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    end: Annotated[int, Query(ge=1, le=MAX_OFFSET)] = 1,
    pixels: Annotated[int, Query(ge=1, le=8192)] = 1000,
) -> dict[str, Any]:
    """Value changes of the chosen signals between `start` and `end` (the waveform's time
    units), at most one per pixel (`[time, bits, changes in that pixel]`), with each signal's
    value at `start`: a waveform of any size is browsed without sending it."""
    _, check = found
    return await run_in_threadpool(waveforms.changes, backends, check, signal, start, end, pixels)


@router.get("/{check_id}/log", **download("text/plain", "a page of the job's log"))
async def log(
    found: FoundCheck,
    backends: BackendsDep,
    offset: ByteOffset = 0,
    limit: Annotated[int, Query(ge=1, le=8 * 1024 * 1024)] = 1024 * 1024,
) -> Response:
    """The job's log, paged by byte offset: `X-Log-Size` is its size, `X-Next-Offset` where the
    next page starts (absent at the end). While the check is queued or running, the log so far
    (`X-Log-Live: true`): ask again from the same offset for what comes next."""
    _, check = found
    page = await run_in_threadpool(checks.log_page, backends, check, offset, limit)
    headers = {"X-Log-Size": str(page.size), "X-Log-Live": "true" if page.live else "false"}
    if offset + len(page.data) < page.size:
        headers["X-Next-Offset"] = str(offset + len(page.data))
    return Response(page.data, media_type="text/plain; charset=utf-8", headers=headers)
