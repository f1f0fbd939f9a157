"""Staging of uploaded files and archives (.zip, .tar, .tar.gz) in a temporary directory.

Everything an upload adds goes through StagingArea, which copies bytes in 1 MiB chunks while
hashing them and counts the bytes actually produced against ArchiveLimits: declared sizes in
archive headers are only used to reject early, never trusted to stop a copy. Archives are
rejected as a whole for unsafe member names (invisible Unicode formatting characters such as a
right-to-left override included), links, device files, FIFOs, encryption, corruption, two zip
members naming the same file, bytes after the end of a tar, and anything over a limit; a
rejected add leaves the staging area as it was.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import lzma
import os
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, Final, cast

from hwrepo.domain.paths import UnsafePath, normalise_dirpath, normalise_relpath

CHUNK_SIZE: Final = 1024 * 1024
ACCEPTED_FORMATS: Final = "zip (.zip), tar (.tar) and gzip-compressed tar (.tar.gz, .tgz)"

_ZIP_MAGIC: Final = (b"PK\x03\x04", b"PK\x05\x06")
_GZIP_MAGIC: Final = b"\x1f\x8b"
_TAR_BLOCK: Final = tarfile.BLOCKSIZE
_ZIP_ENCRYPTED: Final = 0x1
_ZIP_STRONG_ENCRYPTION: Final = 0x40
# Errors that reading a damaged archive raises (bz2 raises a bare OSError for bad data). Only
# calls that read the staged archive copy are guarded with these, never writes.
_CORRUPT: Final = (
    zipfile.BadZipFile,
    tarfile.TarError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    NotImplementedError,
    OSError,
)


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int = 20_000  # files in one upload request, all archives and plain files together
    max_file_size: int = 2 * 1024**3  # one file, uncompressed
    max_total_size: int = 8 * 1024**3  # all files of one upload, uncompressed
    max_ratio: float = 200.0  # uncompressed bytes / compressed archive bytes, per archive


class ArchiveRejected(ValueError):
    """Raised for anything unsafe or over a limit. .entry: the offending member name as written
    in the archive (or the archive's own file name when the archive as a whole is the problem);
    .archive: the archive file name, None for a plain file given to add_file; .reason: a
    sentence a person understands, naming the limit when one was hit."""

    def __init__(self, entry: str, archive: str | None, reason: str) -> None:
        if archive is None:
            message = f"file {entry!r} rejected: {reason}"
        elif entry == archive:
            message = f"archive {archive!r} rejected: {reason}"
        else:
            message = f"archive {archive!r} rejected at {entry!r}: {reason}"
        super().__init__(message)
        self.entry = entry
        self.archive = archive
        self.reason = reason

    def __reduce__(self) -> tuple[type[ArchiveRejected], tuple[str, str | None, str]]:
        return (type(self), (self.entry, self.archive, self.reason))


@dataclass
class StagedFile:
    path: str  # normalised relative path (from normalise_relpath, joined under the target dir)
    size: int
    sha256: str  # hex
    local_path: Path  # a temporary file holding the bytes, inside the staging dir


@dataclass
class _State:
    """What the staging area holds; copied for an archive so a rejection can discard it."""

    files: dict[str, StagedFile] = field(default_factory=dict)
    dirs: dict[str, int] = field(default_factory=dict)  # directory -> staged files beneath it
    entries: int = 0  # file entries submitted, replaced ones included
    submitted: int = 0  # bytes submitted, replaced files included

    def copy(self) -> _State:
        return _State(dict(self.files), dict(self.dirs), self.entries, self.submitted)

    def check_placeable(self, path: str) -> None:
        """Raise UnsafePath when `path` would be both a file and a directory."""
        if path in self.dirs:
            raise UnsafePath(path, "a directory of that name already holds files in this upload")
        for parent in _parents(path):
            if parent in self.files:
                raise UnsafePath(path, f"{parent!r} is already a file in this upload")

    def put(self, staged: StagedFile) -> StagedFile | None:
        """Add `staged` at the end, replacing (and returning) a file at the same path."""
        replaced = self.files.pop(staged.path, None)
        if replaced is None:
            for parent in _parents(staged.path):
                self.dirs[parent] = self.dirs.get(parent, 0) + 1
        self.files[staged.path] = staged
        return replaced


def _parents(path: str) -> Iterator[str]:
    index = path.find("/")
    while index != -1:
        yield path[:index]
        index = path.find("/", index + 1)


@dataclass
class _Ratio:
    """Bytes an archive has produced so far against max_ratio times its compressed size."""

    archive: str
    compressed: int
    max_ratio: float
    produced: int = 0

    @property
    def allowed(self) -> int:
        return int(self.max_ratio * self.compressed)

    def consume(self, count: int, where: str) -> None:
        """Count `count` more bytes produced; `where` says where, for the message."""
        self.produced += count
        if self.produced > self.allowed:
            raise self.reject(where)

    def reject(self, how: str) -> ArchiveRejected:
        return ArchiveRejected(
            self.archive,
            self.archive,
            f"it expands to more than {self.max_ratio:g} times its compressed size of"
            f" {_size(self.compressed)} (max_ratio; {how}); this looks like a compression bomb",
        )


class _BlockRecorder:
    """A read/seek/tell view of a stream that remembers the last block tarfile read, so the
    reason iteration stopped (end-of-archive marker, truncation, garbage) can be told apart."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self.last_read = b""

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self.last_read = data
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()


class StagingArea:
    """Collects files for one upload in a temporary directory (given, must exist), enforcing
    ArchiveLimits across everything added, computing SHA-256 and size while copying in 1 MiB
    chunks (never reading a whole file into memory). Later additions of the same path replace
    earlier ones (last wins; the replacement moves to the end of .files and the earlier
    temporary file is deleted), also within a tar; within a zip, two members naming the same
    file reject the archive.

    max_entries and max_total_size count everything submitted to this area, replaced files
    included. A path may not be both a file and a directory within one upload. The caller owns
    `directory` and removes it (with the staged files) when done.
    """

    def __init__(self, directory: Path, limits: ArchiveLimits) -> None:
        self._directory = Path(directory)
        self._limits = limits
        self._state = _State()

    @property
    def limits(self) -> ArchiveLimits:
        return self._limits

    @property
    def files(self) -> list[StagedFile]:
        return list(self._state.files.values())

    @property
    def total_size(self) -> int:
        """Bytes of the files now staged (after last-wins replacement)."""
        return sum(staged.size for staged in self._state.files.values())

    def add_file(self, name: str, stream: BinaryIO, *, base: str = "") -> StagedFile:
        """Stage one plain file. Raises UnsafePath for a bad `name` or `base` (or a file/directory
        clash) and ArchiveRejected (with .archive None) for a limit."""
        path = normalise_relpath(name, base=normalise_dirpath(base))
        created: set[Path] = set()
        try:
            staged = self._stage(
                self._state, created, path, read=stream.read, entry=name, archive=None, ratio=None
            )
        except BaseException:
            _remove(created)
            raise
        replaced = self._state.put(staged)
        if replaced is not None:
            _remove([replaced.local_path])
        return staged

    def move_under(self, directory: str) -> None:
        """Put every file staged so far under `directory`, as if each had been added with it as
        `base` (UnsafePath when a joined path is not allowed)."""
        base = normalise_dirpath(directory)
        if not base:
            return
        state = _State(entries=self._state.entries, submitted=self._state.submitted)
        for staged in self._state.files.values():
            moved = replace(staged, path=normalise_relpath(staged.path, base=base))
            state.check_placeable(moved.path)
            state.put(moved)
        self._state = state

    def add_archive(self, filename: str, stream: BinaryIO, *, base: str = "") -> list[StagedFile]:
        """Stage every file of a .zip, .tar, .tar.gz or .tgz archive under `base`; return them in
        order (after last-wins within a tar). The format is detected from the content, not
        the name. Raises UnsafePath for a bad `base` and ArchiveRejected for anything else; then
        nothing of this archive stays staged."""
        base = normalise_dirpath(base)
        state = self._state.copy()
        created: set[Path] = set()
        copy = self._new_temp("archive-")
        try:
            compressed = self._copy_archive(filename, stream, copy)
            ratio = _Ratio(filename, compressed, self._limits.max_ratio)
            with copy.open("rb") as raw:
                kind = _detect(filename, raw)
                raw.seek(0)
                if kind == "zip":
                    added = self._add_zip(state, created, filename, raw, base, ratio)
                else:
                    added = self._add_tar(state, created, filename, raw, kind, base, ratio)
        except BaseException:
            _remove(created)
            raise
        finally:
            _remove([copy])
        for old in self._state.files.values():
            if state.files.get(old.path) is not old:
                _remove([old.local_path])
        self._state = state
        return added

    # -- archives ------------------------------------------------------------------------------

    def _copy_archive(self, filename: str, stream: BinaryIO, target: Path) -> int:
        limit = self._limits.max_total_size
        size = 0
        with target.open("wb") as out:
            while chunk := stream.read(min(CHUNK_SIZE, limit - size + 1)):
                size += len(chunk)
                if size > limit:
                    raise ArchiveRejected(
                        filename,
                        filename,
                        f"the archive itself is larger than {_size(limit)}, the limit for all"
                        " files of one upload (max_total_size)",
                    )
                out.write(chunk)
        return size

    def _add_zip(
        self,
        state: _State,
        created: set[Path],
        filename: str,
        raw: BinaryIO,
        base: str,
        ratio: _Ratio,
    ) -> list[StagedFile]:
        limits = self._limits
        with _reading(filename, filename, "it is not a readable zip archive"):
            archive = zipfile.ZipFile(raw)
        with archive:
            plan: list[tuple[zipfile.ZipInfo, str]] = []
            named: dict[str, str] = {}  # path -> the member name that gave it
            declared_total = state.submitted
            for info in archive.infolist():
                name = info.orig_filename
                kind = stat.S_IFMT(info.external_attr >> 16)
                if name.endswith("/") or kind == stat.S_IFDIR:
                    _check_directory(name, base, filename)
                    continue
                _check_type(kind, name, filename)
                if info.flag_bits & (_ZIP_ENCRYPTED | _ZIP_STRONG_ENCRYPTION):
                    raise ArchiveRejected(name, filename, "encrypted zip members are not accepted")
                path = _member_path(name, base, filename)
                if path in named:
                    # Which of two members a tool extracts differs from tool to tool: the
                    # archive means two things at once, so it means nothing.
                    raise ArchiveRejected(name, filename, _duplicate(name, named[path]))
                named[path] = name
                if state.entries + len(plan) >= limits.max_entries:
                    raise _too_many(name, filename, limits)
                if info.file_size > limits.max_file_size:
                    raise _too_large(name, filename, limits, declared=info.file_size)
                declared_total += info.file_size
                if declared_total > limits.max_total_size:
                    raise _over_total(name, filename, limits)
                plan.append((info, path))
            if sum(info.file_size for info, _ in plan) > ratio.allowed:
                raise ratio.reject("by the sizes its headers declare")

            added: dict[str, StagedFile] = {}
            for info, path in plan:
                name = info.orig_filename
                with _reading(name, filename):
                    member = archive.open(info)
                with member:
                    staged = self._stage(
                        state,
                        created,
                        path,
                        read=_guarded(member.read, name, filename),
                        entry=name,
                        archive=filename,
                        ratio=ratio,
                    )
                if staged.size != info.file_size:
                    raise ArchiveRejected(
                        name,
                        filename,
                        f"the archive is corrupt: the header declares {info.file_size} bytes"
                        f" but the data holds {staged.size}",
                    )
                self._commit_in(state, created, staged, added)
        return list(added.values())

    def _add_tar(
        self,
        state: _State,
        created: set[Path],
        filename: str,
        raw: BinaryIO,
        kind: str,
        base: str,
        ratio: _Ratio,
    ) -> list[StagedFile]:
        with contextlib.ExitStack() as stack:
            source: BinaryIO = raw
            if kind == "tar.gz":
                # GzipFile, unlike tarfile's own stream mode, checks the CRC and the length
                source = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
            recorder = _BlockRecorder(source)
            with _reading(filename, filename, "it is not a readable tar archive"):
                archive = stack.enter_context(
                    tarfile.open(
                        fileobj=cast(BinaryIO, recorder),
                        mode="r:",
                        encoding="utf-8",
                        errors="surrogateescape",
                    )
                )
            added = self._add_tar_members(state, created, filename, archive, recorder, base, ratio)
            _check_trailer(recorder, filename, ratio)
            return added

    def _add_tar_members(
        self,
        state: _State,
        created: set[Path],
        filename: str,
        archive: tarfile.TarFile,
        recorder: _BlockRecorder,
        base: str,
        ratio: _Ratio,
    ) -> list[StagedFile]:
        limits = self._limits
        added: dict[str, StagedFile] = {}
        while True:
            with _reading(filename, filename):
                member = archive.next()
            if member is None:
                break
            archive.members.clear()  # iteration only; keep memory flat
            name = member.name
            if member.isdir():
                _check_directory(name, base, filename)
                continue
            if member.issym():
                raise ArchiveRejected(name, filename, "symbolic links are not accepted")
            if member.islnk():
                raise ArchiveRejected(name, filename, "hard links are not accepted")
            if member.ischr() or member.isblk():
                raise ArchiveRejected(name, filename, "device files are not accepted")
            if member.isfifo():
                raise ArchiveRejected(name, filename, "FIFOs (named pipes) are not accepted")
            if not member.isreg():
                raise ArchiveRejected(
                    name,
                    filename,
                    f"entries of tar type {member.type.decode('latin-1')!r} are not accepted",
                )
            path = _member_path(name, base, filename)
            if member.size > limits.max_file_size:
                raise _too_large(name, filename, limits, declared=member.size)
            with _reading(name, filename):
                data = archive.extractfile(member)
            if data is None:  # pragma: no cover - regular members always have data
                raise ArchiveRejected(name, filename, "the entry holds no data")
            with data:
                staged = self._stage(
                    state,
                    created,
                    path,
                    read=_guarded(data.read, name, filename),
                    entry=name,
                    archive=filename,
                    ratio=ratio,
                )
            self._commit_in(state, created, staged, added)
        last = recorder.last_read
        if len(last) != _TAR_BLOCK or last.count(0) != _TAR_BLOCK:
            problem = "it is truncated" if len(last) < _TAR_BLOCK else "it holds an invalid header"
            raise ArchiveRejected(
                filename,
                filename,
                "the archive is corrupt: where the next entry or the end-of-archive marker should"
                f" be, {problem}",
            )
        return list(added.values())

    def _commit_in(
        self,
        state: _State,
        created: set[Path],
        staged: StagedFile,
        added: dict[str, StagedFile],
    ) -> None:
        replaced = state.put(staged)
        added.pop(staged.path, None)
        added[staged.path] = staged
        if replaced is not None and replaced.local_path in created:
            created.discard(replaced.local_path)
            _remove([replaced.local_path])
        # a replaced file of an earlier add stays until the archive is accepted

    # -- copying -------------------------------------------------------------------------------

    def _stage(
        self,
        state: _State,
        created: set[Path],
        path: str,
        *,
        read: Callable[[int], bytes],
        entry: str,
        archive: str | None,
        ratio: _Ratio | None,
    ) -> StagedFile:
        """Copy one file into a new temporary file, enforcing every limit on the bytes read, and
        count it in `state` (only once the copy succeeded); the caller puts the result in."""
        limits = self._limits
        if state.entries >= limits.max_entries:
            raise _too_many(entry, archive, limits)
        if archive is None:
            state.check_placeable(path)
        else:
            try:
                state.check_placeable(path)
            except UnsafePath as exc:
                raise ArchiveRejected(entry, archive, exc.reason) from exc
        target = self._new_temp("staged-")
        created.add(target)
        digest = hashlib.sha256()
        size = 0
        with target.open("wb") as out:
            while True:
                allowance = min(
                    limits.max_file_size - size,
                    limits.max_total_size - state.submitted - size,
                    ratio.allowed - ratio.produced if ratio is not None else CHUNK_SIZE,
                )
                chunk = read(min(CHUNK_SIZE, max(allowance, 0) + 1))
                if not chunk:
                    break
                size += len(chunk)
                if size > limits.max_file_size:
                    raise _too_large(entry, archive, limits)
                if state.submitted + size > limits.max_total_size:
                    raise _over_total(entry, archive, limits)
                if ratio is not None:
                    ratio.consume(len(chunk), f"reached while extracting {entry!r}")
                digest.update(chunk)
                out.write(chunk)
        state.entries += 1
        state.submitted += size
        return StagedFile(path=path, size=size, sha256=digest.hexdigest(), local_path=target)

    def _new_temp(self, prefix: str) -> Path:
        handle, name = tempfile.mkstemp(prefix=prefix, dir=self._directory)
        os.close(handle)
        return Path(name)


# -- helpers -----------------------------------------------------------------------------------


def _detect(filename: str, raw: BinaryIO) -> str:
    """Return "zip", "tar" or "tar.gz" from the first bytes; reject anything else."""
    head = raw.read(_TAR_BLOCK)
    if head[:4] in _ZIP_MAGIC:
        return "zip"
    if head[:2] == _GZIP_MAGIC:
        raw.seek(0)
        with (
            _reading(filename, filename, "its gzip compression is damaged"),
            gzip.GzipFile(fileobj=raw, mode="rb") as unpacked,
        ):
            inner = unpacked.read(_TAR_BLOCK)
        if _is_tar_header(inner):
            return "tar.gz"
        raise ArchiveRejected(
            filename,
            filename,
            f"it is gzip-compressed but holds no tar archive; accepted formats: {ACCEPTED_FORMATS}",
        )
    if _is_tar_header(head):
        return "tar"
    raise ArchiveRejected(
        filename, filename, f"it is not a supported archive; accepted formats: {ACCEPTED_FORMATS}"
    )


def _check_trailer(stream: _BlockRecorder, archive: str, ratio: _Ratio) -> None:
    """Read what follows a tar's end-of-archive marker to its end (for a .tar.gz, so that the
    gzip CRC and length get checked): only the zero padding that ends a tar may follow; bytes
    that are not zero belong to no entry, and the archive is refused saying so. The padding of
    one 10 KiB record is free; beyond it, padding counts against max_ratio."""
    free = tarfile.RECORDSIZE
    offset = stream.tell()
    while True:
        with _reading(archive, archive):
            chunk = stream.read(min(CHUNK_SIZE, free + ratio.allowed - ratio.produced + 1))
        if not chunk:
            return
        if chunk.count(0) != len(chunk):
            at = offset + next(i for i, byte in enumerate(chunk) if byte)
            raise ArchiveRejected(
                archive,
                archive,
                f"it holds data after its end-of-archive marker (from byte {at} of the tar"
                " stream on), which belongs to no entry; only zero padding may follow the end",
            )
        offset += len(chunk)
        uncounted = min(free, len(chunk))
        free -= uncounted
        if len(chunk) > uncounted:
            ratio.consume(len(chunk) - uncounted, "reached after the end-of-archive marker")


def _is_tar_header(block: bytes) -> bool:
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.EOFHeaderError:  # an all-zero block: an empty tar archive
        return True
    except tarfile.HeaderError:
        return False
    return True


@contextlib.contextmanager
def _reading(entry: str, archive: str, what: str = "") -> Iterator[None]:
    """Turn an error from reading the archive into ArchiveRejected naming `entry`."""
    try:
        yield
    except _CORRUPT as exc:
        prefix = what or "the archive is corrupt or truncated"
        raise ArchiveRejected(entry, archive, f"{prefix} ({_describe(exc)})") from exc


def _guarded(read: Callable[[int], bytes], entry: str, archive: str) -> Callable[[int], bytes]:
    def guarded(size: int) -> bytes:
        with _reading(entry, archive):
            return read(size)

    return guarded


def _describe(exc: BaseException) -> str:
    kind = type(exc)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    text = str(exc)
    return f"{name}: {text}" if text else name


def _member_path(name: str, base: str, archive: str) -> str:
    try:
        return normalise_relpath(name, base=base)
    except UnsafePath as exc:
        raise ArchiveRejected(name, archive, f"unsafe path: {exc.reason}") from exc


def _duplicate(name: str, first: str) -> str:
    if name == first:
        return "the archive holds two members of this name; each member's name must be unique"
    return (
        f"it names the same file as the earlier member {first!r}; each member's name must be unique"
    )


def _check_directory(name: str, base: str, archive: str) -> None:
    """Directory entries create nothing, but a hostile name still rejects the archive."""
    try:
        normalise_dirpath(name, base=base)
    except UnsafePath as exc:
        raise ArchiveRejected(name, archive, f"unsafe path: {exc.reason}") from exc


def _check_type(kind: int, name: str, archive: str) -> None:
    """Reject zip entries whose Unix mode (external_attr) marks anything but a regular file."""
    if kind in (0, stat.S_IFREG):
        return
    what = {
        stat.S_IFLNK: "symbolic links are not accepted",
        stat.S_IFCHR: "device files are not accepted",
        stat.S_IFBLK: "device files are not accepted",
        stat.S_IFIFO: "FIFOs (named pipes) are not accepted",
        stat.S_IFSOCK: "sockets are not accepted",
    }.get(kind, f"entries of Unix file type {kind:#o} are not accepted")
    raise ArchiveRejected(name, archive, what)


def _too_many(entry: str, archive: str | None, limits: ArchiveLimits) -> ArchiveRejected:
    return ArchiveRejected(
        entry, archive, f"the upload has more than {limits.max_entries} files (max_entries)"
    )


def _too_large(
    entry: str, archive: str | None, limits: ArchiveLimits, *, declared: int | None = None
) -> ArchiveRejected:
    limit = _size(limits.max_file_size)
    what = f"declares {_size(declared)}, more than" if declared is not None else "is larger than"
    return ArchiveRejected(
        entry, archive, f"the file {what} {limit}, the limit for one file (max_file_size)"
    )


def _over_total(entry: str, archive: str | None, limits: ArchiveLimits) -> ArchiveRejected:
    return ArchiveRejected(
        entry,
        archive,
        f"the upload's files add up to more than {_size(limits.max_total_size)}, the limit for"
        " all files of one upload (max_total_size)",
    )


def _size(count: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= factor and count % factor == 0:
            return f"{count // factor} {unit}"
    return f"{count} bytes" if count != 1 else "1 byte"


def _remove(paths: Iterable[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
