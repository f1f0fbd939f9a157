"""What the services work with: the object store, the metadata index and the outbox wake-up.

`Backends.from_settings` wires the real adapters; every entry point (API, CLI, relay) builds one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from hwrepo.adapters.db.engine import make_engine, migrate, session_factory
from hwrepo.adapters.db.index import Index
from hwrepo.adapters.objectstore import ObjectStore
from hwrepo.adapters.objectstore import from_settings as store_from_settings
from hwrepo.config import Settings
from hwrepo.domain.errors import ServiceUnavailable

DATABASE = "The metadata database"


@dataclass
class Backends:
    settings: Settings
    store: ObjectStore
    engine: Engine
    reader: sessionmaker[Session]
    writer: sessionmaker[Session]
    # Called after a transaction that wrote outbox events commits (wakes the relay early).
    event_listeners: list[Callable[[], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(cls, settings: Settings, *, migrate_schema: bool = True) -> Backends:
        engine = make_engine(settings.db_url)
        if migrate_schema:
            if settings.embedded_db:
                settings.data_dir.mkdir(parents=True, exist_ok=True)
            migrate(engine)
        return cls(
            settings=settings,
            store=store_from_settings(settings),
            engine=engine,
            reader=session_factory(engine),
            writer=session_factory(engine, write=True),
        )

    @contextmanager
    def reading(self) -> Iterator[Index]:
        with _database_errors(), self.reader() as session:
            yield Index(session)

    @contextmanager
    def writing(self) -> Iterator[Index]:
        """A unit of work: commits when the block ends normally, rolls back otherwise."""
        with _database_errors(), self.writer() as session, session.begin():
            index = Index(session)
            yield index
        self.events_committed()

    def events_committed(self) -> None:
        for listener in list(self.event_listeners):
            listener()

    def ping_database(self) -> None:
        with _database_errors(), self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def close(self) -> None:
        self.engine.dispose()


@contextmanager
def _database_errors() -> Iterator[None]:
    try:
        yield
    except OperationalError as exc:
        raise ServiceUnavailable(DATABASE, str(exc.orig).splitlines()[0]) from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise ServiceUnavailable(DATABASE, "the connection was lost") from exc
        raise
