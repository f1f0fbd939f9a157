"""The metadata database as the services see it: an `Index` to read, or one that writes as a
unit of work. Connection failures become `ServiceUnavailable` naming the database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError

from hwrepo.adapters.db.engine import make_engine, migrate, session_factory
from hwrepo.adapters.db.index import Index
from hwrepo.domain.errors import ServiceUnavailable

DATABASE = "The metadata database"


class Database:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self.reader = session_factory(self.engine)
        self.writer = session_factory(self.engine, write=True)

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        migrate(self.engine)

    @contextmanager
    def reading(self) -> Iterator[Index]:
        with _database_errors(), self.reader() as session:
            yield Index(session)

    @contextmanager
    def writing(self) -> Iterator[Index]:
        """A unit of work: commits when the block ends normally, rolls back otherwise."""
        with _database_errors(), self.writer() as session, session.begin():
            yield Index(session)

    def ping(self) -> None:
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
