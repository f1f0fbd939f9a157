"""A running job's log: copied to the bucket as it grows (on the real S3 server), read by byte
range before the job ends, through the API while a simulation runs, and by `hwrepo logs -f`."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from hwrepo.adapters.objectstore import live_log_prefix
from hwrepo.checks.core.kind import (
    Artifact,
    CheckKind,
    CheckResult,
    PlannedJob,
    RevisionFiles,
    Workspace,
)
from hwrepo.checks.run.runner import Sandbox
from hwrepo.config import Settings
from hwrepo.domain.checks import Job
from hwrepo.service_layer import jobs, livelog
from hwrepo.service_layer.backends import Backends
from tests.conftest import make_actor
from tests.integration.helpers import clean_env
from tests.integration.test_pipeline import DESIGNS, SIM_CACHE
from tests.pipeline import api_process, new_project, pipeline_stack, running_worker

PREFIX = "results/p/0000000001/c/1/live-log/"
HWREPO = str(Path(sys.executable).parent / "hwrepo")


def test_the_log_is_copied_as_it_grows_and_read_by_any_range(
    backends: Backends, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(livelog, "SEGMENT_BYTES", 1000)
    path = tmp_path / "log.txt"
    written = b""
    copier = livelog.LiveLog(backends.store, PREFIX, path)
    copier.copy()  # no log yet: nothing
    assert livelog.read(backends.store, PREFIX, 0, 100) == (b"", 0)
    for n in range(5):
        line = f"line {n} ".encode() * 97 + b"\n"
        with path.open("ab") as fh:
            fh.write(line)
        written += line
        copier.copy()
    assert livelog.read(backends.store, PREFIX, 0, 10**6) == (written, len(written))
    for offset, limit in [(0, 1), (999, 2), (1500, 2500), (len(written) - 3, 100), (10**6, 5)]:
        data, size = livelog.read(backends.store, PREFIX, offset, limit)
        assert size == len(written)
        assert data == written[offset : offset + limit], (offset, limit)
    # an earlier attempt's copy is removed when the next attempt starts
    with livelog.LiveLog(backends.store, PREFIX, tmp_path / "none.txt", every_s=3600):
        assert livelog.read(backends.store, PREFIX, 0, 10) == (b"", 0)


def test_a_log_replaced_by_a_link_or_another_file_is_no_longer_copied(
    backends: Backends, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"host secret\n" * 10)
    path = tmp_path / "log.txt"
    path.write_bytes(b"first\n")
    copier = livelog.LiveLog(backends.store, PREFIX, path)
    copier.copy()
    path.unlink()
    path.symlink_to(secret)  # what a hostile step could plant in its output directory
    copier.copy()
    path.unlink()
    os.link(secret, path)  # the same bytes under the log's name: another file all the same
    copier.copy()
    assert livelog.read(backends.store, PREFIX, 0, 10**6) == (b"first\n", 6)
    fresh = livelog.LiveLog(backends.store, PREFIX + "x/", tmp_path / "link")
    (tmp_path / "link").symlink_to(secret)
    fresh.copy()
    assert livelog.read(backends.store, PREFIX + "x/", 0, 100) == (b"", 0)


def test_only_the_first_bytes_of_a_huge_log_are_copied(
    backends: Backends, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(livelog, "MAX_BYTES", 2500)
    path = tmp_path / "log.txt"
    path.write_bytes(bytes(range(256)) * 40)
    livelog.LiveLog(backends.store, PREFIX, path).copy()
    data, size = livelog.read(backends.store, PREFIX, 0, 10**6)
    assert size == 2500 and data == path.read_bytes()[:2500]


SLOW_TEST = b"""import time

import cocotb
from cocotb.triggers import Timer


@cocotb.test()
async def test_prints_then_waits(dut):
    print("LIVE-MARKER early line", flush=True)
    dut._log.info("LIVE-MARKER from the logger")
    time.sleep(8)
    await Timer(10, unit="ns")
    print("LIVE-MARKER late line", flush=True)
"""


def _slow_counter(tmp_path: Path) -> Path:
    root = tmp_path / "slow-counter"
    (root / "rtl").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "rtl" / "counter.v").write_bytes((DESIGNS / "rtl-counter/rtl/counter.v").read_bytes())
    (root / "tests" / "test_counter.py").write_bytes(SLOW_TEST)
    (root / "hwrepo.toml").write_text(
        '[[testbench]]\nmodules = ["tests/test_counter.py"]\nsimulators = ["icarus"]\n'
    )
    return root


def test_a_running_simulation_s_log_is_read_before_it_ends_and_followed(
    settings: Settings, tmp_path: Path
) -> None:
    root = _slow_counter(tmp_path)
    with pipeline_stack(settings, tmp_path / "stack") as (own, backends, _client):
        alice = make_actor(backends, "alice")
        worker_settings = own.model_copy(update={"worker_cache_dir": SIM_CACHE})
        with (
            api_process(own, tmp_path / "api-data", tmp_path / "api.log") as url,
            running_worker(worker_settings, kinds=["simulation"]),
        ):
            http = httpx.Client(base_url=url, headers=alice.headers, timeout=30)
            project = new_project(http, alice.headers, "slow")
            files = [
                ("files", (p.relative_to(root).as_posix(), p.read_bytes()))
                for p in sorted(root.rglob("*"))
                if p.is_file()
            ]
            r = http.post(f"/api/v1/projects/{project}/revisions", files=files)
            assert r.status_code == 201, r.text
            checks_url = f"/api/v1/projects/{project}/revisions/1/checks"
            # the client, from a fresh HOME, following the log from before the job starts
            home = tmp_path / "home"
            home.mkdir()
            env = clean_env() | {
                "HOME": str(home),
                "HWREPO_SERVER": url,
                "HWREPO_TOKEN": alice.token,
            }
            sim = None
            deadline = time.monotonic() + 120
            while sim is None and time.monotonic() < deadline:
                checks = http.get(checks_url).json()["checks"]
                sim = next((c for c in checks if c["kind"] == "simulation"), None)
                time.sleep(0.2)
            assert sim is not None, "no simulation check was planned"
            follower: dict[str, subprocess.CompletedProcess[bytes]] = {}

            def follow() -> None:
                follower["done"] = subprocess.run(
                    [HWREPO, "logs", project, "1", sim["id"], "--follow"],
                    env=env,
                    capture_output=True,
                    timeout=240,
                    check=False,
                )

            thread = threading.Thread(target=follow)
            thread.start()
            live = b""
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                r = http.get(sim["url"] + "/log")
                assert r.status_code == 200, r.text
                state = http.get(sim["url"]).json()["state"]
                if r.headers["X-Log-Live"] == "true" and b"LIVE-MARKER early line" in r.content:
                    live = r.content
                    assert state in {"queued", "running"}
                    assert b"LIVE-MARKER late line" not in live
                    break
                assert state in {"queued", "running"}, "the check ended before its log was seen"
                time.sleep(0.3)
            assert live, "the running check's log never showed its first lines"
            deadline = time.monotonic() + 120
            while http.get(sim["url"]).json()["state"] in {"queued", "running"}:
                assert time.monotonic() < deadline
                time.sleep(0.3)
            final = http.get(sim["url"] + "/log", params={"limit": 8 * 1024 * 1024})
            assert final.headers["X-Log-Live"] == "false"
            assert final.content.startswith(live)
            assert b"LIVE-MARKER late line" in final.content
            thread.join(timeout=120)
            done = follower["done"]
            assert done.returncode == 0, done.stderr
            assert done.stdout == final.content
            check = http.get(sim["url"]).json()
            assert check["state"] == "passed", check["summary"]
            http.close()
        # the worker removed its copy once the whole log was stored
        assert not [k for k in backends.store.list_keys("results/") if "/live-log/" in k]


class _Logging(CheckKind):
    """A kind whose job only writes a line to its log (no tool: nothing to sandbox)."""

    name = "logging"
    description = "writes its log"

    def available(self) -> str | None:
        return None

    def plan(self, revision: RevisionFiles) -> list[PlannedJob]:
        return []

    def run(self, job: Job, ws: Workspace, sandbox: Sandbox) -> CheckResult:
        ws.log.write_text("done\n", encoding="utf-8")
        return CheckResult("passed", "done", artifacts=[Artifact("log.txt", ws.log, "text/plain")])


def _job(check_id: str) -> Job:
    return Job(
        check_id=check_id,
        kind="logging",
        name="log",
        params={},
        inputs=[],
        timeout_s=60,
        project="o/p",
        project_id="p",
        revision=1,
        revision_id="r",
        waivers=[],
    )


@pytest.mark.parametrize("attempt", [1, 2])
def test_a_job_leaves_no_live_log_behind(backends: Backends, tmp_path: Path, attempt: int) -> None:
    job = _job(f"c{attempt}")
    prefix = live_log_prefix(job.project_id, job.revision, job.check_id, job.run)
    if attempt > 1:  # what the first attempt's worker copied before it died
        backends.store.put_bytes(livelog.segment_key(prefix, 0), b"stale\n", livelog.MEDIA_TYPE)
    finished = jobs.execute(backends.store, _Logging(), job, jobs.WorkerDirs(tmp_path), attempt)
    assert finished.data["state"] == "passed"
    assert list(backends.store.list_keys(prefix)) == []
    log = next(a for a in finished.data["artifacts"] if a["name"] == "log.txt")
    assert backends.store.get_bytes(log["key"]) == b"done\n"
