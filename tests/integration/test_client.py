"""The client as a CI job uses it: `hwrepo` run as a process with a fresh HOME against a real API
process (uvicorn) and a real worker, only through the public HTTP API. Login; pushes that pass
(exit 0), fail a test (1), error (2) and are refused (3); a retried push gives the same
revision; an unchanged push sends nothing; --wait follows the live event stream and does not
poll the checks; JUnit and a schema-valid SARIF; the stream resumes exactly with Last-Event-ID
and is 404 to outsiders of a private project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from httpx_sse import connect_sse

from hwrepo.checks.simulation.kind import SimulationKind
from hwrepo.config import Settings
from hwrepo.service_layer import users
from hwrepo.service_layer.backends import Backends
from tests.integration.helpers import clean_env
from tests.integration.test_pipeline import SIM_CACHE
from tests.pipeline import api_process, pipeline_stack, running_worker

pytestmark = pytest.mark.needs(SimulationKind().available())

DESIGNS = Path(__file__).resolve().parents[2] / "designs"
SCHEMA = Path(__file__).resolve().parents[1] / "data" / "sarif-2.1.0-rtm.5.json"


class Server:
    def __init__(self, url: str, backends: Backends, settings: Settings, log: Path) -> None:
        self.url, self.backends, self.settings, self.log = url, backends, settings, log

    def requests(self, method: str, route: str) -> float:
        """How often the API served `route` so far (its Prometheus counter)."""
        text = httpx.get(self.url + "/metrics").text
        total = 0.0
        for line in text.splitlines():
            ours = f'route="{route}"' in line and f'method="{method}"' in line
            if line.startswith("hwrepo_http_requests_total{") and ours:
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[Server]:
    tuned = settings.model_copy(update={"worker_cache_dir": SIM_CACHE})
    with pipeline_stack(tuned, tmp_path) as (own, backends, _client):
        log = tmp_path / "api.log"
        with (
            api_process(own, tmp_path / "api-data", log) as url,
            running_worker(own, concurrency=2),
        ):
            yield Server(url, backends, own, log)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def hwrepo(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = clean_env(HOME=str(home), **env)
    environment.pop("XDG_CONFIG_HOME", None)
    return subprocess.run(
        [sys.executable, "-m", "hwrepo.entrypoints.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=home,
    )


def copy(design: str, target: Path) -> Path:
    shutil.copytree(DESIGNS / design, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_a_ci_job_pushes_waits_and_exits_by_the_verdict(
    server: Server, home: Path, tmp_path: Path
) -> None:
    users.create_user(server.backends, "alice")
    token = users.create_token(server.backends, "alice", "ci")
    users.create_user(server.backends, "bob")
    bob = users.create_token(server.backends, "bob", "bob")

    # login keeps the server and token, for the owner's eyes only
    bad = hwrepo(home, "login", "--server", server.url, "--token", "hwr_wrong")
    assert bad.returncode == 3 and "the server refused the token" in bad.stderr
    done = hwrepo(home, "login", "--server", server.url, "--token", token)
    assert done.returncode == 0, done.stderr
    config = home / ".config" / "hwrepo" / "client.toml"
    assert config.stat().st_mode & 0o777 == 0o600 and token in config.read_text()
    assert hwrepo(home, "whoami").stdout.strip() == f"alice on {server.url}"

    # a passing design: 0, with a JUnit report and a SARIF log
    counter = copy("rtl-counter", tmp_path / "counter")
    (counter / "sim_build").mkdir()
    (counter / "sim_build" / "junk.o").write_bytes(b"\0" * 100)
    (counter / ".hwrepoignore").write_text("notes/\n")
    (counter / "notes").mkdir()
    (counter / "notes" / "todo.txt").write_text("private notes\n")
    before = server.requests("GET", "/api/v1/projects/{owner}/{name}/revisions/{number}/checks")
    junit, sarif = tmp_path / "junit.xml", tmp_path / "result.sarif"
    passed = hwrepo(
        home,
        "push",
        str(counter),
        "--project",
        "alice/counter",
        "--create",
        "--licence",
        "CERN-OHL-P-2.0",
        "--wait",
        "--junit",
        str(junit),
        "--sarif",
        str(sarif),
        "--timeout",
        "300",
    )
    assert passed.returncode == 0, passed.stderr
    assert "revision 1 of alice/counter" in passed.stderr
    assert passed.stdout.strip() == f"{server.url}/alice/counter/revisions/1"
    for line in ("queued", "passed", "simulation", "rtl-lint"):
        assert line in passed.stderr
    polled = server.requests("GET", "/api/v1/projects/{owner}/{name}/revisions/{number}/checks")
    # read when planned and at the end (while the index records the last verdict), never
    # polled while the checks run: the wait follows the event stream
    assert polled - before <= 6
    assert server.requests("GET", "/api/v1/projects/{owner}/{name}/events") >= 1
    revision = httpx.get(
        f"{server.url}/api/v1/projects/alice/counter/revisions/1",
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    paths = {f["path"] for f in revision["files"]}
    assert "rtl/counter.v" in paths and ".hwrepoignore" in paths
    assert not any(p.startswith(("sim_build/", "notes/")) for p in paths)
    cases = ET.parse(junit).getroot().iter("testcase")
    names = {c.get("name"): c for c in cases}
    assert {"test_counts_when_enabled", "test_wrap_pulse"} <= set(names)
    document = json.loads(sarif.read_text())
    jsonschema.validate(document, json.loads(SCHEMA.read_text()))
    assert document["runs"], "the lint check's findings"

    # the same push again: the same revision, nothing sent
    again = hwrepo(home, "push", str(counter), "--project", "alice/counter")
    assert again.returncode == 0, again.stderr
    assert "revision 1 of alice/counter (the same push as before)" in again.stderr
    assert "0 sent (0 bytes)" in again.stderr

    # a failing test: 1, and the JUnit report names it
    fifo = copy("rtl-axis-fifo", tmp_path / "fifo")
    failed = hwrepo(
        home,
        "push",
        str(fifo),
        "-p",
        "alice/counter",
        "--wait",
        "--timeout",
        "240",
        "--junit",
        str(junit),
    )
    assert failed.returncode == 1, failed.stderr
    failures = [
        c.get("name")
        for c in ET.parse(junit).getroot().iter("testcase")
        if c.find("failure") is not None
    ]
    assert "test_known_failure_wrong_expected_order" in failures

    # a check that errors: 2
    broken = copy("rtl-counter", tmp_path / "broken")
    rtl = broken / "rtl" / "counter.v"
    rtl.write_text(rtl.read_text().replace("count + 1'b1;", "count + ;"))
    errored = hwrepo(home, "push", str(broken), "-p", "alice/counter", "--wait", "--timeout", "240")
    assert errored.returncode == 2, errored.stderr
    assert "errored" in errored.stderr

    # what changed between revisions 1 and 3, in the checks' terms
    diff = hwrepo(home, "diff", "alice/counter", "1", "3")
    assert diff.returncode == 0, diff.stderr
    assert "~ rtl/counter.v" in diff.stdout
    assert "rtl-structure" in diff.stdout and "passed → errored" in diff.stdout
    as_json = json.loads(hwrepo(home, "diff", "alice/counter", "1", "3", "--json").stdout)
    assert as_json["a"]["number"] == 1 and as_json["b"]["number"] == 3
    orphan = hwrepo(home, "diff", "alice/counter", "1")
    assert orphan.returncode == 2 and "has no parent" in orphan.stderr

    # a testbench importing what nothing installs: 2, and the check's hint under the table
    needs = copy("rtl-counter", tmp_path / "needs")
    bench = needs / "tests" / "test_counter.py"
    bench.write_text("import not_installed_anywhere  # noqa\n" + bench.read_text())
    hinted = hwrepo(home, "push", str(needs), "-p", "alice/needs", "--create", "--licence", "MIT",
                    "--wait", "--timeout", "240")  # fmt: skip
    assert hinted.returncode == 2, hinted.stderr
    said = " ".join(hinted.stderr.split())
    hint = "hint: no package installed for the testbench provides 'not_installed_anywhere'"
    assert f"simulation tests/test_counter.py · icarus: {hint}" in said, hinted.stderr
    listed = hwrepo(home, "checks", "alice/needs")
    assert listed.returncode == 2 and hint in " ".join(listed.stderr.split()), listed.stderr

    # a project that requires an approval: --require-review waits for it, and a request for
    # changes, seen live on the event stream, fails the job
    auth = {"Authorization": f"Bearer {token}"}
    r = httpx.patch(
        f"{server.url}/api/v1/projects/alice/counter", json={"required_approvals": 1}, headers=auth
    )
    assert r.status_code == 200, r.text
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hwrepo.entrypoints.cli",
            "push",
            str(counter),
            "-p",
            "alice/counter",
            "-m",
            "for review",
            "--wait",
            "--require-review",
            "--timeout",
            "240",
        ],
        env={**clean_env(HOME=str(home)), "HWREPO_TOKEN": token},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=home,
    )
    checks_url = f"{server.url}/api/v1/projects/alice/counter/revisions/4/checks"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        seen = httpx.get(checks_url, headers=auth)
        if seen.status_code == 200 and seen.json()["checks_state"] != "pending":
            break
        time.sleep(0.5)
    assert seen.json()["state"] == "pending" and seen.json()["review"]["state"] == "pending"
    time.sleep(1)
    assert job.poll() is None  # still waiting for the approval
    r = httpx.post(
        f"{server.url}/api/v1/projects/alice/counter/revisions/4/review",
        json={"verdict": "request_changes", "comment": "rename the port"},
        headers=auth,
    )
    assert r.status_code == 200, r.text
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 1, stderr
    assert "changes were requested by alice" in stderr

    # bob's project, which alice may not write: 3, with the server's words
    hwrepo(home, "login", "--server", server.url, "--token", bob)
    made = hwrepo(
        home, "push", str(counter), "-p", "bob/board", "--create", "--licence", "MIT", "--private"
    )
    assert made.returncode == 0, made.stderr
    refused = hwrepo(home, "push", str(counter), "-p", "bob/board", HWREPO_TOKEN=token)
    assert refused.returncode == 3
    assert "does not exist, or is private" in refused.stderr
    empty = tmp_path / "empty"
    (empty / ".git").mkdir(parents=True)
    (empty / ".git" / "HEAD").write_text("ref\n")
    nothing = hwrepo(home, "push", str(empty), "-p", "bob/board")
    assert nothing.returncode == 3 and "nothing to push" in nothing.stderr
    unreachable = hwrepo(home, "whoami", HWREPO_SERVER="http://127.0.0.1:9")
    assert unreachable.returncode == 3 and "cannot reach the hwrepo server" in unreachable.stderr


def _events(url: str, headers: dict[str, str], n: int) -> list[tuple[str, str, dict[str, Any]]]:
    got: list[tuple[str, str, dict[str, Any]]] = []
    with (
        httpx.Client(timeout=httpx.Timeout(20.0)) as http,
        connect_sse(http, "GET", url, headers=headers) as source,
    ):
        assert source.response.status_code == 200, source.response.read()
        for sse in source.iter_sse():
            got.append((sse.id, sse.event, json.loads(sse.data)))
            if len(got) == n:
                break
    return got


def test_the_event_stream_resumes_exactly_and_hides_private_projects(
    server: Server, tmp_path: Path
) -> None:
    users.create_user(server.backends, "alice")
    token = users.create_token(server.backends, "alice", "t")
    users.create_user(server.backends, "carol")
    outsider = users.create_token(server.backends, "carol", "t")
    auth = {"Authorization": f"Bearer {token}"}
    api = f"{server.url}/api/v1/projects"
    body = {"name": "secret", "kind": "hardware", "licence": "MIT", "visibility": "private"}
    assert httpx.post(api, json=body, headers=auth).status_code == 201
    files = [("files", ("rtl/top.v", b"module top; endmodule\n"))]
    r = httpx.post(f"{api}/alice/secret/revisions", files=files, headers=auth)
    assert r.status_code == 201, r.text

    stream = f"{api}/alice/secret/events?revision=1"
    first = _events(stream, auth, 4)
    assert first[0][1] == "revision.created"
    assert [int(i) for i, _, _ in first] == sorted(int(i) for i, _, _ in first)
    assert all(e["project"] == "alice/secret" and e["revision"] == 1 for _, _, e in first)
    resumed = _events(stream, {**auth, "Last-Event-ID": first[1][0]}, 2)
    assert [i for i, _, _ in resumed] == [first[2][0], first[3][0]]  # nothing missed or repeated
    assert [e["id"] for _, _, e in resumed] == [first[2][2]["id"], first[3][2]["id"]]

    for who in ({}, {"Authorization": f"Bearer {outsider}"}):
        hidden = httpx.get(stream, headers=who, timeout=10)
        assert hidden.status_code == 404
        assert hidden.headers["content-type"].startswith("application/problem+json")
    assert os.environ.get("HWREPO_SERVER") is None
