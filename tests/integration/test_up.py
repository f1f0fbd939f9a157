"""`hwrepo up` end to end, as a user runs it: a subprocess with every embedded port moved to a free
one, the URL printed only once /readyz answers 200, the demo catalogue published on the first
start only, Ctrl-C stopping every child, and a second instance on the same ports refused with a
message naming the port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from hwrepo.config import EmbeddedPorts
from hwrepo.entrypoints import embedded
from tests.integration.helpers import clean_env

HWREPO = Path(sys.executable).parent / "hwrepo"  # the command of the environment running the tests
CATALOGUE = Path(__file__).resolve().parents[2] / "designs" / "catalogue.toml"


def _demo_projects() -> list[str]:
    with CATALOGUE.open("rb") as fh:
        return sorted(f"demo/{entry['name']}" for entry in tomllib.load(fh)["project"])


class Up:
    """One `hwrepo up` process; its output is collected by a thread."""

    def __init__(self, data_dir: Path, port: int, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.url: str | None = None
        self.ready_when_printed: tuple[int, str] | None = None  # /readyz as the URL appeared
        self._running = threading.Event()
        self.process = subprocess.Popen(
            [str(HWREPO), "up", "--data-dir", str(data_dir), "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("hwrepo is running: "):
                url = line.split()[3].rstrip("/")
                try:  # at once, before anything else
                    self.ready_when_printed = _get(f"{url}/readyz")
                except OSError as exc:
                    self.ready_when_printed = (0, f"no answer: {exc}")
                self.url = url
                self._running.set()
        self._running.set()  # it ended

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_running(self, timeout: float = 90) -> str:
        assert self._running.wait(timeout), f"not running after {timeout} s:\n{self.output}"
        assert self.url is not None, f"hwrepo up ended early:\n{self.output}"
        return self.url

    def interrupt(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        """After a failed test: stop it anyway (its children get SIGTERM when it dies)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _assert_ready(readyz: tuple[int, str] | None) -> None:
    """/readyz, asked the moment the URL was printed, was 200 with every part reachable."""
    assert readyz is not None
    status, body = readyz
    assert status == 200, body
    assert json.loads(body) == {
        "status": "ready",
        "checks": {"s3": "ok", "nats": "ok", "database": "ok"},
    }


def _get_json(url: str) -> Any:
    status, body = _get(url)
    assert status == 200, body
    return json.loads(body)


# -- processes -----------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time) of a process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], fields[19]


def _mentions(pid: int, needle: bytes) -> bool:
    for name in ("cmdline", "environ"):
        try:
            if needle in Path(f"/proc/{pid}/{name}").read_bytes():
                return True
        except OSError:
            continue
    return False


def _processes_of(root: int, data_dir: Path) -> dict[int, str]:
    """Every descendant of `root`, and every process naming `data_dir` in its command line or
    environment (which catches one that was re-parented): pid -> start time."""
    stats = {int(p.name): _stat(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()}
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        if stat is not None:
            children.setdefault(stat[0], []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    needle = str(data_dir).encode()
    found |= {pid for pid in stats if pid != root and _mentions(pid, needle)}
    return {pid: stat[2] for pid in found if (stat := stats.get(pid)) is not None}


def _survivors(processes: dict[int, str]) -> list[str]:
    alive = []
    for pid, started in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[2] == started and stat[1] != "Z":
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            alive.append(f"{pid}: {cmdline.decode(errors='replace')[:200]}")
    return alive


def _names(processes: dict[int, str]) -> str:
    names = []
    for pid in processes:
        try:
            names.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return "\n".join(names)


# -- the test ------------------------------------------------------------------------------------


@pytest.fixture
def up_env() -> tuple[dict[str, str], int]:
    """An environment moving every embedded port to a free one, and a free API port."""
    names = list(EmbeddedPorts.model_fields)
    ports = embedded.free_ports(len(names) + 1)
    env = clean_env(
        **{f"HWREPO_EMBEDDED__{n.upper()}": str(p) for n, p in zip(names, ports, strict=False)}
    )
    return env, ports[-1]


def test_hwrepo_up_runs_seeds_once_stops_cleanly_and_refuses_busy_ports(
    tmp_path: Path, up_env: tuple[dict[str, str], int]
) -> None:
    env, port = up_env
    data_dir = tmp_path / "data"
    demo = _demo_projects()
    assert len(demo) >= 3

    first = Up(data_dir, port, env)
    try:
        url = first.wait_running()
        assert url == f"http://127.0.0.1:{port}"
        assert f"published {len(demo)} demo project(s) from designs/" in first.output
        _assert_ready(first.ready_when_printed)
        status, page = _get(f"{url}/")
        assert status == 200
        for name in demo:
            assert f'href="/{name}"' in page, name
        listed = _get_json(f"{url}/api/v1/projects?per_page=100")
        assert sorted(p["full_name"] for p in listed["items"]) == demo
        assert listed["total"] == len(demo)
        # hardware and software side by side: the board lists its firmware, whose own CI's
        # report is there (and required)
        board = _get_json(f"{url}/api/v1/projects/demo/clean-led")
        assert {"project": "demo/firmware-blink", "relation": "firmware"} in board["linked_from"]
        firmware = _get_json(f"{url}/api/v1/projects/demo/firmware-blink/revisions/1/checks")
        assert firmware["required"] == ["firmware-ci"] and firmware["missing_required"] == []
        assert [(c["kind"], c["name"], c["state"]) for c in firmware["checks"]] == [
            ("external", "firmware-ci", "passed")
        ]

        processes = _processes_of(first.process.pid, data_dir)
        names = _names(processes)
        for child in ("nats-server", "weed mini", "hwrepo.entrypoints.cli api"):
            assert child in names, f"{child} not among the children:\n{names}"

        started = time.monotonic()
        assert first.interrupt(timeout=30) == 0, first.output
        assert time.monotonic() - started < 30
        assert "stopping nats-server" in first.output
        assert not _survivors(processes), _survivors(processes)
        assert not _survivors(_processes_of(first.process.pid, data_dir))
    finally:
        first.kill()

    # Again on the same data directory: the data is there, the demo is not published twice.
    # (Without a worker this time: the queued demo checks would only cost time here.)
    env = {**env, "HWREPO_WORKERS": "0"}
    second = Up(data_dir, port, env)
    try:
        url = second.wait_running()
        _assert_ready(second.ready_when_printed)
        assert "published" not in second.output
        listed = _get_json(f"{url}/api/v1/projects?per_page=100&owner=demo")
        assert sorted(p["full_name"] for p in listed["items"]) == demo
        for name in demo:
            assert _get_json(f"{url}/api/v1/projects/{name}/revisions")["total"] == 1, name

        # A second instance on the same ports is refused, and leaves the first one running.
        third = subprocess.run(
            [str(HWREPO), "up", "--data-dir", str(tmp_path / "other"), "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert third.returncode != 0
        assert f" {port} (API)" in third.stderr, third.stderr
        assert "already in use" in third.stderr
        assert f"{env['HWREPO_EMBEDDED__NATS']} (embedded NATS)" in third.stderr
        assert "Traceback" not in third.stderr + third.stdout
        assert _get(f"{url}/readyz")[0] == 200

        processes = _processes_of(second.process.pid, data_dir)
        assert second.interrupt(timeout=30) == 0, second.output
        assert not _survivors(processes), _survivors(processes)
    finally:
        second.kill()
    assert os.listdir(data_dir / "logs")
