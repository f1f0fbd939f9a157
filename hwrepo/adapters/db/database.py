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
GENERATION_SQL = "SELECT generation FROM index_state WHERE id = 1"


class Database:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        # A database in a local file (SQLite): a one-row read takes microseconds, so a request
        # may make it without handing it to a thread; a server's takes a network round trip.
        self.local = url.startswith("sqlite")
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
        """A unit of work: commits when the block ends normally, rolls back otherwise. Each
        one bumps the index's generation, in its own transaction, so that answers kept from
        the index (ReadCache) are known to be current."""
        with _database_errors(), self.writer() as session, session.begin():
            index = Index(session)
            yield index
            index.bump_generation()

    def generation(self) -> int:
        """The index's generation (bumped by Index.bump_generation), on a pooled connection
        without a session: every request reads it first, so it is kept to one statement."""
        with _database_errors():
            conn = self.engine.raw_connection()  # back to the pool (rolled back) on close
            try:
                cursor = conn.cursor()
                cursor.execute(GENERATION_SQL)
                row = cursor.fetchone()
                cursor.close()
            finally:
                conn.close()
        if row is None:
            raise ServiceUnavailable(DATABASE, "its index_state row is missing (run migrations)")
        return int(row[0])

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
