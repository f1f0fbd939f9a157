"""Answers read from the index, kept while the index is unchanged.

Every unit of work that writes bumps the index's generation in its own transaction
(`Database.writing`). A request reads the generation first, then its data; an answer is kept
under the generation read before it was computed and only given again for that same
generation. Data read after the generation is at least as new as it, so a kept answer is never
older than its generation: once anything is written, every process sees a new generation and
computes afresh. Nothing here expires by time."""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache

if TYPE_CHECKING:
    from hwrepo.service_layer.backends import Backends

MAX_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class _Entry:
    generation: int
    value: Any
    size: int


class ReadCache:
    """A least-recently-used map of answers, bounded by their total size."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self._entries: LRUCache[Hashable, _Entry] = LRUCache(
            maxsize=max(max_bytes, 0), getsizeof=lambda entry: entry.size
        )
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, generation: int) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.generation != generation:
                self.misses += 1
                return None
            self.hits += 1
            return entry.value

    def put(self, key: Hashable, generation: int, value: Any, size: int = 1) -> None:
        if max(size, 1) > self._entries.maxsize:
            return
        with self._lock:
            current = self._entries.get(key)
            if current is None or current.generation <= generation:
                self._entries[key] = _Entry(generation, value, max(size, 1))


def generation(backends: Backends) -> int:
    """The index's generation now: read it before the data an answer is kept for."""
    return backends.database.generation()
