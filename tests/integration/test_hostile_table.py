"""The whole bad-input corpus through the real stack (API, S3, NATS, planner, one worker), each
input as a person or a CI job would send it, and what became of it: the upload refused (with
the problem's words) or the revision's checks and how they ended, and whether the worker still
served afterwards. The table is docs/reliability.md: this test regenerates it when
HWREPO_WRITE_RELIABILITY=1 and otherwise insists that the committed file says what it saw."""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hwrepo.checks.kicad.kind import unavailable
from hwrepo.checks.simulation.kind import SimulationKind
from hwrepo.config import Settings
from hwrepo.entrypoints.worker import Worker
from hwrepo.service_layer.backends import Backends
from tests.conftest import Actor, make_actor
from tests.hostile import (
    ENDLESS_LOOP,
    FORK_LOOP,
    HEADER,
    HUGE_ALLOCATION,
    SHORT,
    dup_zip,
    good,
    tar_member,
)
from tests.integration.helpers import make_tar, make_zip, revision_total, upload, zip_symlink
from tests.integration.test_pipeline import SIM_CACHE
from tests.pipeline import new_project, pipeline_stack, running_worker, wait_for_checks

pytestmark = [
    pytest.mark.needs(unavailable()),
    pytest.mark.needs(SimulationKind().available()),
]

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "reliability.md"
COUNTER = REPO / "designs" / "rtl-counter"
TOP_V = b"module top; endmodule\n"

SOCKETS = (
    "import socket\n\n"
    "@cocotb.test()\nasync def test_loopback(dut):\n"
    "    socket.create_connection(('127.0.0.1', 4222), timeout=3).close()\n"
)
SECRETS = (
    "@cocotb.test()\nasync def test_environment(dut):\n"
    "    dut._log.info(os.environ['HWREPO_S3_SECRET_KEY'])\n\n"
    "@cocotb.test()\nasync def test_init_environment(dut):\n"
    "    assert b'HWREPO' in open('/proc/1/environ', 'rb').read(), 'not the worker'\n"
)
HUGE_LOG = (
    "@cocotb.test()\nasync def test_chatty(dut):\n"
    "    for i in range(400_000):\n        print('line', i, 'x' * 100)\n"
)
HUGE_FILE = (
    "@cocotb.test()\nasync def test_huge_waveform(dut):\n"
    "    with open('waves.vcd', 'wb') as f:\n"
    "        for _ in range(4096):\n            f.write(bytes(1024 * 1024))\n"
)


@dataclass
class Case:
    """One input: an upload (files and archives) and what should become of it."""

    what: str
    files: dict[str, bytes] = field(default_factory=dict)
    archives: list[tuple[str, bytes]] = field(default_factory=list)
    expected: str = "refused (422)"  # or the state of the revision's checks
    kinds: dict[str, str] = field(default_factory=dict)  # check kind -> its expected state


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def counter_with(tests: str, manifest: str = "") -> dict[str, bytes]:
    """designs/rtl-counter with this test module."""
    files = _tree(COUNTER)
    files["tests/test_counter.py"] = (HEADER + tests).encode()
    if manifest:
        files["hwrepo.toml"] = manifest.encode()
    return files


def corpus() -> list[Case]:
    zeros = bytes(4 * 1024 * 1024)  # compresses about a thousand times: a bomb
    tarred = make_tar([good("t"), ("rtl/top.v", TOP_V)])
    return [
        Case(
            "zip member climbing out (../evil)",
            archives=[("a.zip", make_zip([good("1"), ("../evil", b"x")]))],
        ),
        Case(
            "tar member with an absolute path",
            archives=[("a.tar", make_tar([good("2"), ("/etc/passwd", b"x")]))],
        ),
        Case(
            "zip symbolic link to /etc/passwd",
            archives=[("a.zip", make_zip([good("3"), zip_symlink("link", "/etc/passwd")]))],
        ),
        Case(
            "tar hard link",
            archives=[
                ("a.tar", make_tar([good("4"), tar_member("hard", tarfile.LNKTYPE, "good-4.txt")]))
            ],
        ),
        Case(
            "tar device file",
            archives=[("a.tar", make_tar([good("5"), tar_member("dev/null", tarfile.CHRTYPE)]))],
        ),
        Case(
            "zip bomb (4 MiB of zeros)",
            archives=[("bomb.zip", make_zip([good("6"), ("zeros.bin", zeros)]))],
        ),
        Case(
            "zip holding one name twice",
            archives=[("dup.zip", dup_zip([good("7"), ("top.v", b"one"), ("top.v", b"two")]))],
        ),
        Case(
            "right-to-left override (U+202E) in a name",
            archives=[("rlo.zip", make_zip([good("8"), ("evil\u202etxt.exe", b"x")]))],
        ),
        Case(
            "bytes after the end of a tar",
            archives=[("tail.tar", tarred + b"a payload no tool lists")],
        ),
        Case("plain file climbing out (../evil.v)", files={"../evil.v": b"x"}),
        Case(
            "malformed KiCad board and schematic",
            files={
                "board/bad.kicad_pcb": b'(kicad_pcb (version 20240108) (footprint "R" (at',
                "board/bad.kicad_sch": b"(kicad_sch (version 20231120) (symbol",
                "board/bad.kicad_pro": b"{not json",
            },
            expected="failure",
        ),
        Case(
            "not Verilog in a .v file",
            files={"rtl/top.v": b"This is a shopping list, not Verilog.\nmilk\neggs\n"},
            expected="failure",
        ),
        Case(
            "invalid hwrepo.toml",
            files={"rtl/top.v": TOP_V, "hwrepo.toml": b"[[testbench]\nmodules = [\n"},
            expected="failure",
        ),
        Case(
            "testbench: endless loop",
            files=counter_with(ENDLESS_LOOP, SHORT.format(timeout=8)),
            expected="failure",
        ),
        Case(
            "testbench: fork loop",
            files=counter_with(FORK_LOOP, SHORT.format(timeout=120)),
            expected="failure",
        ),
        Case(
            "testbench: 10 GiB allocation", files=counter_with(HUGE_ALLOCATION), expected="failure"
        ),
        Case("testbench: socket to the NATS port", files=counter_with(SOCKETS), expected="failure"),
        Case(
            "testbench: reading the worker's secrets",
            files=counter_with(SECRETS),
            expected="failure",
        ),
        Case("testbench: 40 MB of log", files=counter_with(HUGE_LOG), expected="success"),
        Case(
            "testbench: a 4 GiB waveform file",
            files=counter_with(HUGE_FILE, SHORT.format(timeout=120)),
            expected="failure",
        ),
    ]


# -- running it -----------------------------------------------------------------------------------

_VOLATILE = [
    (re.compile(r"/tmp/[\w./-]+"), "/tmp/…"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f-]{27,}\b"), "…"),
    (re.compile(r"\d+(\.\d+)? s\b"), "N s"),
    (re.compile(r"\b\d{5,}\b"), "N"),
]


def _plain(text: str, limit: int = 160) -> str:
    """One table cell: one line, no volatile numbers or paths, no pipe."""
    text = " ".join(text.split()).replace("|", "\\|")
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _serving(worker: Worker) -> bool:
    return worker.nc is not None and worker.nc.is_connected


def _check_messages(client: TestClient, actor: Actor, checks: list[dict[str, object]]) -> str:
    parts = []
    # What did not pass says what happened; when everything passed, all of it.
    shown = [c for c in checks if c["state"] != "passed"] or checks
    for c in sorted(shown, key=lambda c: (str(c["kind"]), str(c["name"]))):
        detail = client.get(str(c["url"]), headers=actor.headers).json()
        message = str(detail.get("summary") or "")
        tests = (detail.get("details") or {}).get("tests") or []
        failing = [t for t in tests if t.get("status") != "passed" and t.get("message")]
        if failing:
            message += f" — {failing[0]['name']}: {failing[0]['message'].splitlines()[0]}"
        parts.append(f"{c['kind']} {c['state']}: {message}")
    return "; ".join(parts)


def run_corpus(
    client: TestClient, actor: Actor, worker: Worker, cases: list[Case]
) -> list[tuple[str, str, str, str]]:
    rows = []
    uploaded: list[tuple[Case, str, int]] = []
    for n, case in enumerate(cases):
        project = new_project(client, actor.headers, f"hostile-{n}")
        r = upload(client, actor, project, case.files, archives=case.archives)
        if r.status_code == 201:
            uploaded.append((case, project, r.json()["number"]))
            continue
        body = r.json()
        state = f"refused ({r.status_code})"
        assert revision_total(client, actor, project) == 0, case.what
        rows.append((case.what, state, _plain(body.get("detail", r.text)), case, _serving(worker)))
    for case, project, number in uploaded:
        result = wait_for_checks(client, project, number, timeout_s=300, headers=actor.headers)
        message = _check_messages(client, actor, result["checks"])
        if result.get("plan_errors"):
            message = "; ".join(result["plan_errors"]) + (f"; {message}" if message else "")
        rows.append((case.what, result["state"], _plain(message, 400), case, _serving(worker)))
    order = {case.what: i for i, case in enumerate(cases)}
    rows.sort(key=lambda row: order[row[0]])
    table = []
    for what, state, message, case, alive in rows:
        assert state == case.expected, (what, state, message)
        assert alive, f"the worker stopped serving after {what!r}"
        table.append((what, state, message, "yes" if alive else "no"))
    return table


def render(rows: list[tuple[str, str, str, str]]) -> str:
    lines = [
        "# Reliability: what hostile input does",
        "",
        "Each row is one upload through the real stack (API, S3, NATS JetStream, the planner and",
        "one worker), the state it ended in, the words a person gets back (an upload's problem",
        "detail, or each check's summary and the first failing test's message), and whether the",
        "worker was still serving afterwards. Nothing of a refused upload is stored.",
        "",
        "Made by `HWREPO_WRITE_RELIABILITY=1 .venv/bin/pytest",
        "tests/integration/test_hostile_table.py`; without the variable the same test fails when",
        "this file no longer says what happens.",
        "",
        "| input | expected state | message | worker alive |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {what} | {state} | {message} | {alive} |" for what, state, message, alive in rows]
    return "\n".join(lines) + "\n"


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, Backends, TestClient]]:
    tuned = settings.model_copy(update={"worker_cache_dir": SIM_CACHE})
    with pipeline_stack(tuned, tmp_path) as parts:
        yield parts


def test_the_hostile_input_table(stack: tuple[Settings, Backends, TestClient]) -> None:
    settings, backends, client = stack
    alice = make_actor(backends, "alice")
    with running_worker(settings, concurrency=2, cancel_superseded=False) as worker:
        rows = run_corpus(client, alice, worker, corpus())
        # and a good design after all of it is checked as usual
        canary = new_project(client, alice.headers, "canary")
        r = upload(
            client, alice, canary, counter_with("@cocotb.test()\nasync def t(dut):\n    pass\n")
        )
        assert r.status_code == 201, r.text
        assert wait_for_checks(client, canary, 1, headers=alice.headers)["state"] == "success"
    text = render(rows)
    if os.environ.get("HWREPO_WRITE_RELIABILITY") == "1":
        DOC.write_text(text)
    assert DOC.exists() and DOC.read_text() == text, (
        "docs/reliability.md does not say what the corpus does now: run this test with "
        "HWREPO_WRITE_RELIABILITY=1 and commit the file\n" + text
    )
