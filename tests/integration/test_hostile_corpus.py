"""Designs that try to read what is outside their revision, through the whole stack (API, NATS,
planner, workers, S3): a secret written before they run, outside any workspace, in /etc, in
the worker's data and cache directories and in its environment, must appear in no event, no
check record, no artifact and no log, and every check that tried must end failed or errored
with a message naming what it tried.

The ways tried: an absolute and a climbing `` `include ``, `$readmemh` of a host file, a
testbench opening host files, the worker's environment and /proc/1/environ, KiCad library tables
pointing at host libraries (which hold the secret), a 3D model path outside the revision.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hwrepo.adapters import eventbus
from hwrepo.checks.kicad.kind import unavailable
from hwrepo.checks.rtl.lint import RtlLint
from hwrepo.checks.simulation.kind import SimulationKind
from hwrepo.config import Settings
from hwrepo.domain.events import EVENTS_STREAM
from hwrepo.service_layer.backends import Backends
from tests.conftest import make_actor
from tests.integration.test_pipeline import SIM_CACHE, _project
from tests.pipeline import pipeline_stack, running_worker, upload_dir, wait_for_checks

pytestmark = pytest.mark.needs(
    unavailable() or SimulationKind().available() or RtlLint().available()
)

DESIGNS = Path(__file__).resolve().parents[2] / "designs"
SECRET = secrets.token_hex(16)  # hex digits, so that $readmemh could carry it too
TAG = secrets.token_hex(4)


@pytest.fixture
def markers(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    """The secret, where a hostile design would look for it."""
    tmp = Path(tempfile.gettempdir())
    places = {
        "tmp": tmp / f"hwrepo-secret-{TAG}.txt",
        "hex": tmp / f"hwrepo-secret-{TAG}.hex",
        "etc": Path("/etc") / f"hwrepo-secret-{TAG}.conf",
        "data": settings.data_dir / "secret-marker.txt",
        "cache": SIM_CACHE / f"secret-marker-{TAG}.txt",
        "symbols": tmp / f"hwrepo-secret-{TAG}.kicad_sym",
        "footprints": tmp / f"hwrepo-secret-{TAG}.pretty",
        "model": tmp / f"hwrepo-secret-{TAG}.step",
    }
    for name, path in places.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if name == "footprints":
            path.mkdir()
            (path / "Secret.kicad_mod").write_text(
                f'(footprint "Secret" (layer "F.Cu") (descr "{SECRET}"))\n'
            )
        elif name == "symbols":
            path.write_text(
                "(kicad_symbol_lib (version 20231120) (generator x)\n"
                f'  (symbol "Secret" (property "Reference" "{SECRET}" (at 0 0 0))))\n'
            )
        else:
            path.write_text(SECRET + "\n")
    monkeypatch.setenv("HWREPO_MARKER_SECRET", SECRET)
    try:
        yield places
    finally:
        for path in places.values():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def rtl_reaching_out(root: Path, m: dict[str, Path]) -> Path:
    climb = "../" * 12 + str(m["tmp"]).lstrip("/")
    return write(
        root,
        {
            "rtl/leak.v": (
                f'`include "{m["tmp"]}"\n'
                "module leak(input wire clk, output wire [127:0] q);\n"
                "  reg [127:0] mem [0:0];\n"
                f'  initial $readmemh("{m["hex"]}", mem);\n'
                "  assign q = mem[0];\n"
                "endmodule\n"
            ),
            "rtl/climb.v": f'`include "{climb}"\nmodule climb; endmodule\n',
            "tests/test_leak.py": (
                "import cocotb\n\n@cocotb.test()\nasync def test_q(dut):\n"
                "    dut._log.info('q = %s', dut.q.value)\n"
            ),
        },
    )


NOSY_TESTBENCH = """\
import os
import cocotb

PLACES = {places!r}


@cocotb.test()
async def test_read_host_files(dut):
    for path in PLACES:
        dut._log.info("read %s: %s", path, open(path).read())


@cocotb.test()
async def test_read_the_workers_environment(dut):
    dut._log.info("environment: %s", os.environ["HWREPO_MARKER_SECRET"])


@cocotb.test()
async def test_read_init_environment(dut):
    environ = open("/proc/1/environ", "rb").read()
    dut._log.info("init environment: %s", environ)
    assert b"HWREPO_MARKER_SECRET" in environ, "the worker's environment is not here"
"""


def nosy_testbench(root: Path, m: dict[str, Path]) -> Path:
    places = [str(m[k]) for k in ("tmp", "etc", "data", "cache")]
    shutil.copytree(DESIGNS / "rtl-counter", root)
    (root / "tests" / "test_counter.py").unlink()
    return write(root, {"tests/test_counter.py": NOSY_TESTBENCH.format(places=places)})


def board_reaching_out(root: Path, m: dict[str, Path]) -> Path:
    shutil.copytree(DESIGNS / "kicad-clean", root)
    board = root / "clean-led.kicad_pcb"
    text = board.read_text()
    first = text.index("(footprint ")
    end = text.index("\n", first)
    board.write_text(text[: end + 1] + f'\t\t(model "{m["model"]}")\n' + text[end + 1 :])
    return write(
        root,
        {
            "sym-lib-table": (
                "(sym_lib_table (version 7)\n"
                f'  (lib (name "Secret")(type "KiCad")(uri "{m["symbols"]}")(options "")'
                '(descr ""))\n'
                ")\n"
            ),
            "fp-lib-table": (
                "(fp_lib_table (version 7)\n"
                f'  (lib (name "Secret")(type "KiCad")(uri "{m["footprints"]}")(options "")'
                '(descr ""))\n'
                '  (lib (name "Home")(type "KiCad")(uri "${HOME}/footprints")(options "")'
                '(descr ""))\n'
                ")\n"
            ),
        },
    )


async def _all_events(settings: Settings) -> list[bytes]:
    nc = await eventbus.connect(settings, name="hostile-corpus")
    try:
        js = nc.jetstream()
        info = await js.stream_info(EVENTS_STREAM)
        sub = await js.pull_subscribe(">", stream=EVENTS_STREAM)
        seen: list[bytes] = []
        while len(seen) < info.state.messages:
            for msg in await sub.fetch(100, timeout=5):
                seen.append(msg.data)
                await msg.ack()
        return seen
    finally:
        await nc.close()


def _everything_stored(backends: Backends) -> dict[str, bytes]:
    return {key: backends.store.get_bytes(key) or b"" for key in backends.store.list_keys("")}


def test_designs_reaching_outside_their_revision_see_nothing_and_say_why(
    stack: tuple[Settings, Backends, TestClient], markers: dict[str, Path], tmp_path: Path
) -> None:
    settings, backends, client = stack
    settings = settings.model_copy(update={"worker_cache_dir": SIM_CACHE})
    alice = make_actor(backends, "alice")
    project = _project(client, alice, "reaching-out")
    revisions = {
        "rtl": rtl_reaching_out(tmp_path / "rtl", markers),
        "testbench": nosy_testbench(tmp_path / "tb", markers),
        "board": board_reaching_out(tmp_path / "board", markers),
    }
    results: dict[str, dict[str, Any]] = {}
    with running_worker(settings, concurrency=2, cancel_superseded=False) as worker:
        numbers = {
            what: upload_dir(client, alice.headers, project, root)["number"]
            for what, root in revisions.items()
        }
        for what, number in numbers.items():
            results[what] = wait_for_checks(client, project, number, timeout_s=600)
        assert worker.nc is not None and worker.nc.is_connected  # the worker is still serving

    def check(what: str, kind: str) -> dict[str, Any]:
        found = [c for c in results[what]["checks"] if c["kind"] == kind]
        assert len(found) == 1, (what, kind, results[what]["checks"])
        return client.get(found[0]["url"]).json()

    outside = "outside the revision"
    lint = check("rtl", "rtl-lint")
    assert lint["state"] == "failed"
    described = [v["description"] for v in lint["details"]["violations"]]
    assert f"include outside the revision: {markers['tmp']}" in described
    assert f"$readmemh file outside the revision: {markers['hex']}" in described
    assert any(d.startswith("include outside the revision: ../") for d in described)
    structure = check("rtl", "rtl-structure")
    assert structure["state"] == "failed" and outside in structure["summary"]
    simulation = check("rtl", "simulation")
    assert simulation["state"] == "errored"
    assert (
        f"include outside the revision: {markers['tmp']} (rtl/leak.v:1)"
        in (simulation["details"]["message"])
    )

    nosy = check("testbench", "simulation")
    assert nosy["state"] == "failed", nosy["summary"]
    tests = {t["name"]: t for t in nosy["details"]["tests"]}
    assert set(tests) == {
        "test_read_host_files",
        "test_read_the_workers_environment",
        "test_read_init_environment",
    }
    assert all(t["status"] == "failed" for t in tests.values())
    assert "No such file or directory" in tests["test_read_host_files"]["message"]
    assert "KeyError" in tests["test_read_the_workers_environment"]["message"]

    for kind, table in (("drc", "fp-lib-table"), ("erc", "sym-lib-table")):
        board = check("board", kind)
        assert board["state"] == "failed", (kind, board["summary"])
        mine = [v for v in board["details"]["violations"] if v["type"] == "path_outside_revision"]
        assert mine and all(v["description"].startswith(f"{table}: ") for v in mine), mine
        assert all(outside in v["description"] for v in mine)
    drc = check("board", "drc")
    assert any("${HOME}" in v["description"] for v in drc["details"]["violations"])
    render = check("board", "render")
    assert render["state"] == "errored" and outside in render["summary"]
    failures = " ".join(f["message"] for f in render["details"]["failed"])
    assert str(markers["model"]) in failures and str(markers["symbols"]) in failures

    # The secret is nowhere: not in the bucket (results, logs, artifacts, records), not in any
    # event, not in what the API serves.
    leaks = [key for key, data in _everything_stored(backends).items() if SECRET.encode() in data]
    assert leaks == []
    events = asyncio.run(_all_events(settings))
    assert len(events) > 20 and not any(SECRET.encode() in e for e in events)
    for what, body in results.items():
        assert SECRET not in json.dumps(body), what
        for c in body["checks"]:
            served = client.get(c["url"]).text + client.get(c["url"] + "/log").text
            assert SECRET not in served, (what, c["name"])
    assert os.environ["HWREPO_MARKER_SECRET"] == SECRET  # it was there for the taking
    # and other users of the machine cannot read the data directory either
    assert settings.data_dir.stat().st_mode & 0o777 == 0o700


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, Backends, TestClient]]:
    with pipeline_stack(settings, tmp_path) as parts:
        yield parts
