"""hwrepo as a cluster on one machine (`hwrepo cluster up`, hwrepo/entrypoints/cluster.py): a
3-node NATS JetStream cluster with R3 streams, the S3 server, PostgreSQL, two API processes, two
worker processes — all real processes — and its parts failing while it works:

- a NATS node killed and restarted during steady uploads and jobs: every revision planned once
  and every check finished once, nothing lost;
- an API process killed between its commit and its publish: the other API's outbox relay
  publishes, the revision is checked;
- a worker killed in the middle of a job: the job is redelivered to the other worker, one verdict;
- the S3 server stopped and resumed: uploads answer 503 within seconds, nothing half-written, and
  all is well after.

API 1 talks to NATS node 1 only and API 2 to nodes 2 and 3, so that a node's death can cut one API
off from NATS while the cluster keeps its quorum."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from hwrepo.adapters import eventbus
from hwrepo.domain.events import EVENTS_STREAM
from hwrepo.entrypoints import embedded
from hwrepo.entrypoints.cluster import Cluster
from hwrepo.service_layer import users
from hwrepo.service_layer.backends import Backends
from tests.conftest import POSTGRES_URL, _pg_available, _pg_schema
from tests.integration.test_pipeline import SIM_CACHE

DESIGNS = Path(__file__).resolve().parents[2] / "designs"

pytestmark = pytest.mark.needs(
    None if _pg_available() else f"PostgreSQL is not reachable at {POSTGRES_URL}"
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The cluster, on ports free when it was made. Another process may take one of them before
    its server binds it (seen in CI: a NATS route port): then again, on other ports."""
    with _pg_schema() as url:
        for attempt in range(3):
            made = Cluster(
                tmp_path_factory.mktemp("cluster"),
                url,
                api_nats=[[0], [1, 2]],
                extra_env={"HWREPO_JOB_ACK_WAIT_S": "8", "HWREPO_OUTBOX_POLL_S": "0.2"},
                worker_cache_dir=SIM_CACHE,
            )
            try:
                made.__enter__()
            except embedded.StartFailed as exc:
                if "address already in use" in str(exc) and attempt < 2:
                    continue
                raise
            break
        try:
            yield made
        finally:
            made.__exit__(None, None, None)


@pytest.fixture(scope="module")
def token(cluster: Cluster) -> str:
    backends = Backends.from_settings(cluster.settings())
    try:
        users.create_user(backends, "alice")
        return users.create_token(backends, "alice", "cluster")
    finally:
        backends.close()


def _api(cluster: Cluster, i: int, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{cluster.api_url(i)}/api/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def _project(client: httpx.Client, name: str) -> str:
    r = client.post("/projects", json={"name": name, "kind": "hardware", "licence": "MIT"})
    assert r.status_code == 201, r.text
    return f"alice/{name}"


def _module(n: int) -> bytes:
    return (
        f"module top{n} (input wire clk, input wire d, output reg q);\n"
        "  always @(posedge clk) q <= d;\nendmodule\n"
    ).encode()


def _upload(client: httpx.Client, project: str, files: dict[str, bytes]) -> int:
    parts = [("files", (path, data)) for path, data in files.items()]
    r = client.post(f"/projects/{project}/revisions", files=parts)
    assert r.status_code == 201, r.text
    return int(r.json()["number"])


def _wait_final(
    client: httpx.Client, project: str, numbers: list[int], timeout_s: float = 180
) -> dict[int, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    done: dict[int, dict[str, Any]] = {}
    while time.monotonic() < deadline and len(done) < len(numbers):
        for n in numbers:
            if n in done:
                continue
            r = client.get(f"/projects/{project}/revisions/{n}/checks")
            if r.status_code == 200 and r.json()["state"] != "pending":
                done[n] = r.json()
        time.sleep(0.5)
    missing = sorted(set(numbers) - set(done))
    if missing:
        still = client.get(f"/projects/{project}/revisions/{missing[0]}/checks").json()
        states = [(c["kind"], c["state"], c["summary"]) for c in still["checks"]]
        raise AssertionError(
            f"revisions {missing} of {project} still pending after {timeout_s} s; "
            f"revision {missing[0]}: {states}"
        )
    return done


def _stream_events(cluster: Cluster, project: str) -> list[dict[str, Any]]:
    """Every event of the project as the stream holds it (each stored message once)."""

    async def go() -> list[dict[str, Any]]:
        import json

        nc = await eventbus.connect(cluster.settings(), name="test-cluster")
        try:
            js = nc.jetstream()
            sub = await js.subscribe("hwrepo.events.>", stream=EVENTS_STREAM, ordered_consumer=True)
            info = await js.stream_info(EVENTS_STREAM)
            out: list[dict[str, Any]] = []
            last = info.state.last_seq
            seq = 0
            while seq < last:
                msg = await sub.next_msg(timeout=10)
                seq = msg.metadata.sequence.stream
                event = json.loads(msg.data)
                if event.get("project") == project:
                    out.append(event)
            await sub.unsubscribe()
            return out
        finally:
            await nc.close()

    return asyncio.run(go())


def test_a_nats_node_dies_and_comes_back_during_steady_work(cluster: Cluster, token: str) -> None:
    one, two = _api(cluster, 0, token), _api(cluster, 1, token)
    project = _project(one, "steady")
    numbers = []
    for n in range(12):
        if n == 4:
            cluster.nats[2].kill()  # API 2 keeps node 2; the cluster keeps its quorum
        if n == 8:
            cluster.nats[2].start()
        client = one if n % 2 == 0 else two
        numbers.append(_upload(client, project, {f"rtl/top{n}.v": _module(n)}))
        time.sleep(0.3)
    results = _wait_final(two, project, numbers)
    for n, body in results.items():
        assert body["planned"], n
        kinds = sorted(c["kind"] for c in body["checks"])
        assert kinds == ["rtl-lint", "rtl-structure"], (n, kinds)
        states = [(c["kind"], c["run"], c["state"], c["summary"]) for c in body["checks"]]
        # a newer revision cancels an older one's jobs that have not started (superseded)
        final = {"passed", "failed", "cancelled"}
        assert all(run == 1 and state in final for _, run, state, _ in states), (
            n,
            states,
        )
    assert all(c["state"] != "cancelled" for c in results[numbers[-1]]["checks"])
    events = _stream_events(cluster, project)
    created = Counter(e["revision"] for e in events if e["type"] == "revision.created")
    planned = Counter(e["revision"] for e in events if e["type"] == "revision.planned")
    finished = Counter(e["data"]["check_id"] for e in events if e["type"] == "check.finished")
    assert created == Counter(numbers) and planned == Counter(numbers)
    assert len(finished) == 2 * len(numbers) and set(finished.values()) == {1}


def test_an_api_killed_between_commit_and_publish(cluster: Cluster, token: str) -> None:
    one, two = _api(cluster, 0, token), _api(cluster, 1, token)
    project = _project(two, "orphan")
    cluster.nats[0].kill()  # API 1's only node: it can commit, not publish
    try:
        deadline = time.monotonic() + 20
        ready = f"{cluster.api_url(0)}/readyz"
        while httpx.get(ready, timeout=10).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        number = _upload(one, project, {"rtl/top.v": _module(99)})  # committed, in the outbox
        cluster.apis[0].kill()
        # API 2's relay publishes what API 1 committed and could not announce
        body = _wait_final(two, project, [number], timeout_s=90)[number]
        assert sorted(c["kind"] for c in body["checks"]) == ["rtl-lint", "rtl-structure"]
    finally:
        cluster.nats[0].start()
        cluster.apis[0].start()
    events = _stream_events(cluster, project)
    assert [e["type"] for e in events].count("revision.created") == 1


def _log_tails(cluster: Cluster, lines: int = 40) -> str:
    """The end of each worker's log, for a failure message."""
    out = []
    for worker in cluster.workers:
        text = worker.log_path.read_text(errors="replace") if worker.log_path.exists() else ""
        out.append(f"--- {worker.name}:\n" + "\n".join(text.splitlines()[-lines:]))
    return "\n".join(out)


def _slow_counter(seconds: int) -> dict[str, bytes]:
    """rtl-counter with one test that takes `seconds` of wall time."""
    test = (
        "import time\n\nimport cocotb\nfrom cocotb.triggers import Timer\n\n\n"
        "@cocotb.test()\nasync def test_takes_its_time(dut):\n"
        f"    time.sleep({seconds})\n    await Timer(10, unit='ns')\n"
    )
    return {
        "rtl/counter.v": (DESIGNS / "rtl-counter" / "rtl" / "counter.v").read_bytes(),
        "tests/test_counter.py": test.encode(),
    }


def test_a_worker_killed_mid_job_is_replaced_by_the_other(cluster: Cluster, token: str) -> None:
    two = _api(cluster, 1, token)
    project = _project(two, "slow")
    number = _upload(two, project, _slow_counter(25))
    # The worker to kill is the one the job's check.started names, as the stream holds it (the
    # API shows it too, once its recorder has the event; that is not what this test is about).
    deadline = time.monotonic() + 240
    first: dict[str, Any] | None = None
    while time.monotonic() < deadline and first is None:
        first = next(
            (
                e
                for e in _stream_events(cluster, project)
                if e["type"] == "check.started" and e["data"]["kind"] == "simulation"
            ),
            None,
        )
        if first is None:
            time.sleep(0.5)
    checks = two.get(f"/projects/{project}/revisions/{number}/checks").json()["checks"]
    seen = [(c["kind"], c["state"], c["summary"]) for c in checks]
    assert first is not None, f"the simulation never started: {seen}\n" + _log_tails(cluster)
    victim = next(
        w
        for w in cluster.workers
        if w.process and str(first["data"]["worker"]).endswith(f":{w.process.pid}")
    )
    victim.kill()
    try:
        body = _wait_final(two, project, [number], timeout_s=240)[number]
    finally:
        victim.start()
    sim = next(c for c in body["checks"] if c["kind"] == "simulation")
    assert sim["state"] == "passed", sim["summary"]
    assert sim["run"] == 1
    events = _stream_events(cluster, project)
    started = [e for e in events if e["type"] == "check.started"]
    sim_started = [e for e in started if e["data"]["check_id"] == sim["id"]]
    assert [e["data"]["attempt"] for e in sim_started] == [1, 2]
    assert sim_started[0]["data"]["worker"] != sim_started[1]["data"]["worker"]
    finished = [e for e in events if e["type"] == "check.finished"]
    assert [e["data"]["check_id"] for e in finished].count(sim["id"]) == 1


def test_the_s3_server_stopped_and_resumed(cluster: Cluster, token: str) -> None:
    two = _api(cluster, 1, token)
    project = _project(two, "outage")
    before = _upload(two, project, {"rtl/top.v": _module(1)})
    assert cluster.s3 is not None and cluster.s3.process is not None
    os.kill(cluster.s3.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        files = [("files", ("rtl/top.v", _module(2)))]
        r = two.post(f"/projects/{project}/revisions", files=files)
        took = time.monotonic() - started
        assert r.status_code == 503, r.text
        assert "S3" in r.json()["detail"]
        assert took < 20, took
    finally:
        os.kill(cluster.s3.process.pid, signal.SIGCONT)
    listed = two.get(f"/projects/{project}/revisions").json()
    assert [rev["number"] for rev in listed["items"]] == [before]
    after = _upload(two, project, {"rtl/top.v": _module(3)})
    assert after == before + 1
    results = _wait_final(two, project, [before, after])
    assert all(r["planned"] for r in results.values())
    with psycopg.connect(POSTGRES_URL, connect_timeout=2):
        pass  # the database outlived it all
