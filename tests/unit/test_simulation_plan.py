"""Planning of the `simulation` kind: the hwrepo.toml schema and its errors, and the detection of
testbenches, sources, toplevel, requirements and timescale in revisions without a manifest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hwrepo.checks.core.kind import PlannedJob
from hwrepo.checks.core.local import LocalRevision
from hwrepo.checks.core.manifest import resolve_cocotb_release
from hwrepo.checks.rtl.verilog import scan_hierarchy
from hwrepo.checks.simulation.environments import build_key
from hwrepo.checks.simulation.kind import SimulationKind
from hwrepo.checks.simulation.testbenches import JobParams

REPO = Path(__file__).resolve().parents[2]
DESIGNS = REPO / "designs"

COUNTER_V = """\
module counter #(parameter WIDTH = 8) (
    input wire clk, input wire rst, input wire en,
    output reg [WIDTH-1:0] count
);
    always @(posedge clk) if (rst) count <= 0; else if (en) count <= count + 1'b1;
endmodule
"""

TEST_PY = """\
import cocotb

@cocotb.test()
async def test_something(dut):
    pass
"""


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def plan(root: Path) -> list[PlannedJob]:
    return SimulationKind().plan(LocalRevision(root))


def only(jobs: list[PlannedJob]) -> PlannedJob:
    assert len(jobs) == 1, [(j.name, j.error) for j in jobs]
    return jobs[0]


# -- detection on the example designs ------------------------------------------------------------


def test_counter_is_detected_without_a_manifest() -> None:
    job = only(plan(DESIGNS / "rtl-counter"))
    assert job.error is None
    assert job.name == "tests/test_counter.py · icarus"
    params = JobParams.model_validate(job.params)
    assert params.simulator == "icarus"
    assert params.toplevel == "counter"
    assert params.sources == ["rtl/counter.v"]
    assert params.test_modules == ["test_counter"]
    assert params.test_dir == "tests"
    assert params.requirements == []
    assert params.cocotb == "2.1.0"
    # counter.v declares no `timescale (only a comment mentions it)
    assert params.timescale == ("1ns", "1ps")
    d = job.detected
    assert d["manifest"] is False
    assert d["toplevel"] == "counter"
    assert "no other module instantiates (text scan)" in d["toplevel_reason"]
    assert d["sources"] == ["rtl/counter.v"]
    assert d["hierarchy"] == {"counter": []}
    assert "no source declares a `timescale" in d["timescale_reason"]
    assert d["simulators"] == ["icarus"]
    assert job.inputs == ["rtl/counter.v", "tests/test_counter.py"]
    assert job.timeout_s == 900.0


def test_axis_fifo_toplevel_from_the_hierarchy_and_requirements_beside_the_tests() -> None:
    job = only(plan(DESIGNS / "rtl-axis-fifo"))
    params = JobParams.model_validate(job.params)
    assert params.toplevel == "axis_fifo"
    assert job.detected["hierarchy"] == {"axis_fifo": ["fifo_ram"], "fifo_ram": []}
    assert params.sources == ["rtl/axis_fifo.v", "rtl/fifo_ram.v"]
    assert params.requirements == ["cocotbext-axi"]
    assert job.detected["requirements_file"] == "tests/requirements.txt"
    assert params.timescale is None  # both files carry `timescale 1ns / 1ps
    assert "tests/requirements.txt" in (job.inputs or [])


def test_several_designs_each_get_their_own_design_directory() -> None:
    jobs = plan(DESIGNS)
    by_name = {j.name: j for j in jobs}
    assert "rtl-counter/tests/test_counter.py · icarus" in by_name
    assert "rtl-axis-fifo/tests/test_axis_fifo.py · icarus" in by_name
    fifo = by_name["rtl-axis-fifo/tests/test_axis_fifo.py · icarus"]
    assert fifo.detected["design_dir"] == "rtl-axis-fifo"
    assert fifo.params["sources"] == [
        "rtl-axis-fifo/rtl/axis_fifo.v",
        "rtl-axis-fifo/rtl/fifo_ram.v",
    ]
    assert fifo.params["test_dir"] == "rtl-axis-fifo/tests"
    # designs without cocotb tests (lint examples, KiCad boards) plan nothing
    assert all("rtl-lint-findings" not in j.name for j in jobs)


def test_planning_runs_no_parser_and_leaves_the_working_directory_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    root = write(
        tmp_path / "rev",
        {"rtl/unique_top.v": COUNTER_V.replace("counter", "unique_top"), "tb/test_x.py": TEST_PY},
    )
    job = only(plan(root))
    assert job.params["toplevel"] == "unique_top"
    assert job.detected["hierarchy_method"] == "text scan"
    assert os.listdir(work) == []


def test_no_testbench_plans_nothing(tmp_path: Path) -> None:
    assert plan(write(tmp_path, {"rtl/counter.v": COUNTER_V, "README.md": "x"})) == []


# -- detection rules ----------------------------------------------------------------------------


def test_toplevel_named_in_a_makefile_beside_the_tests(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "rtl/a.v": "module a(input x); endmodule\n",
            "rtl/b.v": "module b(input x); endmodule\n",
            "tests/Makefile": "SIM ?= icarus\nTOPLEVEL = b\nMODULE = test_x\n",
            "tests/test_x.py": TEST_PY,
        },
    )
    job = only(plan(root))
    assert job.params["toplevel"] == "b"
    assert job.detected["toplevel_reason"] == "named in tests/Makefile (TOPLEVEL = b)"


def test_toplevel_named_in_the_testbench(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "rtl/a.v": "module a(input x); endmodule\n",
            "rtl/b.v": "module b(input x); endmodule\n",
            "tests/test_x.py": TEST_PY + '\nrunner_args = dict(hdl_toplevel="a")\n',
        },
    )
    job = only(plan(root))
    assert job.params["toplevel"] == "a"
    assert "hdl_toplevel" in job.detected["toplevel_reason"]


def test_toplevel_from_the_test_module_name(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "rtl/top.v": "module top(input x); sub u(.x(x)); endmodule\n",
            "rtl/sub.v": "module sub(input x); endmodule\n",
            "tests/test_sub.py": TEST_PY,
        },
    )
    job = only(plan(root))
    assert job.params["toplevel"] == "sub"
    assert "named after it" in job.detected["toplevel_reason"]


def test_ambiguous_toplevel_is_an_error_naming_the_candidates(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "rtl/a.v": "module a(input x); endmodule\n",
            "rtl/b.v": "module b(input x); endmodule\n",
            "tests/test_x.py": TEST_PY,
        },
    )
    job = only(plan(root))
    assert job.error is not None
    assert "cannot tell the toplevel" in job.error
    assert "a, b" in job.error
    assert "toplevel" in job.error and "hwrepo.toml" in job.error


def test_included_files_are_not_sources_and_their_directories_are_include_dirs(
    tmp_path: Path,
) -> None:
    root = write(
        tmp_path,
        {
            "rtl/top.v": '`include "defs.vh"\n`include "body.v"\n',
            "rtl/include/defs.vh": "`define W 4\n",
            "rtl/body.v": "module top(input x); endmodule\n",
            "tests/test_top.py": TEST_PY,
        },
    )
    job = only(plan(root))
    assert job.params["sources"] == ["rtl/top.v"]
    assert set(job.params["includes"]) == {"rtl", "rtl/include"}
    assert "rtl/include/defs.vh" in (job.inputs or [])
    assert "rtl/body.v" in (job.inputs or [])


def test_systemverilog_falls_back_to_a_text_scan(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "rtl/top.sv": "module top(input logic clk);\n  leaf #(.N(2)) u_leaf (.clk);\n"
            "endmodule\n",
            "rtl/leaf.sv": "module leaf #(parameter N = 1) (input logic clk);\nendmodule\n",
            "tests/test_design.py": TEST_PY,
        },
    )
    job = only(plan(root))
    assert job.params["toplevel"] == "top"
    assert job.detected["hierarchy_method"].startswith("text scan")


def test_timescale_default_only_when_some_source_lacks_one(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "rtl/top.v": "`timescale 1ns/1ps\nmodule top(input x); sub u(.x(x)); endmodule\n",
            "rtl/sub.v": "module sub(input x); endmodule\n",
            "tests/test_top.py": TEST_PY,
        },
    )
    job = only(plan(root))
    assert job.params["timescale"] == ["1ns", "1ps"]
    assert "rtl/sub.v" in job.detected["timescale_reason"]


def test_requirements_file_may_pin_the_cocotb_release(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "rtl/counter.v": COUNTER_V,
            "tests/test_counter.py": TEST_PY,
            "tests/requirements.txt": "# helpers\ncocotb==1.9.2\ncocotb-bus>=0.2  # buses\n",
        },
    )
    job = only(plan(root))
    assert job.params["cocotb"] == "1.9.2"
    assert job.params["requirements"] == ["cocotb-bus>=0.2"]
    assert "tests/requirements.txt:2" in job.detected["cocotb_reason"]


def test_requirements_file_with_pip_options_is_an_error(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "rtl/counter.v": COUNTER_V,
            "tests/test_counter.py": TEST_PY,
            "tests/requirements.txt": "--index-url https://example.invalid/simple\n",
        },
    )
    job = only(plan(root))
    assert job.error is not None
    assert job.error.startswith("tests/requirements.txt:1:")
    assert "pip options are not allowed" in job.error


def test_testbench_without_hdl_is_an_error(tmp_path: Path) -> None:
    job = only(plan(write(tmp_path, {"tests/test_x.py": TEST_PY})))
    assert job.error is not None
    assert "no Verilog sources" in job.error


def test_text_scan_sees_instances_with_parameters_and_ignores_comments() -> None:
    found = scan_hierarchy(
        {
            "a.sv": "module a; // b u_fake();\n b #(.W(2)) u_b (.x(1)); endmodule\n",
            "b.sv": "module b(input x); /* a u_a(); */ endmodule\n",
        }
    )
    assert found == {"a": ["b"], "b": []}


# -- the manifest -------------------------------------------------------------------------------

MANIFEST = """\
[simulation]
sources = ["rtl/*.v"]
toplevel = "counter"
parameters = { WIDTH = 4 }
defines = { FAST = true }

[[testbench]]
name = "counter"
modules = ["tests/test_counter.py"]
simulators = ["icarus", "verilator"]
parameters = { WIDTH = 6 }
env = { KNOB = "1" }
timeout = 120
requirements = ["cocotb-bus==0.3.0"]
cocotb = "1.9"
seed = 42
tests = ["test_something"]

[[testbench]]
modules = ["tests/test_other.py"]

[rtl]
whatever = "belongs to another kind"
"""


def test_manifest_testbenches_become_one_job_per_simulator(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "hwrepo.toml": MANIFEST,
            "rtl/counter.v": COUNTER_V,
            "tests/test_counter.py": TEST_PY,
            "tests/test_other.py": TEST_PY,
        },
    )
    jobs = plan(root)
    assert [j.name for j in jobs] == [
        "counter · icarus",
        "counter · verilator",
        "tests/test_other.py · icarus",
    ]
    assert all(j.error is None for j in jobs)
    first = JobParams.model_validate(jobs[0].params)
    assert first.toplevel == "counter"
    assert first.parameters == {"WIDTH": "6"}
    assert first.defines == {"FAST": "1"}
    assert first.env == {"KNOB": "1"}
    assert first.cocotb == "1.9.2"
    assert first.requirements == ["cocotb-bus==0.3.0"]
    assert first.seed == 42
    assert first.tests == ["test_something"]
    assert jobs[0].timeout_s == 120
    assert jobs[1].params["simulator"] == "verilator"
    assert jobs[0].detected["manifest"] is True
    assert "hwrepo.toml" in (jobs[0].inputs or [])
    other = JobParams.model_validate(jobs[2].params)
    assert other.cocotb == "2.1.0"
    assert other.parameters == {"WIDTH": "4"}
    assert jobs[2].timeout_s == 900


def test_manifests_per_subdirectory_describe_one_design_each(tmp_path: Path) -> None:
    manifest = '[simulation]\ntoplevel = "counter"\n[[testbench]]\nmodules = ["t/test_c.py"]\n'
    root = write(
        tmp_path,
        {
            "cores/one/hwrepo.toml": manifest,
            "cores/one/rtl/counter.v": COUNTER_V,
            "cores/one/t/test_c.py": TEST_PY,
            "cores/two/hwrepo.toml": manifest,
            "cores/two/rtl/counter.v": COUNTER_V,
            "cores/two/t/test_c.py": TEST_PY,
        },
    )
    jobs = plan(root)
    assert [j.name for j in jobs] == [
        "cores/one/t/test_c.py · icarus",
        "cores/two/t/test_c.py · icarus",
    ]
    assert jobs[1].params["sources"] == ["cores/two/rtl/counter.v"]
    assert jobs[1].params["test_dir"] == "cores/two/t"


def test_manifest_without_testbenches_configures_detection(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "hwrepo.toml": '[simulation]\ntoplevel = "b"\ntimescale = "10ns/10ps"\n',
            "rtl/a.v": "module a(input x); endmodule\n",
            "rtl/b.v": "module b(input x); endmodule\n",
            "tests/test_x.py": TEST_PY,
        },
    )
    job = only(plan(root))
    assert job.params["toplevel"] == "b"
    assert job.params["timescale"] == ["10ns", "10ps"]
    assert job.detected["toplevel_reason"] == "set in hwrepo.toml ([simulation] toplevel)"


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        (
            '[[testbench]]\nmodules = ["tests/test_x.py"]\nsimulators = ["icarus", "modelsim"]\n',
            "hwrepo.toml: [[testbench]] 1: simulators: 'modelsim' is not one of icarus, verilator",
        ),
        (
            '[simulation]\nsorces = ["rtl/*.v"]\n',
            "hwrepo.toml: [simulation] sorces: unknown key",
        ),
        (
            "[[testbench]]\nsimulators = []\n",
            "hwrepo.toml: [[testbench]] 1: modules: required key is missing",
        ),
        (
            '[[testbench]]\nmodules = ["tests/test_x.py"]\ncocotb = "3.0"\n',
            "hwrepo.toml: [[testbench]] 1: cocotb: '3.0' is not a supported cocotb release",
        ),
        (
            '[[testbench]]\nmodules = ["tests/test_x.py"]\ntimeout = 999999\n',
            "hwrepo.toml: [[testbench]] 1: timeout: Input should be less than or equal to 14400",
        ),
        (
            '[simulation]\ntimescale = "1 fortnight"\n',
            "hwrepo.toml: [simulation] timescale: '1 fortnight' is not a timescale like",
        ),
        (
            '[[testbench]]\nmodules = ["tests/test_x.py"]\nrequirements = ["x @ https://e.invalid/x.whl"]\n',
            "hwrepo.toml: [[testbench]] 1: requirements: 'x @ https://e.invalid/x.whl': "
            "requirements from URLs are not allowed",
        ),
        (
            '[[testbench]]\nmodules = ["tests/test_x.py"]\nrequirements = ["cocotb==1.9.2"]\n',
            "hwrepo.toml: [[testbench]] 1: requirements: cocotb is chosen with the `cocotb` key",
        ),
        (
            '[[testbench]]\nmodules = ["tests/test_x"]\n',
            "hwrepo.toml: [[testbench]] 1: modules: 'tests/test_x' is not a Python file",
        ),
        ("[simulation\n", "hwrepo.toml: not valid TOML:"),
        (
            '[simulation]\nparameters = { "bad name" = 1 }\n',
            "hwrepo.toml: [simulation] parameters: 'bad name' is not a valid parameter name",
        ),
    ],
)
def test_invalid_manifest_names_the_key_and_what_was_expected(
    tmp_path: Path, manifest: str, expected: str
) -> None:
    root = write(
        tmp_path,
        {"hwrepo.toml": manifest, "rtl/counter.v": COUNTER_V, "tests/test_x.py": TEST_PY},
    )
    job = only(plan(root))
    assert job.error is not None
    assert job.error.startswith(expected), job.error
    assert job.name == "hwrepo.toml"


def test_manifest_module_that_does_not_exist(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "hwrepo.toml": '[[testbench]]\nmodules = ["tests/test_missing.py"]\n',
            "rtl/counter.v": COUNTER_V,
        },
    )
    job = only(plan(root))
    assert job.error == (
        "hwrepo.toml: testbench module tests/test_missing.py is not in the revision"
    )


def test_manifest_source_glob_matching_nothing(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "hwrepo.toml": '[simulation]\nsources = ["hdl/*.v"]\n'
            '[[testbench]]\nmodules = ["tests/test_x.py"]\n',
            "rtl/counter.v": COUNTER_V,
            "tests/test_x.py": TEST_PY,
        },
    )
    job = only(plan(root))
    assert job.error == "hwrepo.toml: [simulation] sources: 'hdl/*.v' matches no file"


def test_cocotb_releases() -> None:
    assert resolve_cocotb_release("2.1") == "2.1.0"
    assert resolve_cocotb_release("1.9") == "1.9.2"
    assert resolve_cocotb_release("1.9.1") == "1.9.1"
    with pytest.raises(ValueError, match="not a supported cocotb release"):
        resolve_cocotb_release("1.8")


# -- the model's cache key ----------------------------------------------------------------------


def _key(**changes: object) -> str:
    args: dict[str, object] = {
        "simulator": "verilator",
        "simulator_version": "Verilator 5.48.0",
        "toplevel": "counter",
        "sources": [("rtl/counter.v", "a" * 64)],
        "headers": [],
        "includes": ["rtl"],
        "defines": {},
        "parameters": {},
        "timescale": ["1ns", "1ps"],
        "build_args": ["-Wno-fatal"],
        "waves": "vcd",
        "cocotb_version": "2.1.0",
        "base_env": Path("/cache/envs/cocotb-2.1.0"),
    }
    args.update(changes)
    return build_key(**args)  # type: ignore[arg-type]


def test_build_key_changes_with_what_shapes_the_model_only() -> None:
    base = _key()
    assert _key() == base
    for change in (
        {"sources": [("rtl/counter.v", "b" * 64)]},
        {"sources": [("hdl/counter.v", "a" * 64)]},
        {"headers": [("rtl/defs.vh", "c" * 64)]},
        {"defines": {"FAST": "1"}},
        {"parameters": {"WIDTH": "4"}},
        {"toplevel": "other"},
        {"timescale": None},
        {"build_args": []},
        {"waves": "fst"},
        {"cocotb_version": "1.9.2"},
        {"simulator_version": "Verilator 5.50.0"},
        {"simulator": "icarus"},
    ):
        assert _key(**change) != base, change
