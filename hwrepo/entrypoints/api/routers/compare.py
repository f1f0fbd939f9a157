"""/api/v1/projects/{owner}/{name}/compare/{a}...{b}: two revisions compared in the checks' own
terms (`{b}` alone: with its parent). See hwrepo.service_layer.comparisons."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from starlette.concurrency import run_in_threadpool

from hwrepo.domain.errors import Invalid
from hwrepo.domain.model import MAX_REVISION
from hwrepo.entrypoints.api.deps import BackendsDep, UserDep, download
from hwrepo.entrypoints.api.routers.checks import artifact_response
from hwrepo.service_layer import comparisons

router = APIRouter(prefix="/api/v1/projects/{owner}/{name}/compare", tags=["reviews"])

_SPEC = re.compile(r"(?:(\d{1,10})\.\.\.)?(\d{1,10})")
Spec = Annotated[
    str,
    Path(
        max_length=30,
        description="`A...B` (revision numbers) or `B` alone, compared with its parent",
        examples=["3...5", "5"],
    ),
]


def parse_spec(spec: str) -> tuple[int | None, int]:
    found = _SPEC.fullmatch(spec)
    numbers = [int(n) for n in found.groups() if n is not None] if found else []
    if not found or not all(1 <= n <= MAX_REVISION for n in numbers):
        raise Invalid(
            f"{spec!r} names no revisions to compare: write A...B (two revision numbers, "
            "as in 3...5) or B alone (compared with its parent)"
        )
    a, b = found.groups()
    return (int(a) if a else None), int(b)


@router.get("/{spec}")
async def compare(
    owner: str, name: str, spec: Spec, backends: BackendsDep, user: UserDep
) -> dict[str, Any]:
    """Files added, removed and changed, and per check (matched by kind and name) what its kind
    says changed: new/resolved/unchanged violations, newly failing tests, ports, BOM lines."""
    a, b = parse_spec(spec)
    return await run_in_threadpool(comparisons.comparison, backends, user, owner, name, a, b)


@router.get("/{spec}/files/{path:path}")
async def file_diff(
    owner: str, name: str, spec: Spec, path: str, backends: BackendsDep, user: UserDep
) -> dict[str, Any]:
    """A unified diff of one file (`diff` is null for a binary file)."""
    a, b = parse_spec(spec)
    return await run_in_threadpool(comparisons.file_diff, backends, user, owner, name, a, b, path)


@router.get(
    "/{spec}/artifacts/{pair}/{file_name:path}",
    **download("*/*", "a picture of the difference (SVG, PNG)"),
)
async def artifact(
    owner: str,
    name: str,
    spec: Spec,
    pair: Annotated[str, Path(max_length=64)],
    file_name: Annotated[str, Path(max_length=300)],
    backends: BackendsDep,
    user: UserDep,
) -> Response:
    """A picture a kind made of the difference (e.g. the two renders of a board overlaid)."""
    a, b = parse_spec(spec)
    item = await run_in_threadpool(
        comparisons.comparison_artifact, backends, user, owner, name, a, b, pair, file_name
    )
    return await artifact_response(backends, item, "stream")
