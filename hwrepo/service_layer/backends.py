"""What the services work with: the object store, the metadata index and the outbox wake-up.

`Backends.from_settings` wires the real adapters; every entry point (API, CLI, relay) builds one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from hwrepo.adapters.db.database import Database
from hwrepo.adapters.db.index import Index
from hwrepo.adapters.objectstore import ObjectStore
from hwrepo.adapters.objectstore import from_settings as store_from_settings
from hwrepo.config import Settings, private_dir
from hwrepo.service_layer.readcache import ReadCache


@dataclass
class Backends:
    settings: Settings
    store: ObjectStore
    database: Database
    # Called after a transaction that wrote outbox events commits (wakes the relay early).
    event_listeners: list[Callable[[], None]] = field(default_factory=list)
    # Answers read from the index, kept while its generation is unchanged (readcache).
    read_cache: ReadCache = field(default_factory=ReadCache)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(cls, settings: Settings, *, migrate_schema: bool = True) -> Backends:
        private_dir(settings.data_dir)
        database = Database(settings.db_url)
        if migrate_schema:
            database.migrate()
        return cls(
            settings=settings,
            store=store_from_settings(settings),
            database=database,
            read_cache=ReadCache(max_bytes=int(settings.read_cache_mib * 1024 * 1024)),
        )

    @contextmanager
    def reading(self) -> Iterator[Index]:
        with self.database.reading() as index:
            yield index

    @contextmanager
    def writing(self) -> Iterator[Index]:
        """A unit of work: commits when the block ends normally, rolls back otherwise."""
        with self.database.writing() as index:
            yield index
        self.events_committed()

    def events_committed(self) -> None:
        for listener in list(self.event_listeners):
            listener()

    def ping_database(self) -> None:
        self.database.ping()

    def close(self) -> None:
        self.database.close()
