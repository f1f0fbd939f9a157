"""A running job's log, readable before the job ends.

The worker copies the job's log file to the bucket as it grows (`LiveLog`, every second, only
the bytes added since the last copy), as segments named by their byte offset under the run's
`live-log/` prefix. The API reads any byte range of what has been copied (`read`). When the job
ends, its whole log is stored as the `log.txt` artifact, which begins with the same bytes (the
log file is only ever appended to), and the segments are removed.

The log file lies in a directory a sandboxed step may write to, so it is opened without
following a symlink, must be a regular file, and must stay the same file: once it is replaced,
nothing more is copied.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
from pathlib import Path

from hwrepo.adapters.objectstore import ObjectStore

log = logging.getLogger(__name__)

EVERY_S = 1.0
SEGMENT_BYTES = 4 * 1024**2
# Of a log larger than this, the rest is readable when the job has ended.
MAX_BYTES = 32 * 1024**2
MEDIA_TYPE = "text/plain; charset=utf-8"


def segment_key(prefix: str, offset: int) -> str:
    return f"{prefix}{offset:016d}"


class LiveLog:
    """Copies `path` to `prefix` in the bucket while the `with` block runs. `clear`: remove
    what an earlier attempt of the run left there first (a first attempt has nothing to
    remove). `wrote` says whether anything may have been stored (a put was tried)."""

    def __init__(
        self,
        store: ObjectStore,
        prefix: str,
        path: Path,
        *,
        every_s: float = EVERY_S,
        clear: bool = True,
    ) -> None:
        self.store, self.prefix, self.path, self.every_s = store, prefix, path, every_s
        self.clear = clear
        self.copied = 0
        self.wrote = False
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) of the log once seen
        self._stopped = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="live-log", daemon=True)

    def __enter__(self) -> LiveLog:
        if self.clear:
            remove(self.store, self.prefix)  # what an earlier attempt of the run left
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.copy()
            except Exception as exc:  # a copy that failed is tried again next time
                log.warning("live log %s: %s", self.prefix, exc)

    def copy(self) -> None:
        """Store what was added to the log since the last copy (up to MAX_BYTES in all)."""
        if self._stopped or self.copied >= MAX_BYTES:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return  # not written yet (or a link a step planted: never followed)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or (
                self._file is not None and self._file != (st.st_dev, st.st_ino)
            ):
                self._stopped = True
                log.warning("live log %s: the log file was replaced; copying stops", self.prefix)
                return
            self._file = (st.st_dev, st.st_ino)
            end = min(st.st_size, MAX_BYTES)
            while self.copied < end:
                data = os.pread(fd, min(SEGMENT_BYTES, end - self.copied), self.copied)
                if not data:
                    break
                self.wrote = True
                self.store.put_bytes(segment_key(self.prefix, self.copied), data, MEDIA_TYPE)
                self.copied += len(data)
        finally:
            os.close(fd)


def read(store: ObjectStore, prefix: str, offset: int, limit: int) -> tuple[bytes, int]:
    """Bytes [offset, offset + limit) of the log copied so far, and its size so far."""
    segments: list[tuple[int, str, int]] = []
    for key, size in store.list_sizes(prefix):
        name = key.removeprefix(prefix)
        if name.isdigit():
            segments.append((int(name), key, size))
    segments.sort()
    copied = 0
    for start, _, size in segments:  # contiguous from 0; a gap ends what is readable
        if start != copied:
            break
        copied = start + size
    parts: list[bytes] = []
    position, end = offset, min(offset + limit, copied)
    for start, key, size in segments:
        if position >= end:
            break
        if start + size <= position or start >= end:
            continue
        data = store.get_bytes(key)
        if data is None:  # the job ended meanwhile: its whole log is the artifact now
            break
        inside = position - start
        piece = data[inside : inside + end - position]
        parts.append(piece)
        position += len(piece)
    return b"".join(parts), copied


def remove(store: ObjectStore, prefix: str) -> None:
    for key, _ in store.list_sizes(prefix):
        with contextlib.suppress(Exception):
            store.delete(key)
