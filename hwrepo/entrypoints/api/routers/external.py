"""Checks other systems report on a revision:

    POST  /api/v1/projects/{owner}/{name}/revisions/{number}/checks/external
    PATCH /api/v1/projects/{owner}/{name}/revisions/{number}/checks/external/{check_id}

For maintainers, and for tokens of scope `checks` made for it."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from hwrepo.entrypoints.api.deps import BackendsDep, RevisionNumber, UserDep
from hwrepo.entrypoints.api.schemas import CheckOut
from hwrepo.service_layer import external
from hwrepo.service_layer.projects import get_project

router = APIRouter(
    prefix="/api/v1/projects/{owner}/{name}/revisions/{number}/checks/external",
    tags=["checks"],
)
State = Literal["queued", "running", "passed", "failed", "errored", "timed_out", "cancelled"]


class AnnotationIn(BaseModel):
    path: Annotated[str, Field(min_length=1, max_length=4096)]
    line: Annotated[int | None, Field(ge=1, le=2**31 - 1)] = None
    end_line: Annotated[int | None, Field(ge=1, le=2**31 - 1)] = None
    level: Literal["error", "warning", "notice"] = "warning"
    message: Annotated[str, Field(min_length=1, max_length=10_000)]


class ReportIn(BaseModel):
    state: State
    summary: Annotated[str | None, Field(max_length=10_000)] = None
    details_url: Annotated[str | None, Field(max_length=2048)] = None
    annotations: Annotated[list[AnnotationIn] | None, Field(max_length=5000)] = None


class NewReportIn(ReportIn):
    name: Annotated[str, Field(min_length=1, max_length=200, description="e.g. firmware-ci")]


def _report(body: ReportIn) -> external.Report:
    notes = None
    if body.annotations is not None:
        notes = [external.Annotation(**a.model_dump()) for a in body.annotations]
    return external.Report(body.state, body.summary, body.details_url, notes)


@router.post("", status_code=201, response_model=CheckOut)
async def report_external_check(
    owner: str,
    name: str,
    number: RevisionNumber,
    body: NewReportIn,
    backends: BackendsDep,
    user: UserDep,
    response: Response,
) -> CheckOut:
    """Report a check run by another system (a new run when that name's check has ended)."""
    check = await run_in_threadpool(
        lambda: external.report_check(backends, user, owner, name, number, body.name, _report(body))
    )
    out = await _out(backends, user, owner, name, check)
    response.headers["Location"] = out.url
    return out


@router.patch("/{check_id}", response_model=CheckOut)
async def update_external_check(
    owner: str,
    name: str,
    number: RevisionNumber,
    check_id: Annotated[str, Path(max_length=100)],
    body: ReportIn,
    backends: BackendsDep,
    user: UserDep,
) -> CheckOut:
    """Move a reported check on: running, then its verdict (summary, annotations)."""
    check = await run_in_threadpool(
        lambda: external.report_check(
            backends, user, owner, name, number, "", _report(body), check_id=check_id
        )
    )
    return await _out(backends, user, owner, name, check)


async def _out(
    backends: BackendsDep, user: UserDep, owner: str, name: str, check: object
) -> CheckOut:

    project = await run_in_threadpool(get_project, backends, user, owner, name)
    return CheckOut.of(project, check)  # type: ignore[arg-type]
