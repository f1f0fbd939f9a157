"""Backing services going away: S3 down makes uploads and downloads 503 and leaves nothing
half-written; NATS down keeps uploads working (events wait in the outbox) and the events go out
once NATS is back. Each test kills its own throwaway server, never the shared ones."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from nats.aio.msg import Msg
from sqlalchemy import select

from hwrepo.adapters import eventbus
from hwrepo.adapters.db.orm import OutboxRow
from hwrepo.adapters.objectstore import MIN_PART_SIZE, ObjectStore
from hwrepo.config import Settings
from hwrepo.domain import events
from hwrepo.entrypoints import embedded
from hwrepo.entrypoints.api.app import create_app
from hwrepo.service_layer.backends import Backends
from tests.conftest import make_actor, prepare_backends
from tests.integration.helpers import (
    API,
    assert_problem,
    collect,
    content,
    create_project,
    revision_total,
    subscribe_events,
    upload,
    uploaded,
)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def _readiness(client: TestClient) -> tuple[int, dict[str, str]]:
    r = client.get("/readyz")
    return r.status_code, r.json()["checks"]


def test_s3_down_is_503_and_nothing_is_half_written(
    settings: Settings, throwaway_s3: embedded.Server
) -> None:
    s3_settings = settings.model_copy(
        update={"s3_endpoint": f"http://127.0.0.1:{throwaway_s3.ready_port}"}
    )
    backends = prepare_backends(s3_settings)
    try:
        alice = make_actor(backends, "alice")
        with TestClient(create_app(s3_settings, backends)) as client:
            project = create_project(client, alice, "blinky")
            assert uploaded(client, alice, "alice/blinky", {"a.txt": b"first"})["number"] == 1
            wait_for("ready", lambda: _readiness(client)[0] == 200)
            stored = set(backends.store.list_keys(""))
            assert f"projects/{project['id']}/revisions/0000000001.json" in stored

            throwaway_s3.kill()
            started = time.monotonic()
            r = upload(client, alice, "alice/blinky", {"b.txt": b"never stored"}, message="lost")
            problem = assert_problem(r, 503)
            assert problem["title"] == "Service unavailable"
            assert problem["detail"].startswith("S3 object storage is unreachable")
            assert r.headers["retry-after"] == "5"
            assert time.monotonic() - started < 20
            status, checks = _readiness(client)
            assert status == 503
            assert checks["s3"].startswith("S3 object storage is unreachable"), checks
            assert (checks["nats"], checks["database"]) == ("ok", "ok")
            # Project documents live in S3 too: creating one fails whole.
            r = client.post(
                API,
                json={"name": "other", "kind": "hardware", "licence": "MIT"},
                headers=alice.headers,
            )
            assert_problem(r, 503)
            # File bytes come from S3; the index keeps answering the rest.
            for url in ("revisions/1/files/a.txt", "revisions/1/archive.zip"):
                assert_problem(client.get(f"{API}/alice/blinky/{url}"), 503)
            assert revision_total(client, alice, "alice/blinky") == 1
            assert client.get(f"{API}/alice/blinky/revisions/1").status_code == 200

            throwaway_s3.start()  # the same data directory and ports
            wait_for("S3 back", lambda: _readiness(client)[0] == 200)
            assert revision_total(client, alice, "alice/blinky") == 1
            assert_problem(client.get(f"{API}/alice/other", headers=alice.headers), 404)
            assert set(backends.store.list_keys("")) == stored  # no blob, manifest or document
            r = uploaded(client, alice, "alice/blinky", {"b.txt": b"stored now"}, message="again")
            assert (r["number"], r["new_bytes"]) == (2, len(b"stored now"))
            assert client.get(f"{API}/alice/blinky/revisions/1/files/a.txt").content == b"first"
    finally:
        backends.close()


def test_stopped_s3_is_503_within_seconds_and_nothing_is_half_written(
    settings: Settings, throwaway_s3: embedded.Server
) -> None:
    """A stopped S3 server (SIGSTOP) still accepts connections but never answers: every call
    must give up after one read timeout, not hang for minutes."""
    s3_settings = settings.model_copy(
        update={"s3_endpoint": f"http://127.0.0.1:{throwaway_s3.ready_port}"}
    )
    backends = prepare_backends(s3_settings)
    assert throwaway_s3.process is not None
    weed = throwaway_s3.process.pid
    try:
        alice = make_actor(backends, "alice")
        with TestClient(create_app(s3_settings, backends)) as client:
            create_project(client, alice, "blinky")
            assert uploaded(client, alice, "alice/blinky", {"a.txt": b"first"})["number"] == 1
            wait_for("ready", lambda: _readiness(client)[0] == 200)
            stored = set(backends.store.list_keys(""))

            os.killpg(weed, signal.SIGSTOP)
            try:
                started = time.monotonic()
                # a file big enough for its put to start while the upload is received
                big = content("never stored either", MIN_PART_SIZE + 1)
                r = upload(client, alice, "alice/blinky", {"b.txt": b"never stored", "c.bin": big})
                took = time.monotonic() - started
                problem = assert_problem(r, 503)
                assert problem["detail"].startswith("S3 object storage is unreachable"), problem
                assert problem["service"] == "S3 object storage"
                assert took < 10, f"the upload took {took:.1f} s to fail"
                for url in ("revisions/1/files/a.txt", "revisions/1/archive.zip"):
                    started = time.monotonic()
                    r = client.get(f"{API}/alice/blinky/{url}")
                    took = time.monotonic() - started
                    assert_problem(r, 503)
                    assert took < 10, f"{url} took {took:.1f} s to fail"
                started = time.monotonic()
                status, checks = _readiness(client)
                assert status == 503 and checks["s3"] != "ok", checks
                assert time.monotonic() - started < 10
                # The index still answers what it knows.
                assert client.get(f"{API}/alice/blinky/revisions/1").status_code == 200
            finally:
                os.killpg(weed, signal.SIGCONT)

            wait_for("S3 back", lambda: _readiness(client)[0] == 200)
            assert revision_total(client, alice, "alice/blinky") == 1
            assert set(backends.store.list_keys("")) == stored  # no blob, no manifest
            r = uploaded(client, alice, "alice/blinky", {"b.txt": b"stored now"}, message="again")
            assert (r["number"], r["new_bytes"]) == (2, len(b"stored now"))
            assert client.get(f"{API}/alice/blinky/revisions/1/files/a.txt").content == b"first"
            zipped = client.get(f"{API}/alice/blinky/revisions/2/archive.zip")
            assert zipped.status_code == 200 and zipped.content.startswith(b"PK")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(weed, signal.SIGCONT)
        backends.close()


def test_a_slow_download_that_keeps_moving_is_not_cut_off(backends: Backends) -> None:
    """The S3 timeout bounds each read, not a transfer: a download that takes several times
    the timeout, but never waits that long for a byte, completes."""
    data = os.urandom(24 * 1024 * 1024)
    backends.store.put_bytes("slow/big.bin", data, "application/octet-stream")
    store = ObjectStore(bucket=backends.store.bucket, timeout_s=1.0, **backends.settings.s3)
    digest = hashlib.sha256()
    started = time.monotonic()
    for chunk in store.stream("slow/big.bin"):
        digest.update(chunk)
        time.sleep(0.15)  # a slow client: 24 chunks of 1 MiB, some 3.6 s in all
    assert time.monotonic() - started > 3.0  # three times the timeout
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


async def _stored_events(settings: Settings, project_id: str) -> list[Msg]:
    """Every revision.created of the project the stream holds."""
    nc = await eventbus.connect(settings, name="test-outage")
    try:
        sub = await subscribe_events(nc, "revision.created", from_start=True)
        return await collect(sub, project_id, count=2, timeout=1.5)
    finally:
        await nc.close()


def _outbox_row(backends: Backends, event_id: str) -> OutboxRow | None:
    with backends.reading() as index:
        return index.session.scalars(select(OutboxRow).where(OutboxRow.id == event_id)).first()


def test_nats_down_keeps_uploads_and_publishes_when_back(
    settings: Settings, throwaway_nats: embedded.Server
) -> None:
    nats_settings = settings.model_copy(
        update={"nats_urls": [f"nats://127.0.0.1:{throwaway_nats.ready_port}"]}
    )
    backends = prepare_backends(nats_settings)
    try:
        alice = make_actor(backends, "alice")
        with TestClient(create_app(nats_settings, backends)) as client:
            wait_for("ready", lambda: _readiness(client)[0] == 200)
            project = create_project(client, alice, "blinky")

            throwaway_nats.kill()
            _, checks = wait_for(
                "NATS reported down",
                lambda: (ready := _readiness(client))[0] == 503 and ready,
                timeout=10,
            )
            assert checks["nats"].startswith("NATS JetStream is unreachable"), checks
            assert (checks["s3"], checks["database"]) == ("ok", "ok")

            # Uploads still work; the event waits in the outbox.
            revision = uploaded(client, alice, "alice/blinky", {"a.txt": b"a"}, message="offline")
            event_id = events.event_id("revision.created", revision["id"])
            row = _outbox_row(backends, event_id)
            assert row is not None and row.published_at is None

            throwaway_nats.start()  # the same data directory (the stream) and port
            wait_for("ready again", lambda: _readiness(client)[0] == 200)
            published = wait_for(
                "the event published",
                lambda: (row := _outbox_row(backends, event_id)) and row.published_at,
            )
            assert published is not None

        msgs = asyncio.run(_stored_events(nats_settings, project["id"]))
        assert [m.headers["Nats-Msg-Id"] for m in msgs if m.headers] == [event_id]
        event = json.loads(msgs[0].data)
        assert (event["revision"], event["data"]["message"]) == (1, "offline")
    finally:
        backends.close()
