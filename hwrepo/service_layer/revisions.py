"""Revisions: immutable, numbered snapshots of a project's files, stored by content.

Creating one is ordered so that nothing is ever half-written:
  1. every file's bytes go to the bucket under their SHA-256 (already-stored content is skipped);
  2. in one database transaction: number the revision under the project's row lock, index it,
     queue `revision.created` in the outbox, and write its manifest to the bucket;
  3. commit. If the commit fails the manifest is removed again; orphan blobs are harmless.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from stat import S_IFREG
from typing import Any, BinaryIO

from stream_zip import ZIP_AUTO, stream_zip

from hwrepo.adapters.archives import ArchiveLimits, StagedFile, StagingArea
from hwrepo.adapters.objectstore import BlobMismatch, HeldPuts, at_once, blob_key, manifest_key
from hwrepo.config import UploadLimits
from hwrepo.domain import events
from hwrepo.domain.documents import manifest_document
from hwrepo.domain.errors import Conflict, Invalid, NotFound, TooLarge
from hwrepo.domain.media import media_type
from hwrepo.domain.model import (
    MAX_REVISION,
    FileEntry,
    Project,
    Revision,
    Role,
    User,
    utcnow,
)
from hwrepo.domain.paths import UnsafePath, normalise_dirpath, normalise_relpath
from hwrepo.metrics import BLOB_BYTES
from hwrepo.service_layer.backends import Backends
from hwrepo.service_layer.projects import require_role, visible_project


@dataclass(frozen=True)
class RevisionSummary:
    revision: Revision
    files: int
    total_size: int


@dataclass(frozen=True)
class UploadOutcome:
    project: Project
    revision: Revision
    created: bool  # False: an Idempotency-Key matched an earlier upload
    new_bytes: int  # bytes that were not in the bucket before


def _fingerprint(files: list[FileEntry], message: str, base: int | None) -> str:
    body = json.dumps(
        {"files": sorted((f.path, f.sha256) for f in files), "message": message, "base": base}
    )
    return hashlib.sha256(body.encode()).hexdigest()


def _replay(project: Project, existing: Revision, fingerprint: str, key: str) -> UploadOutcome:
    if existing.fingerprint != fingerprint:
        raise Conflict(
            f"Idempotency-Key {key!r} was already used for revision {existing.number} "
            "with different files or message; use a new key for a new upload"
        )
    return UploadOutcome(project, existing, created=False, new_bytes=0)


class Upload:
    """An upload being received: each file is staged (hashed, checked against the limits) as its
    bytes arrive, and the put of each big one starts as soon as it is staged, holding back its
    last bytes until `create_revision` accepts the upload (HeldPuts): a refused upload leaves no
    blob. The caller owns `directory` and removes it after `close`."""

    def __init__(self, backends: Backends, directory: Path) -> None:
        limits = ArchiveLimits(**backends.settings.upload_limits.model_dump())
        self.staging = StagingArea(directory, limits)
        self.held = HeldPuts(backends.store)
        self.directory = ""
        self._placed = False

    def add_file(self, name: str, stream: BinaryIO) -> None:
        staged = self.staging.add_file(name, stream, base=self.directory)
        self.held.start(staged.sha256, staged.local_path, staged.size, media_type(staged.path))

    def add_archive(self, filename: str, stream: BinaryIO) -> None:
        self.staging.add_archive(filename, stream, base=self.directory)

    def place_under(self, directory: str) -> None:
        """The directory every file of the upload goes into, those staged already included."""
        if self._placed:
            raise Invalid("the 'directory' field is given twice")
        self._placed = True
        self.directory = normalise_dirpath(directory.strip("/"))
        self.staging.move_under(self.directory)

    def close(self) -> None:
        """Abandon the puts that were not released, and wait for them."""
        self.held.abandon()


def create_revision(
    backends: Backends,
    actor: User | None,
    owner: str,
    name: str,
    staging: StagingArea | Upload,
    *,
    message: str = "",
    idempotency_key: str | None = None,
    base: int | None = None,
) -> UploadOutcome:
    """An upload: check it, put its new blobs, then number, index and announce the
    revision. `staging` is an Upload (its early puts released here) or a StagingArea."""
    held = None
    if isinstance(staging, Upload):
        staging, held = staging.staging, staging.held
    with backends.reading() as index:
        project = visible_project(index, actor, owner, name)
        author = require_role(project, actor, Role.MAINTAINER, "uploading a revision")
        inherited: list[FileEntry] = []
        if base is not None:
            base_revision = index.revision(project.id, base) if 1 <= base <= MAX_REVISION else None
            if base_revision is None:
                raise Invalid(f"base revision {base} does not exist in {project.full_name}")
            inherited = base_revision.files

    files = _merge(inherited, staging.files)
    if not files:
        raise Invalid("a revision needs at least one file: send 'files' or 'archive' fields")
    fingerprint = _fingerprint(files, message, base)
    if idempotency_key is not None:
        with backends.reading() as index:
            existing = index.revision_by_idempotency_key(project.id, idempotency_key)
        if existing is not None:
            return _replay(project, existing, fingerprint, idempotency_key)

    new_bytes = _put_blobs(backends, staging.files, held)
    return _commit(
        backends,
        project,
        author,
        files,
        new_bytes=new_bytes,
        message=message,
        idempotency_key=idempotency_key,
        base=base,
        fingerprint=fingerprint,
    )


def _put_blobs(backends: Backends, staged: list[StagedFile], held: HeldPuts | None) -> int:
    """Each staged content into the bucket (once) unless its blob is there; the bytes that
    were new. Puts `held` started finish now (those of contents replaced later in the upload are
    abandoned). The first failure is the upload's."""
    by_sha = {f.sha256: f for f in staged}
    released = held.release(set(by_sha)) if held is not None else {}
    unique = [f for sha, f in by_sha.items() if sha not in released]

    def put(f: StagedFile) -> int:
        new = backends.store.put_blob(f.sha256, f.local_path, f.size, media_type(f.path))
        return f.size if new else 0

    # several at once: one is read from disk and hashed for its signature while another is on
    # the wire
    return sum(released.values()) + sum(at_once(put, unique))


def _commit(
    backends: Backends,
    project: Project,
    author: User,
    files: list[FileEntry],
    *,
    new_bytes: int,
    message: str,
    idempotency_key: str | None,
    base: int | None,
    fingerprint: str,
) -> UploadOutcome:
    """Steps 2 and 3: number, index and announce the revision, its manifest in the bucket."""
    owner, name = project.owner, project.name
    manifest: str | None = None
    try:
        with backends.writing() as index:
            locked = index.project(owner, name, for_update=True)
            if locked is None or locked.id != project.id:
                raise NotFound(f"project {owner}/{name} was deleted during the upload")
            if idempotency_key is not None:
                existing = index.revision_by_idempotency_key(project.id, idempotency_key)
                if existing is not None:
                    return _replay(project, existing, fingerprint, idempotency_key)
            number = index.next_revision_number(project.id)
            revision = Revision(
                id=str(uuid.uuid4()),
                project_id=project.id,
                number=number,
                parent=base if base is not None else (number - 1 if number > 1 else None),
                message=message,
                author=author.name,
                created=utcnow(),
                files=files,
                idempotency_key=idempotency_key,
                fingerprint=fingerprint,
            )
            index.add_revision(revision)
            index.add_event(_created_event(locked, revision))
            manifest = manifest_key(project.id, number)
            backends.store.put_json(manifest, manifest_document(revision, locked))
    except BaseException:
        if manifest is not None:
            _forget_manifest(backends, manifest)
        raise
    return UploadOutcome(locked, revision, created=True, new_bytes=new_bytes)


# -- pushing only what the server lacks ---------------------------------------------------


@dataclass(frozen=True)
class FileRef:
    """A file of a revision to be, by content: the client has it, the bucket may have it."""

    path: str
    size: int
    sha256: str


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _checked_refs(files: list[FileRef], limits: UploadLimits) -> list[FileRef]:
    if len(files) > limits.max_entries:
        raise TooLarge(f"{len(files)} files; the limit is {limits.max_entries} per revision")
    total = 0
    seen: set[str] = set()
    checked = []
    for f in files:
        try:
            path = normalise_relpath(f.path)
        except UnsafePath as exc:
            raise Invalid(f"{f.path!r}: {exc.reason}") from None
        if path in seen:
            raise Invalid(f"{path!r} is listed twice")
        seen.add(path)
        if not _SHA256.match(f.sha256):
            raise Invalid(f"{path!r}: sha256 must be 64 lowercase hex digits")
        if f.size < 0 or f.size > limits.max_file_size:
            raise TooLarge(f"{path!r} is {f.size} bytes; the limit is {limits.max_file_size}")
        total += f.size
        checked.append(FileRef(path, f.size, f.sha256))
    if total > limits.max_total_size:
        raise TooLarge(f"the revision is {total} bytes; the limit is {limits.max_total_size}")
    return checked


def missing_blobs(
    backends: Backends, actor: User | None, owner: str, name: str, files: list[FileRef]
) -> list[str]:
    """Which of these files' contents the bucket lacks (by SHA-256): the client sends only
    those."""
    authorize_upload(backends, actor, owner, name)
    refs = _checked_refs(files, backends.settings.upload_limits)
    wanted = sorted({f.sha256 for f in refs})
    return [sha for sha in wanted if backends.store.blob_size(sha) is None]


def store_blob(
    backends: Backends,
    actor: User | None,
    owner: str,
    name: str,
    sha256: str,
    reader: BinaryIO,
    size: int,
) -> bool:
    """Store the bytes `reader` gives as the blob `sha256`, checked on their way to the bucket
    (a blob appears only when they are it). False when it was there already."""
    authorize_upload(backends, actor, owner, name)
    if not _SHA256.match(sha256):
        raise Invalid("a blob is named by its SHA-256: 64 lowercase hex digits")
    limit = backends.settings.upload_limits.max_file_size
    if size > limit:
        raise TooLarge(f"the blob is {size} bytes; the limit is {limit}")
    if backends.store.blob_size(sha256) is not None:
        return False
    try:
        backends.store.put_verified_blob(sha256, reader, size, "application/octet-stream")
    except BlobMismatch as exc:
        raise Invalid(f"not the blob {sha256}: {exc}") from None
    BLOB_BYTES.inc(size)
    return True


def commit_revision(
    backends: Backends,
    actor: User | None,
    owner: str,
    name: str,
    files: list[FileRef],
    *,
    message: str = "",
    idempotency_key: str | None = None,
    base: int | None = None,
) -> UploadOutcome:
    """A revision of files whose contents are in the bucket already (`missing_blobs`,
    `store_blob`), with the same rules as an upload: paths, limits, the base revision,
    Idempotency-Key. A blob that is missing, or not of the listed size, is refused."""
    with backends.reading() as index:
        project = visible_project(index, actor, owner, name)
        author = require_role(project, actor, Role.MAINTAINER, "uploading a revision")
        inherited: list[FileEntry] = []
        if base is not None:
            base_revision = index.revision(project.id, base)
            if base_revision is None:
                raise Invalid(f"base revision {base} does not exist in {project.full_name}")
            inherited = base_revision.files
    refs = _checked_refs(files, backends.settings.upload_limits)
    if not refs and not inherited:
        raise Invalid("a revision needs at least one file")
    by_path = {f.path: f for f in inherited}
    for ref in refs:
        by_path[ref.path] = FileEntry(ref.path, ref.size, ref.sha256, media_type(ref.path))
    _check_no_file_directory_clash(by_path)
    entries = [by_path[p] for p in sorted(by_path)]
    fingerprint = _fingerprint(entries, message, base)
    if idempotency_key is not None:
        # A retry of a commit that was made: its contents were checked then (and blobs are
        # never removed from under a revision), so it needs no look at the bucket.
        with backends.reading() as index:
            existing = index.revision_by_idempotency_key(project.id, idempotency_key)
        if existing is not None:
            return _replay(project, existing, fingerprint, idempotency_key)
    sizes = at_once(lambda ref: backends.store.blob_size(ref.sha256), refs)
    missing = [ref for ref, size in zip(refs, sizes, strict=True) if size != ref.size]
    if missing:
        paths = [ref.path for ref in missing]
        shown = ", ".join(paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
        raise Invalid(
            f"the contents of {shown} were not uploaded (send them first)",
            missing=sorted({ref.sha256 for ref in missing}),
            **_direct_uploads(backends, {ref.sha256: ref.size for ref in missing}),
        )
    return _commit(
        backends,
        project,
        author,
        entries,
        new_bytes=0,
        message=message,
        idempotency_key=idempotency_key,
        base=base,
        fingerprint=fingerprint,
    )


def _direct_uploads(backends: Backends, sizes: dict[str, int]) -> dict[str, Any]:
    """`uploads`: for each missing content, a PUT the client may send straight to the S3
    server (signed here for its SHA-256 and size, which the server checks), when the settings
    name an address clients reach it at and the server checks the checksum; else nothing (the
    client sends it through `PUT …/blobs/{sha256}`)."""
    base = backends.settings.s3_direct_url
    if base is None or not backends.store.checks_checksums():
        return {}
    signed = {sha: backends.store.signed_blob_put(base, sha, n) for sha, n in sizes.items()}
    return {"uploads": signed}


def _forget_manifest(backends: Backends, key: str) -> None:
    # Best effort: the store may be what failed; reindex would treat a lone manifest as stored.
    with contextlib.suppress(Exception):
        backends.store.delete(key)


def _merge(inherited: list[FileEntry], staged: list[StagedFile]) -> list[FileEntry]:
    by_path = {f.path: f for f in inherited}
    for s in staged:
        by_path[s.path] = FileEntry(s.path, s.size, s.sha256, media_type(s.path))
    _check_no_file_directory_clash(by_path)
    return [by_path[p] for p in sorted(by_path)]


def _check_no_file_directory_clash(by_path: dict[str, FileEntry]) -> None:
    for path in by_path:
        parts = path.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in by_path:
                raise Invalid(
                    f"{prefix!r} is both a file and a directory in this revision "
                    f"(because of {path!r})"
                )


def _created_event(project: Project, revision: Revision) -> events.Event:
    data = events.RevisionCreated(
        project_id=project.id,
        owner=project.owner,
        name=project.name,
        number=revision.number,
        revision_id=revision.id,
        parent=revision.parent,
        author=revision.author,
        message=revision.message,
        files=len(revision.files),
        total_size=revision.total_size,
        manifest=manifest_key(project.id, revision.number),
    )
    return events.make_event(
        data,
        id=events.event_id("revision.created", revision.id),
        project=project.full_name,
        project_id=project.id,
        revision=revision.number,
    )


# -- reading ------------------------------------------------------------------------------
def list_revisions(
    backends: Backends, actor: User | None, owner: str, name: str, page: int, per_page: int
) -> tuple[Project, list[RevisionSummary], int]:
    with backends.reading() as index:
        project = visible_project(index, actor, owner, name)
        rows, total = index.revisions(project.id, page=page, per_page=per_page)
    return project, [RevisionSummary(r, n, size) for r, n, size in rows], total


def get_revision(
    backends: Backends, actor: User | None, owner: str, name: str, number: int
) -> tuple[Project, Revision]:
    with backends.reading() as index:
        project = visible_project(index, actor, owner, name)
        # Beyond what the index can hold there is no revision (and nothing to ask it).
        revision = index.revision(project.id, number) if 1 <= number <= MAX_REVISION else None
    if revision is None:
        raise NotFound(f"{project.full_name} has no revision {number}")
    return project, revision


def get_file(
    backends: Backends, actor: User | None, owner: str, name: str, number: int, path: str
) -> FileEntry:
    project, revision = get_revision(backends, actor, owner, name, number)
    entry = revision.file(path)
    if entry is None:
        raise NotFound(f"revision {number} of {project.full_name} has no file {path!r}")
    return entry


def file_chunks(backends: Backends, entry: FileEntry) -> Iterator[bytes]:
    return backends.store.stream_blob(entry.sha256)


def file_url(backends: Backends, entry: FileEntry, expires: timedelta) -> str:
    return backends.store.presigned_url(
        blob_key(entry.sha256), entry.path.rsplit("/", 1)[-1], expires
    )


def archive_chunks(backends: Backends, revision: Revision, root: str) -> Iterator[bytes]:
    """The revision as a zip, streamed: each blob is read from the bucket as it is written."""
    backends.store.ping()  # fail with 503 before the response starts, not halfway through

    def members() -> Iterator[tuple[str, object, int, object, Iterator[bytes]]]:
        for entry in revision.files:
            yield (
                f"{root}/{entry.path}",
                revision.created,
                S_IFREG | 0o644,
                ZIP_AUTO(entry.size),
                backends.store.stream_blob(entry.sha256),
            )

    return iter(stream_zip(members()))  # type: ignore[arg-type]


def authorize_upload(backends: Backends, actor: User | None, owner: str, name: str) -> Project:
    """Checked before the request body is read, so nobody streams a gigabyte only to be told no."""
    with backends.reading() as index:
        project = visible_project(index, actor, owner, name)
    require_role(project, actor, Role.MAINTAINER, "uploading a revision")
    return project
