"""The `simulation` kind end to end, on the real tools: cocotb 2.1 (and 1.9) environments built
with pip, Icarus Verilog and Verilator models built and tests run in the bubblewrap sandbox.

Python environments are shared by the whole session and kept between runs under
$HWREPO_TEST_CACHE (default /tmp/hwrepo-test-cache)/simulation/envs: they are keyed by their
content (cocotb release, requirements, Python version), so reusing them is what a worker does.
Models are cached there too, except in the tests about the model cache, which start empty.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from hwrepo.checks.core.kind import CheckResult, PlannedJob
from hwrepo.checks.core.local import LocalRevision
from hwrepo.checks.run.installed import verilator_root
from hwrepo.checks.run.runner import Sandbox
from hwrepo.checks.run.sandbox import SYSTEM_PATH
from hwrepo.checks.simulation.environments import verilator_fst_supported
from hwrepo.checks.simulation.kind import SimulationKind
from tests.hostile import ENDLESS_LOOP, FORK_LOOP, HEADER, HUGE_ALLOCATION, SHORT

REPO = Path(__file__).resolve().parents[2]
DESIGNS = REPO / "designs"
KIND = SimulationKind()

pytestmark = pytest.mark.needs(KIND.available())
needs_verilator = pytest.mark.needs("no pip Verilator" if verilator_root() is None else None)

COUNTER_TESTS = [
    ("test_reset_clears_count", 75.0),
    ("test_counts_when_enabled", 215.0),
    ("test_holds_when_disabled", 235.0),
    ("test_wrap_pulse", 5175.0),
]
FIFO_TESTS = {
    "test_single_frame_passthrough": "passed",
    "test_frames_keep_order_and_boundaries": "passed",
    "test_backpressure_fills_fifo": "passed",
    "test_full_throughput": "passed",
    "test_reset_flushes_contents": "passed",
    "test_known_failure_wrong_expected_order": "failed",
}


# -- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def shared_cache() -> Path:
    root = Path(os.environ.get("HWREPO_TEST_CACHE", "/tmp/hwrepo-test-cache")) / "simulation"
    (root / "envs").mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture
def fresh_cache(tmp_path: Path, shared_cache: Path) -> Path:
    """A cache with no models, sharing the session's Python environments."""
    cache = tmp_path / "fresh-cache"
    cache.mkdir()
    (cache / "envs").symlink_to(shared_cache / "envs")
    return cache


def copy_design(name: str, target: Path, manifest: str | None = None) -> Path:
    shutil.copytree(DESIGNS / name, target, ignore=shutil.ignore_patterns("__pycache__"))
    if manifest is not None:
        (target / "hwrepo.toml").write_text(manifest, encoding="utf-8")
    return target


def run_all(root: Path, cache: Path, work: Path) -> list[tuple[PlannedJob, CheckResult]]:
    """Plan the revision at `root` and run every job, as a worker would."""
    revision = LocalRevision(root)
    done = []
    for n, planned in enumerate(KIND.plan(revision)):
        assert planned.error is None, planned.error
        job = revision.job(planned, KIND.name, check_id=f"check-{n}")
        ws = revision.workspace(job, work / f"ws-{n}-{time.monotonic_ns()}", cache)
        done.append((planned, KIND.run(job, ws, Sandbox(ws))))
    return done


def run_one(root: Path, cache: Path, work: Path) -> CheckResult:
    results = run_all(root, cache, work)
    assert len(results) == 1, [p.name for p, _ in results]
    return results[0][1]


def verdicts(result: CheckResult) -> dict[str, str]:
    return {t["name"]: t["status"] for t in result.details["tests"]}


def artifact_names(result: CheckResult) -> set[str]:
    return {a.name for a in result.artifacts}


def check_waves(result: CheckResult, simulator: str) -> None:
    expected = (
        "waves.vcd" if simulator == "verilator" and not verilator_fst_supported() else ("waves.fst")
    )
    assert result.details["waves"] == expected
    (waves,) = [a for a in result.artifacts if a.name == expected]
    data = waves.path.read_bytes()
    assert len(data) > 100
    if expected.endswith(".vcd"):
        assert b"$enddefinitions" in data
    else:
        assert data[0] == 0  # an FST file opens with its header block (type 0)


def bare_cocotb(
    python: Path, simulator: str, params: dict[str, object], design: Path, work: Path
) -> dict[str, str]:
    """The verdicts of cocotb's runner used directly, as the design's README does it."""
    script = r"""
import json, sys, xml.etree.ElementTree as ET
from cocotb_tools.runner import get_runner
a = json.loads(sys.argv[1])
runner = get_runner(a["sim"])
runner.build(sources=a["sources"], hdl_toplevel=a["top"], build_dir=a["build"],
             timescale=tuple(a["timescale"]) if a["timescale"] else None)
xml = runner.test(hdl_toplevel=a["top"], test_module=a["module"], test_dir=a["test_dir"],
                  build_dir=a["build"], results_xml=a["results"])
out = {}
for tc in ET.parse(xml).getroot().iter("testcase"):
    bad = tc.find("failure") is not None or tc.find("error") is not None
    out[tc.get("name")] = "failed" if bad else "passed"
print("VERDICTS " + json.dumps(out))
"""
    args = {
        "sim": simulator,
        "sources": [str(design / s) for s in params["sources"]],  # type: ignore[attr-defined]
        "top": params["toplevel"],
        "timescale": params["timescale"],
        "module": params["test_modules"][0],  # type: ignore[index]
        "test_dir": str(design / str(params["test_dir"])),
        "build": str(work / f"bare-{simulator}"),
        "results": str(work / f"bare-{simulator}.xml"),
    }
    env = {"PATH": f"{python.parent}:{SYSTEM_PATH}", "HOME": str(work), "LANG": "C.UTF-8"}
    out = subprocess.run(
        [str(python), "-c", script, json.dumps(args)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("VERDICTS ")]
    assert lines, out.stdout[-2000:] + out.stderr[-2000:]
    return dict(json.loads(lines[-1].split(" ", 1)[1]))


def env_python(cache: Path, result: CheckResult) -> Path:
    return cache / "envs" / result.details["environment"]["key"] / "bin" / "python"


def assert_still_serving(cache: Path, work: Path) -> None:
    """After a hostile job, an ordinary job runs normally on the same worker."""
    result = run_one(DESIGNS / "rtl-counter", cache, work / "after")
    assert result.state == "passed", result.summary
    assert result.summary == "4 passed (icarus)"


# -- the example designs ------------------------------------------------------------------------

BOTH_SIMULATORS = """\
[[testbench]]
modules = ["tests/{module}"]
simulators = ["icarus", "verilator"]
"""


@needs_verilator
def test_counter_passes_on_icarus_and_verilator_as_with_cocotb_alone(
    tmp_path: Path, shared_cache: Path
) -> None:
    design = copy_design(
        "rtl-counter", tmp_path / "rev", BOTH_SIMULATORS.format(module="test_counter.py")
    )
    results = run_all(design, shared_cache, tmp_path)
    assert [p.name for p, _ in results] == [
        "tests/test_counter.py · icarus",
        "tests/test_counter.py · verilator",
    ]
    for planned, result in results:
        simulator = planned.params["simulator"]
        assert result.state == "passed", (result.summary, result.details.get("message"))
        assert result.summary == f"4 passed ({simulator})"
        tests = result.details["tests"]
        assert [(t["name"], t["sim_time_ns"]) for t in tests] == COUNTER_TESTS
        for t in tests:
            assert t["status"] == "passed"
            assert t["simulator"] == simulator
            assert isinstance(t["seed"], int)
            assert t["wall_s"] is not None and t["wall_s"] < 5
        d = result.details
        assert d["counts"] == {"passed": 4, "failed": 0, "skipped": 0, "errored": 0}
        assert d["cocotb_version"] == "2.1.0"
        assert d["toplevel"] == "counter"
        assert d["detected"]["toplevel"] == "counter"
        assert d["detected"]["timescale"] == "1ns/1ps"
        assert d["simulator_version"].startswith(
            "Icarus Verilog" if simulator == "icarus" else "Verilator 5.48"
        )
        if simulator == "verilator":  # Verilator models are cached by what shapes them
            assert len(d["build"]["key"]) == 64
        else:  # an Icarus model is built and tested in the job's one sandboxed process
            assert d["build"]["cached"] is False and d["build"]["key"] is None
        assert d["sandbox"]["killed_reason"] is None
        assert {"log.txt", "results.xml"} <= artifact_names(result)
        check_waves(result, simulator)
        log = next(a for a in result.artifacts if a.name == "log.txt").path.read_text()
        assert "test_wrap_pulse" in log and "hwrepo-sim: testing test_counter" in log

    bare = bare_cocotb(
        env_python(shared_cache, results[0][1]), "icarus", results[0][0].params, design, tmp_path
    )
    assert bare == {name: "passed" for name, _ in COUNTER_TESTS}
    for _, result in results:
        assert verdicts(result) == bare


@needs_verilator
def test_axis_fifo_five_pass_one_fails_on_purpose_with_its_requirement_installed(
    tmp_path: Path, shared_cache: Path
) -> None:
    design = copy_design(
        "rtl-axis-fifo", tmp_path / "rev", BOTH_SIMULATORS.format(module="test_axis_fifo.py")
    )
    results = run_all(design, shared_cache, tmp_path)
    assert len(results) == 2
    for planned, result in results:
        simulator = planned.params["simulator"]
        assert result.state == "failed", (result.summary, result.details.get("message"))
        assert result.summary == f"5 passed, 1 failed ({simulator})"
        assert verdicts(result) == FIFO_TESTS
        assert result.details["environment"]["requirements"] == ["cocotbext-axi"]
        assert result.details["detected"]["requirements_file"] == "tests/requirements.txt"
        (failure,) = [t for t in result.details["tests"] if t["status"] == "failed"]
        assert failure["message"].startswith("AssertionError: FIFO order is [b'AAAA', b'BBBB']")
        assert "assert received == [frame_b, frame_a]" in failure["traceback"]
        assert failure["sim_time_ns"] == 140.0
        check_waves(result, simulator)

    bare = bare_cocotb(
        env_python(shared_cache, results[0][1]), "icarus", results[0][0].params, design, tmp_path
    )
    assert bare == FIFO_TESTS
    for _, result in results:
        assert verdicts(result) == bare


def test_example_designs_as_detected_run_on_icarus(tmp_path: Path, shared_cache: Path) -> None:
    counter = run_one(DESIGNS / "rtl-counter", shared_cache, tmp_path)
    assert counter.state == "passed" and counter.summary == "4 passed (icarus)"
    fifo = run_one(DESIGNS / "rtl-axis-fifo", shared_cache, tmp_path)
    assert fifo.state == "failed" and fifo.summary == "5 passed, 1 failed (icarus)"
    assert fifo.details["detected"]["toplevel_reason"].startswith(
        "the only module no other module instantiates (text scan)"
    )


# -- the model cache ----------------------------------------------------------------------------

VERILATOR_ONLY = """\
[[testbench]]
modules = ["tests/test_counter.py"]
simulators = ["verilator"]
"""

EXTRA_TEST = '''

@cocotb.test()
async def test_added_in_revision_two(dut):
    """Only the testbench changes in revision 2."""
    await start_and_reset(dut)
    assert dut.count.value.to_unsigned() == 0
'''


@needs_verilator
def test_revision_changing_only_the_testbench_reuses_the_verilator_model(
    tmp_path: Path, fresh_cache: Path
) -> None:
    first_rev = copy_design("rtl-counter", tmp_path / "rev1", VERILATOR_ONLY)
    start = time.monotonic()
    first = run_one(first_rev, fresh_cache, tmp_path)
    first_s = time.monotonic() - start
    assert first.state == "passed", first.details.get("message")
    assert first.details["build"]["cached"] is False
    assert first.details["build"]["seconds"] > 2

    second_rev = copy_design("rtl-counter", tmp_path / "rev2", VERILATOR_ONLY)
    with (second_rev / "tests" / "test_counter.py").open("a", encoding="utf-8") as fh:
        fh.write(EXTRA_TEST)
    start = time.monotonic()
    second = run_one(second_rev, fresh_cache, tmp_path)
    second_s = time.monotonic() - start
    assert second.state == "passed", second.details.get("message")
    assert second.summary == "5 passed (verilator)"
    assert second.details["build"]["cached"] is True
    assert second.details["build"]["key"] == first.details["build"]["key"]
    assert second.details["build"]["seconds"] < 1
    assert second_s < first_s / 3, (first_s, second_s)
    assert [p.name for p in (fresh_cache / "verilator").iterdir() if p.is_dir()] == [
        first.details["build"]["key"]
    ]


@needs_verilator
def test_concurrent_jobs_build_one_model_once(tmp_path: Path, fresh_cache: Path) -> None:
    revision = LocalRevision(copy_design("rtl-counter", tmp_path / "rev", VERILATOR_ONLY))
    (planned,) = KIND.plan(revision)
    results: list[CheckResult] = []

    def work(n: int) -> None:
        job = revision.job(planned, KIND.name, check_id=f"c{n}")
        ws = revision.workspace(job, tmp_path / f"ws{n}", fresh_cache)
        results.append(KIND.run(job, ws, Sandbox(ws)))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.state for r in results] == ["passed"] * 3
    assert sorted(r.details["build"]["cached"] for r in results) == [False, True, True]
    assert len({r.details["build"]["key"] for r in results}) == 1
    builds = [p for p in (fresh_cache / "verilator").iterdir() if p.is_dir()]
    assert len(builds) == 1  # no temporary build directory left behind


# -- no verdict is never "passed" ----------------------------------------------------------------


def scratch_design(tmp_path: Path, tests: str, manifest: str = "", name: str = "rev") -> Path:
    """A copy of the counter with the given test module (tests/test_counter.py)."""
    design = copy_design("rtl-counter", tmp_path / name)
    (design / "tests" / "test_counter.py").write_text(HEADER + tests, encoding="utf-8")
    if manifest:
        (design / "hwrepo.toml").write_text(manifest, encoding="utf-8")
    return design


def test_failing_requirement_install_is_errored_with_pips_message(
    tmp_path: Path, shared_cache: Path
) -> None:
    design = scratch_design(tmp_path, "@cocotb.test()\nasync def test_x(dut):\n    pass\n")
    (design / "tests" / "requirements.txt").write_text("cocotbext-axi==0.0.1\n")
    result = run_one(design, shared_cache, tmp_path)
    assert result.state == "errored"
    message = result.details["message"]
    assert message.startswith("the Python environment could not be made: pip could not install")
    assert "No matching distribution found for cocotbext-axi==0.0.1" in message
    assert "log.txt" in artifact_names(result)


def test_testbench_that_cannot_be_imported_is_errored(tmp_path: Path, shared_cache: Path) -> None:
    tests = (
        "import cocotbext.not_installed_anywhere\n\n@cocotb.test()\nasync def t(dut):\n    pass\n"
    )
    result = run_one(scratch_design(tmp_path, tests), shared_cache, tmp_path)
    assert result.state == "errored"
    message = result.details["message"]
    first, hint = message.split("\n", 1)
    assert first == "the testbench could not run: ModuleNotFoundError: No module named 'cocotbext'"
    assert hint == result.details["hint"]
    assert "no package installed for the testbench provides 'cocotbext'" in hint
    assert result.details["tests"] == []


def test_zero_tests_is_errored(tmp_path: Path, shared_cache: Path) -> None:
    manifest = '[[testbench]]\nmodules = ["tests/test_counter.py"]\n'
    tests = "# no @cocotb.test here\nasync def not_a_test(dut):\n    pass\n"
    result = run_one(scratch_design(tmp_path, tests, manifest), shared_cache, tmp_path)
    assert result.state == "errored"
    assert result.details["message"].startswith("no tests were collected")
    assert "No tests were discovered" in result.details["message"]


def test_simulation_that_dies_without_results_is_errored(
    tmp_path: Path, shared_cache: Path
) -> None:
    tests = (
        "@cocotb.test()\nasync def test_fine(dut):\n    await Timer(1, 'ns')\n\n"
        "@cocotb.test()\nasync def test_exits(dut):\n    os._exit(0)\n"
    )
    result = run_one(scratch_design(tmp_path, tests), shared_cache, tmp_path)
    assert result.state == "errored"
    assert result.details["message"].startswith("cocotb wrote no results")
    assert "results.xml" not in artifact_names(result)


def test_pinned_cocotb_19_release(tmp_path: Path, shared_cache: Path) -> None:
    tests19 = (
        "from cocotb.clock import Clock\nfrom cocotb.triggers import FallingEdge\n\n"
        "@cocotb.test()\nasync def test_counts(dut):\n"
        "    cocotb.start_soon(Clock(dut.clk, 10, units='ns').start())\n"
        "    dut.rst.value = 1\n    dut.en.value = 0\n"
        "    await FallingEdge(dut.clk)\n    await FallingEdge(dut.clk)\n"
        "    dut.rst.value = 0\n    dut.en.value = 1\n"
        "    for _ in range(5):\n        await FallingEdge(dut.clk)\n"
        "    assert dut.count.value.integer == 5\n\n"
        "@cocotb.test()\nasync def test_fails(dut):\n    assert 1 + 1 == 3, 'arithmetic'\n"
    )
    design = scratch_design(tmp_path, tests19)
    (design / "tests" / "test_new_api.py").write_text(
        HEADER + "from cocotb.triggers import ValueChange\n\n"
        "@cocotb.test()\nasync def test_new(dut):\n    await ValueChange(dut.clk)\n"
    )
    (design / "hwrepo.toml").write_text(
        '[simulation]\ntoplevel = "counter"\n'
        '[[testbench]]\nmodules = ["tests/test_counter.py"]\ncocotb = "1.9"\n'
        '[[testbench]]\nmodules = ["tests/test_new_api.py"]\ncocotb = "1.9"\n'
    )
    (_, old_result), (_, new_result) = run_all(design, shared_cache, tmp_path)
    assert old_result.details["cocotb_version"] == "1.9.2"
    assert old_result.state == "failed"
    assert old_result.summary == "1 passed, 1 failed (icarus)"
    failing = next(t for t in old_result.details["tests"] if t["name"] == "test_fails")
    assert failing["message"] == "AssertionError: arithmetic"  # cocotb 1.9: from the log
    assert isinstance(failing["seed"], int)
    assert new_result.state == "errored"
    assert new_result.details["message"].startswith(
        "the testbench could not run: ImportError: cannot import name 'ValueChange'"
    )
    assert new_result.details["build"]["cached"] is False  # Icarus: built by each job


def test_design_that_does_not_compile_is_errored_with_the_compiler_message(
    tmp_path: Path, shared_cache: Path
) -> None:
    design = scratch_design(tmp_path, "@cocotb.test()\nasync def test_x(dut):\n    pass\n")
    rtl = design / "rtl" / "counter.v"
    rtl.write_text(rtl.read_text().replace("count + 1'b1;", "count + ;"))
    result = run_one(design, shared_cache, tmp_path)
    assert result.state == "errored"
    assert result.summary.startswith("the icarus build failed: rtl/counter.v:")
    assert "syntax error" in result.details["message"]
    assert result.details["build"]["cached"] is False


# -- hostile testbenches ------------------------------------------------------------------------


def test_infinite_simulation_loop_times_out(tmp_path: Path, shared_cache: Path) -> None:
    design = scratch_design(tmp_path, ENDLESS_LOOP, SHORT.format(timeout=8))
    start = time.monotonic()
    result = run_one(design, shared_cache, tmp_path)
    assert time.monotonic() - start < 30
    assert result.state == "timed_out"
    assert result.summary == "timed out in test_forever (icarus)"
    assert verdicts(result) == {"test_first": "passed", "test_forever": "errored"}
    assert "time limit of 8 s" in result.details["message"]
    assert result.details["sandbox"]["timed_out"] is True
    assert_still_serving(shared_cache, tmp_path)


def test_fork_bomb_is_stopped_by_the_process_limit(tmp_path: Path, shared_cache: Path) -> None:
    design = scratch_design(tmp_path, FORK_LOOP, SHORT.format(timeout=120))
    start = time.monotonic()
    result = run_one(design, shared_cache, tmp_path)
    assert time.monotonic() - start < 60
    assert result.state == "errored"
    assert result.details["message"] == (
        "the sandbox stopped the simulation: process limit in test_bomb"
    )
    assert verdicts(result) == {"test_bomb": "errored"}
    assert_still_serving(shared_cache, tmp_path)


def test_allocating_10_gb_fails_with_a_memory_error(tmp_path: Path, shared_cache: Path) -> None:
    result = run_one(scratch_design(tmp_path, HUGE_ALLOCATION), shared_cache, tmp_path)
    assert result.state == "failed"
    (hog,) = result.details["tests"]
    assert hog["status"] == "failed"
    assert hog["message"].startswith("MemoryError")
    assert "GiB of address space" in hog["message"]
    assert_still_serving(shared_cache, tmp_path)


def test_opening_a_socket_reaches_nothing(tmp_path: Path, shared_cache: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0)
    port = listener.getsockname()[1]
    tests = (
        "import socket\n\n"
        "@cocotb.test()\nasync def test_loopback(dut):\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=3).close()\n\n"
        "@cocotb.test()\nasync def test_dns(dut):\n"
        "    socket.getaddrinfo('pypi.org', 443)\n"
    )
    try:
        result = run_one(scratch_design(tmp_path, tests), shared_cache, tmp_path)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing came through
    finally:
        listener.close()
    assert result.state == "failed"
    by_name = {t["name"]: t for t in result.details["tests"]}
    assert by_name["test_loopback"]["message"].startswith("ConnectionRefusedError")
    assert by_name["test_dns"]["message"].startswith("gaierror")
    assert_still_serving(shared_cache, tmp_path)


def test_worker_credentials_and_environment_are_out_of_reach(
    tmp_path: Path, shared_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t-" + os.urandom(8).hex()
    monkeypatch.setenv("HWREPO_S3_SECRET_KEY", secret)
    secrets_file = tmp_path / "worker-secrets.toml"
    secrets_file.write_text(f'secret_key = "{secret}"\n')
    tests = (
        "@cocotb.test()\nasync def test_environment(dut):\n"
        "    assert 'HWREPO_S3_SECRET_KEY' in os.environ, sorted(os.environ)\n\n"
        "@cocotb.test()\nasync def test_file(dut):\n"
        f"    print(open({str(secrets_file)!r}).read())\n\n"
        "@cocotb.test()\nasync def test_worker_process(dut):\n"
        f"    print(open('/proc/{os.getpid()}/environ').read())\n\n"
        "@cocotb.test()\nasync def test_home(dut):\n"
        "    print(os.listdir('/root'))\n\n"
        "@cocotb.test()\nasync def test_worker_files(dut):\n"
        f"    print(open({str(REPO / 'pyproject.toml')!r}).read())\n"
    )
    result = run_one(scratch_design(tmp_path, tests), shared_cache, tmp_path)
    assert result.state == "failed"
    by_name = {t["name"]: t for t in result.details["tests"]}
    assert by_name["test_environment"]["message"].startswith("AssertionError")
    assert by_name["test_file"]["message"].startswith("FileNotFoundError")
    if os.getpid() > 100:  # not a PID the sandbox's own namespace could have
        assert by_name["test_worker_process"]["message"].startswith("FileNotFoundError")
    assert by_name["test_home"]["message"].startswith("FileNotFoundError")
    assert by_name["test_worker_files"]["message"].startswith("FileNotFoundError")
    log = next(a for a in result.artifacts if a.name == "log.txt").path.read_text()
    assert secret not in log
    assert secret not in json.dumps(result.details)
    assert_still_serving(shared_cache, tmp_path)


def test_writing_outside_the_workspace_is_refused(tmp_path: Path, shared_cache: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    tests = (
        "import sys\nfrom pathlib import Path\nimport hwrepo_sim\n\n"
        "@cocotb.test()\nasync def test_host_directory(dut):\n"
        f"    Path({str(outside / 'pwned.txt')!r}).write_text('x')\n\n"
        "@cocotb.test()\nasync def test_environment(dut):\n"
        "    Path(sys.prefix, 'pwned.txt').write_text('x')\n\n"
        "@cocotb.test()\nasync def test_entrypoint(dut):\n"
        "    Path(hwrepo_sim.__file__).write_text('pwned')\n\n"
        "@cocotb.test()\nasync def test_system(dut):\n"
        "    Path('/usr/local/pwned.txt').write_text('x')\n"
    )
    result = run_one(scratch_design(tmp_path, tests), shared_cache, tmp_path)
    assert result.state == "failed"
    by_name = {t["name"]: t for t in result.details["tests"]}
    assert by_name["test_host_directory"]["message"].startswith("FileNotFoundError")
    for name in ("test_environment", "test_entrypoint", "test_system"):
        assert "Read-only file system" in by_name[name]["message"], by_name[name]
    assert list(outside.iterdir()) == []
    assert not list((shared_cache / "envs").glob("*/pwned.txt"))
    assert "pwned" not in (REPO / "sim" / "hwrepo_sim" / "__init__.py").read_text()
    copies = list(shared_cache.glob("sim-code/*/hwrepo_sim/__init__.py"))  # what the steps ran
    assert copies and not any("pwned" in c.read_text() for c in copies)
    assert not Path("/usr/local/pwned.txt").exists()
    assert_still_serving(shared_cache, tmp_path)
