"""Pushing only what the server lacks: ask which contents are missing, send those, commit.

    POST /api/v1/projects/{owner}/{name}/blobs/missing    {"files": [{path, size, sha256}]}
    PUT  /api/v1/projects/{owner}/{name}/blobs/{sha256}   the bytes (Content-Length)
    POST /api/v1/projects/{owner}/{name}/revisions/commit {"files": [...], "message", "base"}

A blob's bytes stream through to the bucket, hashed on the way; a blob appears only when they
are what its name says.
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Header, Path, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from hwrepo.domain.errors import Invalid
from hwrepo.entrypoints.api.deps import BackendsDep, UserDep
from hwrepo.entrypoints.api.schemas import RevisionOut
from hwrepo.entrypoints.api.streaming import BlockingBody, receivers
from hwrepo.metrics import REVISIONS
from hwrepo.service_layer import revisions
from hwrepo.service_layer.revisions import FileRef

router = APIRouter(prefix="/api/v1/projects/{owner}/{name}", tags=["revisions"])
Sha256 = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="the content's SHA-256")]


class FileRefIn(BaseModel):
    path: Annotated[str, Field(min_length=1, max_length=4096)]
    size: Annotated[int, Field(ge=0, le=2**53)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class FilesIn(BaseModel):
    files: Annotated[list[FileRefIn], Field(max_length=1_000_000)]


class MissingOut(BaseModel):
    missing: list[str] = Field(description="SHA-256 of each content the bucket lacks")


class CommitIn(FilesIn):
    message: Annotated[str, Field(max_length=100_000)] = ""
    base: Annotated[int | None, Field(ge=1, le=2**31 - 1)] = None


def _refs(body: FilesIn) -> list[FileRef]:
    return [FileRef(f.path, f.size, f.sha256) for f in body.files]


@router.post("/blobs/missing", response_model=MissingOut)
async def missing_blobs(
    owner: str, name: str, body: FilesIn, backends: BackendsDep, user: UserDep
) -> MissingOut:
    found = await run_in_threadpool(
        revisions.missing_blobs, backends, user, owner, name, _refs(body)
    )
    return MissingOut(missing=found)


@router.put(
    "/blobs/{sha256}",
    status_code=201,
    responses={
        201: {"description": "stored: the bytes were the blob"},
        200: {"description": "the bucket had the blob already"},
    },
)
async def put_blob(
    owner: str,
    name: str,
    sha256: Sha256,
    request: Request,
    backends: BackendsDep,
    user: UserDep,
) -> Response:
    # Read from the request, not declared as a parameter: Content-Length is the HTTP client's
    # to set, and a document naming it invites clients (and fuzzers) to send one that lies.
    raw = request.headers.get("content-length", "")
    if not raw.isdigit() or int(raw) > 2**53:
        raise Invalid("send a blob with its Content-Length")
    content_length = int(raw)
    await run_in_threadpool(revisions.authorize_upload, backends, user, owner, name)
    body = BlockingBody(request.stream().__aiter__())
    new = await anyio.to_thread.run_sync(
        lambda: revisions.store_blob(backends, user, owner, name, sha256, body, content_length),
        limiter=receivers(),
    )
    return Response(status_code=201 if new else 200)


@router.post("/revisions/commit", status_code=201, response_model=RevisionOut)
async def commit_revision(
    owner: str,
    name: str,
    body: CommitIn,
    backends: BackendsDep,
    user: UserDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> RevisionOut:
    """A revision of files whose contents were sent before (or were there already)."""
    outcome = await run_in_threadpool(
        lambda: revisions.commit_revision(
            backends,
            user,
            owner,
            name,
            _refs(body),
            message=body.message,
            idempotency_key=idempotency_key,
            base=body.base,
        )
    )
    out = RevisionOut.of(outcome.project, outcome.revision)
    out.created_now = outcome.created
    out.new_bytes = outcome.new_bytes
    response.headers["Location"] = out.url
    if outcome.created:
        REVISIONS.inc()
    else:
        response.headers["Idempotent-Replayed"] = "true"
    return out
