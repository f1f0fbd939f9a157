"""Fixtures: real servers on free ports in temporary directories.

A nats-server and a SeaweedFS S3 server are started once per test session with the same code
`hwrepo up` uses; each test gets its own bucket and its own database (SQLite file, or a fresh
PostgreSQL schema for tests parametrised with `database`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from minio.deleteobjects import DeleteObject
from nats.aio.client import Client

from hwrepo.adapters import eventbus
from hwrepo.adapters.objectstore import ObjectStore
from hwrepo.config import EmbeddedPorts, Settings, UploadLimits
from hwrepo.entrypoints import embedded
from hwrepo.entrypoints.api.app import create_app
from hwrepo.service_layer import bootstrap, users
from hwrepo.service_layer.backends import Backends

# Under CI a test whose tool is missing fails: a green run must mean the tools were there.
IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """`@pytest.mark.needs(reason)`: the test needs a tool; `reason` says why it cannot run here
    (None: it can). Skipped on a developer's machine, failed under CI=true."""
    for mark in item.iter_markers("needs"):
        reason = mark.args[0] if mark.args else None
        if reason:
            if IN_CI:
                pytest.fail(f"CI=true and a tool this test needs is missing: {reason}")
            pytest.skip(str(reason))


POSTGRES_URL = os.environ.get(
    "HWREPO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def s3_keys() -> dict[str, str]:
    return {"access_key": "test-" + secrets.token_hex(4), "secret_key": secrets.token_urlsafe(24)}


def start_s3_server(data_dir: Path, keys: dict[str, str]) -> embedded.Server:
    """A SeaweedFS S3 server on free ports, started (stop it when done)."""
    names = [n for n in EmbeddedPorts.model_fields if n != "nats"]
    ports = EmbeddedPorts(**dict(zip(names, embedded.free_ports(len(names)), strict=True)))
    server = embedded.s3_server(data_dir, ports, keys["access_key"], keys["secret_key"])
    server.start()
    return server


def start_nats_server(data_dir: Path) -> embedded.Server:
    """A nats-server with JetStream on a free port, started (stop it when done)."""
    (port,) = embedded.free_ports(1)
    server = embedded.nats_server(data_dir, port)
    server.start()
    return server


@pytest.fixture(scope="session")
def s3_server(servers_dir: Path, s3_keys: dict[str, str]) -> Iterator[embedded.Server]:
    server = start_s3_server(servers_dir / "s3", s3_keys)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_server(servers_dir: Path) -> Iterator[embedded.Server]:
    server = start_nats_server(servers_dir / "nats")
    yield server
    server.stop()


@pytest.fixture
def throwaway_s3(tmp_path: Path, s3_keys: dict[str, str]) -> Iterator[embedded.Server]:
    """An S3 server of this test alone, which it may kill and restart (same data, same ports)."""
    server = start_s3_server(tmp_path / "throwaway-s3", s3_keys)
    yield server
    server.kill()  # its data goes with the test


@pytest.fixture
def throwaway_nats(tmp_path: Path) -> Iterator[embedded.Server]:
    """A nats-server of this test alone, which it may kill and restart (same data, same port)."""
    server = start_nats_server(tmp_path / "throwaway-nats")
    yield server
    server.kill()  # its data goes with the test


def _pg_available() -> bool:
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


@contextlib.contextmanager
def _pg_schema() -> Iterator[str]:
    """A URL of a fresh PostgreSQL schema, dropped afterwards."""
    schema = "hwrepo_test_" + uuid.uuid4().hex[:10]
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The database URL for one test; parametrise with ["sqlite", "postgresql"] to run both."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'index.sqlite3'}"
        return
    if not _pg_available():
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}")
    with _pg_schema() as url:
        yield url


@pytest.fixture
def fresh_database(database: str, tmp_path: Path) -> Iterator[str]:
    """A second, empty database of the same kind as `database` (to rebuild an index into)."""
    if database.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'fresh-index.sqlite3'}"
        return
    with _pg_schema() as url:
        yield url


@pytest.fixture
def upload_limits() -> UploadLimits:
    """The API's upload limits; a module overrides this fixture to test small limits."""
    return UploadLimits()


@pytest.fixture
def settings(
    tmp_path: Path,
    s3_server: embedded.Server,
    nats_server: embedded.Server,
    s3_keys: dict[str, str],
    database: str,
    upload_limits: UploadLimits,
) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        s3_endpoint=f"http://127.0.0.1:{s3_server.ready_port}",
        s3_access_key=s3_keys["access_key"],
        s3_secret_key=s3_keys["secret_key"],
        s3_bucket="t-" + uuid.uuid4().hex[:16],
        nats_urls=[f"nats://127.0.0.1:{nats_server.ready_port}"],
        database_url=database,
        outbox_poll_s=0.1,
        seed_demo_projects=False,
        upload_limits=upload_limits,
    )


@pytest.fixture
def backends(settings: Settings) -> Iterator[Backends]:
    backends = prepare_backends(settings)
    yield backends
    backends.close()
    drop_bucket(backends.store)


def drop_bucket(store: ObjectStore) -> None:
    """Remove a test's bucket with its objects. SeaweedFS gives every bucket volumes of its own,
    which run out after some dozens of buckets unless they are deleted again."""
    with contextlib.suppress(Exception):
        keys = [DeleteObject(key) for key in store.list_keys("")]
        errors = list(store.client.remove_objects(store.bucket, keys))
        if not errors:
            store.client.remove_bucket(store.bucket)


def prepare_backends(settings: Settings) -> Backends:
    """Backends on `settings`, with the bucket and the streams made (close them when done)."""
    backends = Backends.from_settings(settings)
    try:
        bootstrap.ensure_bucket(backends)
        asyncio.run(bootstrap.ensure_streams(settings))
    except BaseException:
        backends.close()
        raise
    return backends


@pytest.fixture
def client(settings: Settings, backends: Backends) -> Iterator[TestClient]:
    """The API with its outbox relay, in-process (the TestClient runs the app's lifespan)."""
    with TestClient(create_app(settings, backends)) as test_client:
        yield test_client


@pytest.fixture
def api(settings: Settings, backends: Backends) -> Iterator[TestClient]:
    """The API without its NATS side (no outbox relay, no event recorder), for tests of requests,
    storage and the index that never look at events: it starts and stops much quicker."""
    with TestClient(create_app(settings, backends, relay=False)) as test_client:
        yield test_client


class Actor:
    """A user with a token, and the headers to send it."""

    def __init__(self, name: str, token: str) -> None:
        self.name = name
        self.token = token
        self.headers = {"Authorization": f"Bearer {token}"}


def make_actor(backends: Backends, name: str, *, admin: bool = False) -> Actor:
    users.create_user(backends, name, admin=admin)
    return Actor(name, users.create_token(backends, name))


@pytest.fixture
def alice(backends: Backends) -> Actor:
    return make_actor(backends, "alice")


@pytest.fixture
def bob(backends: Backends) -> Actor:
    return make_actor(backends, "bob")


@pytest.fixture
def carol(backends: Backends) -> Actor:
    return make_actor(backends, "carol")


@pytest.fixture
def admin(backends: Backends) -> Actor:
    """A site administrator."""
    return make_actor(backends, "root", admin=True)


@pytest.fixture
async def nats_client(settings: Settings) -> AsyncIterator[Client]:
    nc = await eventbus.connect(settings, name="test")
    yield nc
    await nc.close()
