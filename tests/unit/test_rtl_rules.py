"""Unit tests of the RTL kinds' pieces: the hwrepo design rules on small Verilog snippets (parsed
for real with Icarus' preprocessor and pyverilog), Verilator output parsing, the [rtl] table and
the design-detection rule."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from hwrepo.checks.core.manifest import Manifest, ManifestError, RtlTable
from hwrepo.checks.core.violations import Violation
from hwrepo.checks.rtl.designs import design_root
from hwrepo.checks.rtl.inside import interpret_verilator, load_sarif, parse_verilator_text
from hwrepo.checks.rtl.job import DesignParams
from hwrepo.checks.rtl.parse import (
    evaluate,
    int_value,
    module_parameters,
    module_ports,
    parse_design,
)
from hwrepo.checks.rtl.rules import design_rules
from hwrepo.checks.rtl.verilog import systemverilog_reason
from hwrepo.checks.run import inside
from hwrepo.checks.run.inside import ToolRun

DESIGNS = Path(__file__).resolve().parents[2] / "designs"
FINDINGS = DESIGNS / "rtl-lint-findings"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rtl-cache")


@pytest.fixture(autouse=True)
def own_snippets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Verilog here is the tests' own, not an upload: the preprocessor may read it on the
    host (in a check, `inside.tool` runs only in the sandbox; tests/integration/test_rtl_kinds.py
    runs the kinds there)."""
    monkeypatch.setattr(inside, "in_sandbox", lambda: True)


def parse_config(data: bytes | None) -> RtlTable:
    table = Manifest.parse("hwrepo.toml", data).table("rtl")
    return table if table is not None else RtlTable()


def rules_on(tmp_path: Path, cache: Path, files: dict[str, str]) -> list[Violation]:
    src = tmp_path / "src"
    for name, text in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    sources = sorted(f for f in files if f.endswith(".v"))
    params = DesignParams(root="", sources=sources, include_dirs=[""])
    parsed = parse_design(params, src=src, tmp=tmp_path / "tmp", cache=cache)
    assert not parsed.syntax_errors and not parsed.tool_errors, parsed
    return design_rules(parsed)


def found(violations: list[Violation], rule: str) -> list[int | None]:
    return sorted(v.line for v in violations if v.type == rule)


# ----------------------------------------------------------------------------- hwrepo-latch


def test_latch_if_without_else(tmp_path: Path, cache: Path) -> None:
    v = rules_on(
        tmp_path,
        cache,
        {
            "m.v": """
            module m (input wire en, input wire [3:0] a, output reg [3:0] q);
                always @(*) begin
                    if (en)
                        q = a;
                end
            endmodule
            """
        },
    )
    assert found(v, "hwrepo-latch") == [2]
    (latch,) = [x for x in v if x.type == "hwrepo-latch"]
    assert "'q'" in latch.description and "if at line 3 has no else" in latch.description


def test_no_latch_with_default_assignment_first(tmp_path: Path, cache: Path) -> None:
    v = rules_on(
        tmp_path,
        cache,
        {
            "m.v": """
            module m (input wire en, input wire [3:0] a, output reg [3:0] q);
                always @(*) begin
                    q = 4'd0;
                    if (en)
                        q = a;
                end
            endmodule
            """
        },
    )
    assert found(v, "hwrepo-latch") == []


def test_latch_rule_on_if_else_and_level_sensitivity(tmp_path: Path, cache: Path) -> None:
    v = rules_on(
        tmp_path,
        cache,
        {
            "m.v": """
            module m (input wire c, input wire d, input wire a, output reg x, output reg y);
                always @(c or d or a) begin
                    if (c) begin
                        x = a;
                        y = a;
                    end else begin
                        x = d;
                    end
                end
            endmodule
            """
        },
    )
    (latch,) = [x for x in v if x.type == "hwrepo-latch"]
    assert latch.line == 2 and "'y'" in latch.description
    assert "only one branch of the if at line 3" in latch.description


def test_latch_case_without_default(tmp_path: Path, cache: Path) -> None:
    module = """
        module m (input wire [1:0] s, input wire a, input wire b, output reg y);
            always @* begin
                case (s)
                    2'b00: y = a;
                    2'b01: y = b;
                    2'b10: y = a ^ b;
                    {extra}
                endcase
            end
        endmodule
        """
    v = rules_on(tmp_path / "1", cache, {"m.v": module.replace("{extra}", "")})
    assert found(v, "hwrepo-latch") == [2]
    assert "case at line 3 has no default" in v[0].description
    with_default = module.replace("{extra}", "default: y = 1'b0;")
    assert found(rules_on(tmp_path / "2", cache, {"m.v": with_default}), "hwrepo-latch") == []
    full = module.replace("{extra}", "2'b11: y = 1'b1;")
    assert found(rules_on(tmp_path / "3", cache, {"m.v": full}), "hwrepo-latch") == []
    partial = module.replace("{extra}", "default: ;")
    assert found(rules_on(tmp_path / "4", cache, {"m.v": partial}), "hwrepo-latch") == [2]


def test_no_latch_in_clocked_block(tmp_path: Path, cache: Path) -> None:
    v = rules_on(
        tmp_path,
        cache,
        {
            "m.v": """
            module m (input wire clk, input wire en, input wire a, output reg q);
                always @(posedge clk)
                    if (en)
                        q <= a;
            endmodule
            """
        },
    )
    assert v == []


# ------------------------------------------------------------- hwrepo-blocking-in-clocked


def test_blocking_in_clocked(tmp_path: Path, cache: Path) -> None:
    v = rules_on(
        tmp_path,
        cache,
        {
            "m.v": """
            module m (input wire clk, input wire rst, input wire [7:0] d, output reg [7:0] q,
                      output reg [7:0] r, output reg [7:0] c);
                integer i;
                always @(posedge clk or posedge rst) begin
                    if (rst)
                        q = 8'd0;
                    else
                        q <= d;
                    for (i = 0; i < 8; i = i + 1)
                        r[i] <= d[7 - i];
                end
                always @(*) c = d;
            endmodule
            """
        },
    )
    assert found(v, "hwrepo-blocking-in-clocked") == [6]
    assert "'q'" in v[0].description and "line 4" in v[0].description


# ---------------------------------------------------------------- hwrepo-multiple-drivers


def test_multiple_drivers_same_clock(tmp_path: Path, cache: Path) -> None:
    v = rules_on(
        tmp_path,
        cache,
        {
            "m.v": """
            module m (input wire clk, input wire a, input wire b, output reg q);
                always @(posedge clk) q <= a;
                always @(posedge clk) q <= b;
            endmodule
            """
        },
    )
    assert found(v, "hwrepo-multiple-drivers") == [1]  # at the declaration
    assert "always block at line 2, always block at line 3" in v[0].description


def test_multiple_drivers_disjoint_bits_and_assigns(tmp_path: Path, cache: Path) -> None:
    v = rules_on(
        tmp_path,
        cache,
        {
            "m.v": """
            module m (input wire clk, input wire a, input wire b, output reg [1:0] q,
                      output wire w, output wire [1:0] z);
                always @(posedge clk) q[0] <= a;
                always @(posedge clk) q[1] <= b;
                assign w = a;
                assign w = b;
                assign z[0] = a;
                assign z[1] = b;
            endmodule
            """
        },
    )
    (multi,) = [x for x in v if x.type == "hwrepo-multiple-drivers"]
    assert "'w'" in multi.description and multi.line == 2


def test_single_driver_is_fine(tmp_path: Path, cache: Path) -> None:
    v = rules_on(
        tmp_path,
        cache,
        {
            "m.v": """
            module m (input wire clk, input wire rst, input wire a, output reg q);
                always @(posedge clk)
                    if (rst) q <= 1'b0;
                    else q <= a;
            endmodule
            """
        },
    )
    assert v == []


# ------------------------------------------------------------------- hwrepo-implicit-net


def test_implicit_nets(tmp_path: Path, cache: Path) -> None:
    v = rules_on(
        tmp_path,
        cache,
        {
            "m.v": """
            module m (input wire [3:0] a, output wire y, output wire p);
                assign undeclared = |a;
                assign y = undeclared & inv(a[0]);
                sub u_sub (.d(a), .o(par));
                assign p = par;
                function inv;
                    input x;
                    inv = ~x;
                endfunction
            endmodule
            """,
            "sub.v": """
            module sub (input wire [3:0] d, output wire o);
                wire declared_first = ^d;
                assign o = declared_first;
            endmodule
            """,
        },
    )
    implicit = [x for x in v if x.type == "hwrepo-implicit-net"]
    assert [(x.file, x.line) for x in implicit] == [("m.v", 2), ("m.v", 4)]
    assert "'undeclared'" in implicit[0].description
    assert "'par'" in implicit[1].description and "u_sub" in implicit[1].description


# -------------------------------------------------------------------- hwrepo-unused-input


def test_unused_inputs_ansi_and_non_ansi(tmp_path: Path, cache: Path) -> None:
    v = rules_on(
        tmp_path,
        cache,
        {
            "m.v": """
            module m (clk, a, spare, q);
                input clk;
                input a;
                input spare;
                output q;
                reg q;
                always @(posedge clk) q <= a;
            endmodule
            """,
            "n.v": """
            module n (
                input wire clk,
                input wire unused_in,
                output wire q
            );
                m u_m (.clk(clk), .a(1'b0), .spare(1'b1), .q(q));
            endmodule
            """,
        },
    )
    unused = [(x.file, x.line) for x in v if x.type == "hwrepo-unused-input"]
    assert unused == [("m.v", 4), ("n.v", 3)]


# ------------------------------------------------------------------- the fixture designs


def test_findings_design_rules_at_the_readme_lines(tmp_path: Path, cache: Path) -> None:
    files = {p.name: p.read_text() for p in (FINDINGS / "rtl").glob("*.v")}
    v = rules_on(tmp_path, cache, files)
    assert sorted((x.type, x.line) for x in v) == sorted(
        [
            ("hwrepo-latch", 35),  # F1
            ("hwrepo-latch", 41),  # F2
            ("hwrepo-blocking-in-clocked", 52),  # F3
            ("hwrepo-blocking-in-clocked", 54),  # F3
            ("hwrepo-multiple-drivers", 29),  # F4
            ("hwrepo-implicit-net", 72),  # F5
            ("hwrepo-implicit-net", 78),  # F6
            ("hwrepo-unused-input", 25),  # F7
        ]
    )
    assert {x.file for x in v} == {"findings.v"}
    (multi,) = [x for x in v if x.type == "hwrepo-multiple-drivers"]
    assert "line 59" in multi.description and "line 66" in multi.description


@pytest.mark.parametrize("design", ["rtl-counter", "rtl-axis-fifo"])
def test_clean_designs_have_no_rule_findings(tmp_path: Path, cache: Path, design: str) -> None:
    files = {p.name: p.read_text() for p in (DESIGNS / design / "rtl").glob("*.v")}
    assert rules_on(tmp_path, cache, files) == []


def test_lines_map_through_includes(tmp_path: Path, cache: Path) -> None:
    v = rules_on(
        tmp_path,
        cache,
        {
            "inc/consts.vh": """
            localparam A = 1;
            localparam B = 2;
            localparam C = 3;
            """,
            "m.v": """
            module m (input wire clk, input wire d, output reg q);
                `include "inc/consts.vh"
                always @(posedge clk)
                    q = d;
            endmodule
            """,
        },
    )
    assert [(x.type, x.file, x.line) for x in v] == [("hwrepo-blocking-in-clocked", "m.v", 4)]


# ------------------------------------------------------------------------ Verilator output


def readme_output() -> str:
    readme = (FINDINGS / "README.md").read_text()
    block = readme.split("Complete output", 1)[1].split("```", 2)[1]
    return block.split("\n", 1)[1]


def test_parse_verilator_text_of_the_readme(tmp_path: Path) -> None:
    v = parse_verilator_text(readme_output(), tmp_path)
    assert [(x.type, x.file, x.line, x.column) for x in v] == [
        ("IMPLICIT", "rtl/findings.v", 72, 12),
        ("IMPLICIT", "rtl/findings.v", 78, 18),
        ("BLKSEQ", "rtl/findings.v", 52, 17),
        ("BLKSEQ", "rtl/findings.v", 54, 17),
        ("UNUSEDSIGNAL", "rtl/findings.v", 25, 23),
        ("CASEINCOMPLETE", "rtl/findings.v", 42, 9),
        ("LATCH", "rtl/findings.v", 35, 5),
        ("LATCH", "rtl/findings.v", 41, 5),
        ("MULTIDRIVEN", "rtl/findings.v", 29, 23),
    ]
    assert all(x.severity == "warning" and x.rule == x.type for x in v)
    assert v[0].description == (
        "Signal definition not found, creating implicitly: 'any_set'\n"
        "... Suggested alternative: 'any_set_out'"
    )
    assert v[-1].description.splitlines()[1:] == [
        "... Location of first driving block (rtl/findings.v:61:13)",
        "... Location of other driving block (rtl/findings.v:68:13)",
    ]
    assert not any("lint_off" in x.description or "|" in x.description for x in v)


def test_parse_verilator_text_errors(tmp_path: Path) -> None:
    out = (
        "%Error: rtl/bad.v:3:1: syntax error, unexpected wire, expecting ',' or ';'\n"
        "    3 | wire c;\n"
        "      | ^~~~\n"
        "        ... See the manual at https://verilator.org/verilator_doc.html for more.\n"
        "%Error-MODMISSING: rtl/top.v:7:5: Cannot find file containing module: 'sub'\n"
        "%Error: Specified --top-module 'nope' was not found in design.\n"
        "%Error: Exiting due to 3 error(s)\n"
    )
    v = parse_verilator_text(out, tmp_path)
    assert [(x.type, x.severity, x.file, x.line) for x in v] == [
        ("ERROR", "error", "rtl/bad.v", 3),
        ("MODMISSING", "error", "rtl/top.v", 7),
        ("ERROR", "error", None, None),
    ]
    assert v[0].description == "syntax error, unexpected wire, expecting ',' or ';'"


def test_load_sarif_repairs_verilators_empty_rules() -> None:
    broken = (
        '{"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "Verilator", "rules": [\n'
        '\n]}}            "invocations": [], "results": []}]}'
    )
    doc = load_sarif(broken)
    assert doc is not None and doc["runs"][0]["results"] == []
    assert load_sarif("not json") is None


def run(code: int | None, output: str = "") -> ToolRun:
    return ToolRun(["verilator"], code, output, code is None, 0.1)


def test_interpret_verilator_never_passes_a_broken_run(tmp_path: Path) -> None:
    assert interpret_verilator(run(-11), None, tmp_path).problem is not None
    assert interpret_verilator(run(None), None, tmp_path).problem is not None
    assert interpret_verilator(run(1, "garbage\n"), "{", tmp_path).problem is not None
    internal = "%Error: Internal Error: ../V3Ast.cpp:10: broken\n"
    assert "Internal Error" in (interpret_verilator(run(1, internal), None, tmp_path).problem or "")
    ok = interpret_verilator(run(0, "- V e r i l a t i o n   R e p o r t\n"), None, tmp_path)
    assert ok.problem is None and ok.violations == []
    warned = interpret_verilator(run(1, readme_output()), None, tmp_path)
    assert warned.problem is None and len(warned.violations) == 9 and warned.source == "text"


# ------------------------------------------------------------------ config and detection


def test_parse_config_defaults_and_forms() -> None:
    assert parse_config(None).fail_on == ["error"]
    assert Manifest.parse("hwrepo.toml", b"[project]\nname = 'x'\n").table("rtl") is None
    c = parse_config(
        b'[rtl]\nsources = ["rtl/*.v"]\ninclude_dirs = ["inc/"]\n'
        b'defines = { WIDTH = 16, SIM = true, OFF = false, NAME = "x" }\n'
        b'top = "top"\nfail_on = ["warning", "error"]\n'
    )
    assert c.sources == ["rtl/*.v"] and c.include_dirs == ["inc"]
    assert c.defines == {"WIDTH": "16", "SIM": None, "NAME": "x"}
    assert c.top == "top" and c.fail_on == ["error", "warning"]
    assert parse_config(b'[rtl]\ndefines = ["A=1", "B"]\n').defines == {"A": "1", "B": None}


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        (b'[rtl]\nfail_on = ["warnings"]\n', "fail_on"),
        (b'[rtl]\nfail_on = "error"\n', "fail_on"),
        (b"[rtl]\ntop = 3\n", "top"),
        (b'[rtl]\nsources = ["../x.v"]\n', "sources"),
        (b"[rtl]\ninclude_dirs = [1]\n", "include_dirs"),
        (b'[rtl]\ndefines = { "1A" = 1 }\n', "defines"),
        (b"[rtl]\ndefines = 3\n", "defines"),
        (b"[rtl]\nsourcs = []\n", "sourcs"),
    ],
)
def test_parse_config_errors_name_the_key(toml: bytes, key: str) -> None:
    with pytest.raises(ManifestError, match=rf"\[rtl\] {key}"):
        parse_config(toml)


def test_parse_config_invalid_toml() -> None:
    with pytest.raises(ManifestError, match="not valid TOML"):
        parse_config(b"[rtl\n")


@pytest.mark.parametrize(
    ("path", "root"),
    [
        ("designs/rtl-counter/rtl/counter.v", "designs/rtl-counter"),
        ("designs/rtl-counter/rtl/sub/deep.v", "designs/rtl-counter"),
        ("rtl/top.v", ""),
        ("top.v", ""),
        ("cores/uart/uart.v", "cores/uart"),
        ("cores/uart/src/uart.v", "cores/uart"),
        ("designs/rtl-counter/tests/tb.v", None),
        ("tb/tb_top.v", None),
        (".git/x.v", None),
    ],
)
def test_design_root(path: str, root: str | None) -> None:
    assert design_root(path) == root


def test_systemverilog_detection() -> None:
    assert systemverilog_reason("a.sv", "module a; endmodule") is not None
    assert systemverilog_reason("a.v", "module a;\n  logic x;\nendmodule") == (
        2,
        "uses the SystemVerilog keyword 'logic' (line 2)",
    )
    plain = "// logic in a comment, always_ff too\nmodule a; wire logical; endmodule\n"
    assert systemverilog_reason("a.v", plain) is None


def test_constant_expressions(tmp_path: Path, cache: Path) -> None:
    assert [int_value(t) for t in ("8", "4'b1010", "'hff", "8'd255", "2'b1x", "32'sh8")] == [
        8,
        10,
        255,
        255,
        None,
        8,
    ]
    src = tmp_path / "src"
    src.mkdir()
    (src / "p.v").write_text(
        "module p #(parameter W = 8, parameter D = 2**W, parameter L = $clog2(D),\n"
        "           parameter M = W > 4 ? W - 1 : 0, parameter X = Y + 1)\n"
        "  (input wire [L-1:0] a, input wire [(W*2)-1:0] b, input wire [X:0] c);\n"
        "  localparam H = D / 2 + (W % 3);\n"
        "endmodule\n"
    )
    parsed = parse_design(
        DesignParams(root="", sources=["p.v"]), src=src, tmp=tmp_path / "tmp", cache=cache
    )
    ((mod, _unit),) = parsed.modules()
    values = {p.name: p.value for p in module_parameters(mod)}
    assert values == {"W": 8, "D": 256, "L": 8, "M": 7, "X": None, "H": 130}
    assert [(p.width, p.bits) for p in module_ports(mod)] == [
        ("[L-1:0]", 8),
        ("[W*2-1:0]", 16),
        ("[X:0]", None),
    ]
    assert evaluate(mod.paramlist.params[0].list[0].value, {}) == 8


def test_iverilog_e_fallback_gives_the_same_findings(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hwrepo.checks.rtl import parse

    files = {p.name: p.read_text() for p in (FINDINGS / "rtl").glob("*.v")}
    with_ivlpp = rules_on(tmp_path / "a", cache, files)
    monkeypatch.setattr(parse, "find_ivlpp", lambda: None)
    without = rules_on(tmp_path / "b", cache, files)
    assert [(v.type, v.file, v.line) for v in without] == [
        (v.type, v.file, v.line) for v in with_ivlpp
    ]
    assert len(without) == 8


def test_syntax_errors_point_at_their_file_and_line(tmp_path: Path, cache: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.v").write_text("module a;\nendmodule\n")
    (src / "b.v").write_text("module b(input x);\n\n  reg [3:0 r;\nendmodule\n")
    (src / "c.v").write_text("module c;\n  wire #w;\n")
    params = DesignParams(root="", sources=["a.v", "b.v", "c.v"])
    parsed = parse_design(params, src=src, tmp=tmp_path / "tmp", cache=cache)
    assert [(e.file, e.line) for e in parsed.syntax_errors] == [("b.v", 3), ("c.v", 2)]
    assert [m.name for m, _ in parsed.modules()] == ["a"]


def test_find_designs_groups_and_shares_headers(tmp_path: Path) -> None:
    from hwrepo.checks.core.local import LocalRevision
    from hwrepo.checks.rtl.designs import find_designs

    for name in (
        "cores/uart/rtl/uart.v",
        "cores/uart/rtl/uart_defs.v",
        "cores/uart/rtl/sub/fifo.v",
        "cores/uart/tb/tb_uart.v",
        "cores/spi/spi.sv",
        "include/bus.vh",
        "docs/readme.md",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("module x; endmodule\n")
    (tmp_path / "cores/uart/rtl/uart.v").write_text(
        '`include "uart_defs.v"\nmodule uart; endmodule\n'
    )
    designs = find_designs(LocalRevision(tmp_path), RtlTable())
    assert [(d.name, d.sources, d.language) for d in designs] == [
        ("cores/spi", ["cores/spi/spi.sv"], "systemverilog"),
        ("cores/uart", ["cores/uart/rtl/sub/fifo.v", "cores/uart/rtl/uart.v"], "verilog"),
    ]
    uart = designs[1]
    assert uart.headers == ["cores/uart/rtl/uart_defs.v", "include/bus.vh"]
    assert uart.include_dirs == ["cores/uart/rtl", "cores/uart/rtl/sub", "include"]
    assert "cores/uart/tb/tb_uart.v" not in uart.inputs and "include/bus.vh" in uart.inputs
