"""Request bodies read as they arrive, in a worker thread: the bytes of a blob, and the parts of
a multipart upload (python-multipart's parser, driven by the reader instead of by the event
loop), so an upload is hashed and staged while it is being received instead of after."""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import anyio
import anyio.from_thread
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from hwrepo.domain.errors import Invalid

# One trip to the event loop per read of this many bytes at most, not per chunk the server
# received (64 KiB): each trip wakes the loop and the reading thread.
READ_SIZE = 1024 * 1024
RECEIVERS = 64  # bodies read at once; more wait for a thread


_receivers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


def receivers() -> anyio.CapacityLimiter:
    """The worker threads that read request bodies as they arrive (one per event loop): a pool
    of their own, so that slow uploads (each holds a thread until its last byte) never take the
    threads every other request needs."""
    loop = asyncio.get_running_loop()
    limiter = _receivers.get(loop)
    if limiter is None:
        limiter = _receivers[loop] = anyio.CapacityLimiter(RECEIVERS)
    return limiter


class BlockingBody:
    """A request body as a blocking reader, for code in a worker thread."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self.chunks = chunks
        self.pending: deque[bytes] = deque()  # received, not yet read: joined once, when read
        self.size = 0
        self.done = False

    async def _fill(self, n: int) -> None:
        while not self.done and (n < 0 or self.size < n):
            try:
                chunk = await self.chunks.__anext__()
            except StopAsyncIteration:
                self.done = True
                break
            self.pending.append(chunk)
            self.size += len(chunk)

    def read(self, n: int = -1) -> bytes:
        if not self.done and (n < 0 or self.size < n):
            anyio.from_thread.run(self._fill, n)
        if n < 0 or n >= self.size:
            taken, self.pending, self.size = self.pending, deque(), 0
            return b"".join(taken)
        taken: list[bytes] = []
        got = 0
        while got < n:
            chunk = self.pending.popleft()
            if got + len(chunk) > n:  # split the last one: the rest stays first in line
                cut = n - got
                self.pending.appendleft(chunk[cut:])
                chunk = chunk[:cut]
            taken.append(chunk)
            got += len(chunk)
        self.size -= got
        return b"".join(taken)

    def drain(self, limit: int) -> None:
        """Read and drop what is left, up to `limit` bytes, so that a client still sending
        when an answer is ready reads that answer instead of a reset connection."""
        while limit > 0 and (chunk := self.read(min(READ_SIZE, limit))):
            limit -= len(chunk)


@dataclass
class Part:
    """One part of a multipart body. Its data is read with `read` while the body arrives; a part
    left unread is skipped when the next is asked for."""

    name: str
    filename: str | None  # None for a plain field
    _reader: MultipartReader
    _chunks: deque[bytes] = field(default_factory=deque)
    _ended: bool = False

    def read(self, n: int = -1) -> bytes:
        while not self._chunks and not self._ended:
            self._reader.pump()
        if not self._chunks:
            return b""
        chunk = self._chunks.popleft()
        if 0 <= n < len(chunk):
            self._chunks.appendleft(chunk[n:])
            chunk = chunk[:n]
        return chunk

    def text(self, limit: int) -> str:
        """The whole part as text (a form field), at most `limit` bytes."""
        data = bytearray()
        while chunk := self.read():
            data += chunk
            if len(data) > limit:
                raise Invalid(f"the field {self.name!r} is longer than {limit} bytes")
        return data.decode("utf-8", errors="replace")


class MultipartReader:
    """The parts of a multipart/form-data body, in order, read from `body` as they are asked for
    (at most one read of READ_SIZE bytes buffered beyond the part being read). Raises Invalid for
    a body that is not multipart/form-data as its Content-Type says, and for more than
    `max_fields` fields (files are counted where they are staged)."""

    def __init__(self, body: BlockingBody, content_type: str, *, max_fields: int) -> None:
        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise Invalid("the multipart/form-data Content-Type names no boundary")
        self.body = body
        self.max_fields = max_fields
        self.fields = 0
        self.ended = False
        self._ready: deque[Part] = deque()
        self._part: Part | None = None
        self._header_name = self._header_value = b""
        self._disposition = b""
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_end": self._on_end,
            },
        )

    def parts(self) -> Iterator[Part]:
        while True:
            while not self._ready and not self.ended:
                self.pump()
            if not self._ready:
                return
            part = self._ready.popleft()
            yield part
            while part.read(READ_SIZE):  # what the caller left unread
                pass

    def pump(self) -> None:
        """Feed the parser one more read of the body."""
        if self.ended:
            raise Invalid("the multipart body ended in the middle of a part")
        chunk = self.body.read(READ_SIZE)
        try:
            if chunk:
                self._parser.write(chunk)
            else:
                self._parser.finalize()
        except MultipartParseError as exc:
            raise Invalid(f"the multipart body is malformed: {exc}") from None
        if not chunk and not self.ended:
            self.ended = True
            raise Invalid("the multipart body ended before its closing boundary")

    # -- the parser's callbacks ----------------------------------------------------------------

    def _on_part_begin(self) -> None:
        self._disposition = b""

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise Invalid('a part\'s Content-Disposition names no field (name="…")')
        name = options[b"name"].decode("utf-8", errors="replace")
        filename = None
        if b"filename" in options:
            filename = options[b"filename"].decode("utf-8", errors="replace")
        else:
            self.fields += 1
            if self.fields > self.max_fields:
                raise Invalid(f"more than {self.max_fields} form fields in one upload")
        self._part = Part(name, filename, self)
        self._ready.append(self._part)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part is not None and end > start:
            self._part._chunks.append(data[start:end])

    def _on_part_end(self) -> None:
        if self._part is not None:
            self._part._ended = True
            self._part = None

    def _on_end(self) -> None:
        self.ended = True
