"""/api/v1/projects/{owner}/{name}/revisions: upload, list, read, download."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

import anyio.to_thread
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from hwrepo.domain.errors import Invalid, TooLarge
from hwrepo.entrypoints.api.deps import (
    UNTRUSTED_CONTENT,
    BackendsDep,
    KeptReadDep,
    Page,
    RevisionNumber,
    UserDep,
    download,
)
from hwrepo.entrypoints.api.schemas import (
    RevisionBrief,
    RevisionOut,
    RevisionPage,
)
from hwrepo.entrypoints.api.streaming import BlockingBody, MultipartReader, receivers
from hwrepo.metrics import BLOB_BYTES, REVISIONS
from hwrepo.service_layer import revisions

router = APIRouter(prefix="/api/v1/projects/{owner}/{name}/revisions", tags=["revisions"])

UPLOAD_DOC = """Create a revision from a multipart upload.

Fields: `files` (repeated; each part's filename is the file's relative path, e.g.
`-F "files=@top.v;filename=rtl/top.v"`), `archive` (repeated; .zip, .tar, .tar.gz),
`directory` (target directory for this upload's files and archives), `message`, and `base`
(a revision number whose files are carried over, the upload overlaying them).
Send `Idempotency-Key` to make a retry return the revision the first attempt created."""


# The body is documented here, not declared as form parameters: FastAPI would then parse the
# whole form before the handler runs, and the handler streams each part to disk itself.
_BINARY = {"type": "string", "format": "binary"}
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": _BINARY,
                            "description": "files; each part's filename is the file's path",
                        },
                        "archive": {
                            "type": "array",
                            "items": _BINARY,
                            "description": ".zip, .tar or .tar.gz archives, unpacked",
                        },
                        "directory": {
                            "type": "string",
                            "description": "the directory this upload's files go into",
                        },
                        "message": {"type": "string", "description": "what changed"},
                        "base": {
                            "type": "integer",
                            "minimum": 1,
                            "description": "a revision whose files are carried over",
                        },
                    },
                },
                "encoding": {
                    "files": {"contentType": "application/octet-stream"},
                    "archive": {"contentType": "application/octet-stream"},
                },
            }
        },
    }
}


FIELD_LIMIT = 1024 * 1024  # bytes of a form field (message, directory, base)
MAX_FIELDS = 100


def _most_body(max_total_size: int) -> int:
    """The most bytes an upload's body may hold: its files and the multipart framing."""
    return int(max_total_size * 1.05) + 2**20


@dataclass
class _Fields:
    message: str = ""
    base: int | None = None


def _receive(body: BlockingBody, content_type: str, upload: revisions.Upload) -> _Fields:
    """Stage the upload's files while its body arrives (in a worker thread); the form fields.
    When the body is refused part-way, the rest is read (up to the limit) before the answer,
    so that a client still sending reads the answer rather than a reset connection."""
    limits = upload.staging.limits
    fields = _Fields()
    try:
        reader = MultipartReader(body, content_type, max_fields=MAX_FIELDS)
        for part in reader.parts():
            if part.filename is None:
                if part.name == "message":
                    fields.message = part.text(FIELD_LIMIT)
                elif part.name == "directory":
                    upload.place_under(part.text(FIELD_LIMIT))
                elif part.name == "base":
                    fields.base = _int_field("base", part.text(FIELD_LIMIT))
            elif part.name == "files":
                if not part.filename:
                    raise Invalid("a 'files' part has no filename: the filename is the file's path")
                upload.add_file(part.filename, part)
            elif part.name == "archive":
                upload.add_archive(part.filename or "archive", part)
            else:
                raise Invalid(f"unknown file field {part.name!r}: use 'files' or 'archive'")
    except BaseException:
        with contextlib.suppress(Exception):
            body.drain(_most_body(limits.max_total_size))
        raise
    return fields


def _int_field(name: str, raw: str) -> int | None:
    if raw == "":
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise Invalid(f"field {name!r} must be a revision number, not {raw!r}") from exc


@router.post(
    "",
    status_code=201,
    response_model=RevisionOut,
    description=UPLOAD_DOC,
    openapi_extra=UPLOAD_BODY,
)
async def create_revision(
    owner: str,
    name: str,
    request: Request,
    response: Response,
    backends: BackendsDep,
    user: UserDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> RevisionOut:
    await run_in_threadpool(revisions.authorize_upload, backends, user, owner, name)
    limits = backends.settings.upload_limits
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > _most_body(limits.max_total_size):
        raise TooLarge(f"the upload is {int(length)} bytes; the limit is {limits.max_total_size}")
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise Invalid("send the revision as multipart/form-data ('files' and/or 'archive' parts)")
    workdir = Path(tempfile.mkdtemp(prefix="hwrepo-upload-"))
    body = BlockingBody(request.stream().__aiter__())

    def receive_and_create() -> revisions.UploadOutcome:
        upload = revisions.Upload(backends, workdir)
        try:
            fields = _receive(body, content_type, upload)
            return revisions.create_revision(
                backends,
                user,
                owner,
                name,
                upload,
                message=fields.message,
                idempotency_key=idempotency_key,
                base=fields.base,
            )
        finally:
            upload.close()

    try:
        outcome = await anyio.to_thread.run_sync(receive_and_create, limiter=receivers())
    finally:
        await run_in_threadpool(shutil.rmtree, workdir, True)
    body = RevisionOut.of(outcome.project, outcome.revision)
    body.created_now = outcome.created
    body.new_bytes = outcome.new_bytes
    response.headers["Location"] = body.url
    if outcome.created:
        REVISIONS.inc()
        BLOB_BYTES.inc(outcome.new_bytes)
    else:
        response.headers["Idempotent-Replayed"] = "true"
    return body


@router.get("", response_model=RevisionPage)
async def list_revisions(
    owner: str,
    name: str,
    backends: BackendsDep,
    user: UserDep,
    read: KeptReadDep,
    page: Page = 1,
    per_page: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    if (kept := await read.kept()) is not None:
        return kept
    project, items, total = await run_in_threadpool(
        revisions.list_revisions, backends, user, owner, name, page, per_page
    )
    page_out = RevisionPage(
        items=[
            RevisionBrief(
                id=s.revision.id,
                project=project.full_name,
                number=s.revision.number,
                parent=s.revision.parent,
                message=s.revision.message,
                author=s.revision.author,
                created=s.revision.created,
                file_count=s.files,
                total_size=s.total_size,
                url=f"/api/v1/projects/{project.full_name}/revisions/{s.revision.number}",
            )
            for s in items
        ],
        page=page,
        per_page=per_page,
        total=total,
    )
    return read.keep(page_out)


@router.get("/{number}", response_model=RevisionOut)
async def get_revision(
    owner: str,
    name: str,
    number: RevisionNumber,
    backends: BackendsDep,
    user: UserDep,
    read: KeptReadDep,
) -> Response:
    if (kept := await read.kept()) is not None:
        return kept
    project, revision = await run_in_threadpool(
        revisions.get_revision, backends, user, owner, name, number
    )
    return read.keep(RevisionOut.of(project, revision))


@router.get(
    "/{number}/files/{path:path}",
    **download("*/*", "the file, of its own media type", redirects=True, revalidates=True),
)
async def download_file(
    owner: str,
    name: str,
    number: RevisionNumber,
    path: str,
    request: Request,
    backends: BackendsDep,
    user: UserDep,
    via: Annotated[
        Literal["stream", "presigned"],
        Query(description="'presigned': redirect to a short-lived S3 URL instead of streaming"),
    ] = "stream",
) -> Response:
    entry = await run_in_threadpool(revisions.get_file, backends, user, owner, name, number, path)
    etag = f'"{entry.sha256}"'
    if via == "presigned":
        url = await run_in_threadpool(revisions.file_url, backends, entry, timedelta(minutes=15))
        return RedirectResponse(url, status_code=307)
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    chunks = await run_in_threadpool(revisions.file_chunks, backends, entry)
    filename = entry.path.rsplit("/", 1)[-1]
    return StreamingResponse(
        chunks,
        media_type=entry.media_type,
        headers={
            "Content-Length": str(entry.size),
            "ETag": etag,
            "Cache-Control": "private, max-age=31536000, immutable",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(filename)}",
            **UNTRUSTED_CONTENT,
        },
    )


@router.get("/{number}/archive.zip", **download("application/zip", "the revision's files"))
async def download_archive(
    owner: str, name: str, number: RevisionNumber, backends: BackendsDep, user: UserDep
) -> StreamingResponse:
    project, revision = await run_in_threadpool(
        revisions.get_revision, backends, user, owner, name, number
    )
    root = f"{project.name}-r{revision.number}"
    chunks = await run_in_threadpool(revisions.archive_chunks, backends, revision, root)
    return StreamingResponse(
        chunks,
        media_type="application/zip",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(root)}.zip"},
    )
