"""A worker killed in the middle of a job: the job is redelivered and finishes once; a job whose
workers keep dying ends `errored` saying so. Real `hwrepo worker` processes, killed with SIGKILL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hwrepo.config import Settings
from hwrepo.domain.events import EVENTS_STREAM
from hwrepo.entrypoints.api.app import create_app
from hwrepo.service_layer.backends import Backends
from hwrepo.service_layer.reindex import reindex
from tests.conftest import make_actor
from tests.pipeline import pipeline_stack

CACHE = Path(os.environ.get("HWREPO_TEST_CACHE", "/tmp/hwrepo-test-cache")) / "worker"

SLOW_DESIGN = {
    "rtl/slow.v": b"module slow(input clk, output reg q);\n"
    b"  initial q = 0;\n  always @(posedge clk) q <= ~q;\nendmodule\n",
    "tests/test_slow.py": b"import time\n\nimport cocotb\nfrom cocotb.triggers import Timer\n\n\n"
    b"@cocotb.test()\nasync def test_takes_a_while(dut):\n"
    b"    time.sleep(12)  # wall-clock time, so the worker can be killed meanwhile\n"
    b'    await Timer(1, unit="ns")\n',
}


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, Backends, TestClient]]:
    tuned = settings.model_copy(update={"job_ack_wait_s": 4.0, "worker_cache_dir": CACHE})
    with pipeline_stack(tuned, tmp_path) as parts:
        yield parts


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        **settings.as_environment(),
        "HWREPO_DATABASE_URL": "sqlite:////nonexistent/the-worker-never-opens-it.sqlite3",
        "HWREPO_WORKER_CACHE_DIR": str(CACHE),
    }
    env.update(extra)
    return env


def _worker(settings: Settings, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "hwrepo.entrypoints.cli", "worker", "--kinds", "simulation"],
        env=_env(settings, **extra),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            _kill(proc)


def _wait_state(
    client: TestClient, project: str, state: str, timeout_s: float, summary: str = ""
) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        checks = client.get(f"/api/v1/projects/{project}/revisions/1/checks").json()["checks"]
        checks = [c for c in checks if c["kind"] == "simulation"]
        if checks and checks[0]["state"] == state and summary in checks[0]["summary"]:
            return checks[0]
        time.sleep(0.2)
    raise AssertionError(f"no check reached {state!r} {summary!r} in {timeout_s} s: {checks}")


def _wait_final(client: TestClient, project: str, timeout_s: float) -> dict:
    """The simulation check once final (the other kinds' checks are not this test's)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        checks = client.get(f"/api/v1/projects/{project}/revisions/1/checks").json()["checks"]
        sim = [c for c in checks if c["kind"] == "simulation"]
        if sim and sim[0]["state"] not in {"queued", "running"}:
            return sim[0]
        time.sleep(0.3)
    raise AssertionError(f"the simulation check is not final after {timeout_s} s: {checks}")


def _upload(client: TestClient, settings: Settings, backends: Backends) -> str:
    alice = make_actor(backends, "alice")
    r = client.post(
        "/api/v1/projects",
        json={"name": "slow", "kind": "hardware", "licence": "MIT"},
        headers=alice.headers,
    )
    assert r.status_code == 201
    files = [("files", (path, data)) for path, data in SLOW_DESIGN.items()]
    r = client.post("/api/v1/projects/alice/slow/revisions", files=files, headers=alice.headers)
    assert r.status_code == 201, r.text
    return "alice/slow"


async def _events(settings: Settings, event_type: str, check_id: str) -> int:
    from hwrepo.adapters import eventbus

    nc = await eventbus.connect(settings, name="count")
    try:
        sub = await nc.jetstream().subscribe(
            f"hwrepo.events.{event_type}", stream=EVENTS_STREAM, ordered_consumer=True
        )
        count = 0
        while True:
            try:
                msg = await sub.next_msg(timeout=1)
            except TimeoutError:
                return count
            if json.loads(msg.data)["data"]["check_id"] == check_id:
                count += 1
    finally:
        await nc.close()


def test_killed_worker_job_is_redelivered_and_finishes_once(
    stack: tuple[Settings, Backends, TestClient], tmp_path: Path
) -> None:
    settings, backends, client = stack
    project = _upload(client, settings, backends)
    first = _worker(settings, tmp_path / "worker-1.log")
    try:
        running = _wait_state(client, project, "running", timeout_s=120)
        time.sleep(1)
        _kill(first)  # mid-job: its sandbox dies with it
    finally:
        _stop(first)
    second = _worker(settings, tmp_path / "worker-2.log")
    try:
        # While the redelivered job runs, the check shows that attempt, not the dead worker's.
        again = _wait_state(client, project, "running", timeout_s=120, summary="(attempt 2)")
        check = _wait_final(client, project, timeout_s=180)
    finally:
        _stop(second)
    assert running["summary"] == f"running on {socket.gethostname()}:{first.pid} (attempt 1)"
    assert again["summary"] == f"running on {socket.gethostname()}:{second.pid} (attempt 2)"
    assert datetime.fromisoformat(again["started"]) > datetime.fromisoformat(running["started"])
    assert check["id"] == running["id"]
    assert check["state"] == "passed", check["summary"]
    assert check["run"] == 1
    assert asyncio.run(_events(settings, "check.finished", check["id"])) == 1
    # Started twice: by the killed worker, then once more — the second run lasted three times
    # the ack wait and was kept alive by in-progress acks, not redelivered again.
    assert asyncio.run(_events(settings, "check.started", check["id"])) == 2
    records = [
        k
        for k in backends.store.list_keys("results/")
        if k.endswith("/check.json") and check["id"] in k
    ]
    assert len(records) == 1


def test_a_job_whose_workers_keep_dying_ends_errored(
    stack: tuple[Settings, Backends, TestClient], tmp_path: Path, fresh_database: str
) -> None:
    settings, backends, client = stack
    project = _upload(client, settings, backends)
    first = _worker(settings, tmp_path / "worker-1.log", HWREPO_JOB_MAX_ATTEMPTS="1")
    try:
        _wait_state(client, project, "running", timeout_s=120)
        _kill(first)
    finally:
        _stop(first)
    second = _worker(settings, tmp_path / "worker-2.log", HWREPO_JOB_MAX_ATTEMPTS="1")
    try:
        check = _wait_final(client, project, timeout_s=120)
    finally:
        _stop(second)
    assert check["state"] == "errored"
    assert "started 1 times and never finished" in check["summary"]

    # Recorded in the bucket like any result: an index rebuilt from it says the same.
    rebuilt_settings = settings.model_copy(update={"database_url": fresh_database})
    rebuilt = Backends.from_settings(rebuilt_settings)
    try:
        reindex(rebuilt)
        with TestClient(create_app(rebuilt_settings, rebuilt, relay=False)) as rebuilt_api:
            again = _wait_final(rebuilt_api, project, timeout_s=1)
    finally:
        rebuilt.close()
    assert {k: again[k] for k in ("id", "run", "state", "summary")} == {
        k: check[k] for k in ("id", "run", "state", "summary")
    }
