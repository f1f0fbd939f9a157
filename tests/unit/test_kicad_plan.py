"""KiCad detection, hwrepo.toml's [kicad] table and report normalisation, without kicad-cli."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from hwrepo.checks.core.findings import summarise
from hwrepo.checks.core.local import LocalRevision
from hwrepo.checks.core.violations import Violation, from_sandbox
from hwrepo.checks.kicad import designs, inside, outputs, sexp
from hwrepo.checks.kicad.drc import DrcKind
from hwrepo.checks.kicad.erc import ErcKind
from hwrepo.checks.kicad.outputs import (
    board_statistics,
    bom_data,
    model_references,
    svg_problem,
)
from hwrepo.checks.kicad.render import RenderKind

DESIGNS = Path(__file__).resolve().parents[2] / "designs"
CLEAN = DESIGNS / "kicad-clean"
VIOLATIONS = DESIGNS / "kicad-violations"


def sheet(file: str, name: str = "child", key: str = "Sheetfile") -> str:
    return (
        f'\t(sheet\n\t\t(at 50.8 71.12)\n\t\t(size 20 10)\n\t\t(uuid "u-{name}")\n'
        f'\t\t(property "Sheetname" "{name}"\n\t\t\t(at 50.8 70 0)\n\t\t)\n'
        f'\t\t(property "{key}" "{file}"\n\t\t\t(at 50.8 82 0)\n\t\t)\n\t)\n'
    )


def schematic(*sheets: str, text: str = "") -> str:
    notes = f'\t(text "{text}"\n\t\t(at 10 10 0)\n\t)\n' if text else ""
    return f"(kicad_sch\n\t(version 20250114)\n{notes}{''.join(sheets)})\n"


def revision(tmp_path: Path, files: dict[str, str]) -> LocalRevision:
    for rel, content in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return LocalRevision(tmp_path)


def by_label(rev: LocalRevision) -> dict[str, designs.Design]:
    return {d.label: d for d in designs.find_designs(rev)}


# -- detection -----------------------------------------------------------------------------------


def test_projects_in_subdirectories_with_spaces(tmp_path: Path) -> None:
    rev = revision(
        tmp_path,
        {
            "my board/led.kicad_pro": "{}",
            "my board/led.kicad_sch": schematic(sheet("power supply.kicad_sch")),
            "my board/power supply.kicad_sch": schematic(),
            "my board/led.kicad_pcb": "(kicad_pcb)",
            "my board/led.kicad_dru": "(version 1)",
            "hw/rev b/other.kicad_pro": "{}",
            "hw/rev b/other.kicad_pcb": "(kicad_pcb)",
            "README.md": "hello",
        },
    )
    designs = by_label(rev)
    assert set(designs) == {"my board/led.kicad_pro", "hw/rev b/other.kicad_pro"}
    led = designs["my board/led.kicad_pro"]
    assert led.schematic == "my board/led.kicad_sch"
    assert led.board == "my board/led.kicad_pcb"
    assert led.sheets == ["my board/power supply.kicad_sch"]
    assert "my board/led.kicad_dru" in led.inputs
    assert "README.md" not in led.inputs
    assert all(p.startswith("my board/") for p in led.inputs)
    other = designs["hw/rev b/other.kicad_pro"]
    assert other.schematic is None and other.board == "hw/rev b/other.kicad_pcb"

    drc = {j.name: j for j in DrcKind().plan(rev)}
    assert set(drc) == {"my board/led.kicad_pcb", "hw/rev b/other.kicad_pcb"}
    assert drc["my board/led.kicad_pcb"].params["schematic"] == "my board/led.kicad_sch"
    assert drc["hw/rev b/other.kicad_pcb"].params["schematic"] is None
    assert drc["my board/led.kicad_pcb"].timeout_s == 1200
    erc = ErcKind().plan(rev)
    assert [j.name for j in erc] == ["my board/led.kicad_sch"]  # never the sub-sheet
    assert erc[0].params["sheets"] == ["my board/power supply.kicad_sch"]
    render = {j.name for j in RenderKind().plan(rev)}
    assert render == {"my board/led.kicad_pro", "hw/rev b/other.kicad_pro"}


def test_violations_design_root_and_sub_sheet() -> None:
    rev = LocalRevision(VIOLATIONS)
    erc = ErcKind().plan(rev)
    assert [j.name for j in erc] == ["violations.kicad_sch"]
    assert erc[0].detected["sheets"] == ["led_driver.kicad_sch"]
    assert erc[0].detected["project"] == "violations.kicad_pro"
    assert set(erc[0].inputs or []) >= {"led_driver.kicad_sch", "violations.kicad_pro"}


def test_files_without_project(tmp_path: Path) -> None:
    rev = revision(
        tmp_path,
        {
            # a board with its schematic, no project
            "a/amp.kicad_pcb": "(kicad_pcb)",
            "a/amp.kicad_sch": schematic(sheet("stage.kicad_sch")),
            "a/stage.kicad_sch": schematic(),
            # a lone schematic nobody references: a root
            "b/notes.kicad_sch": schematic(),
            # a board whose namesake schematic is another design's sheet: no parity, no ERC root
            "c/top.kicad_sch": schematic(sheet("part.kicad_sch")),
            "c/part.kicad_sch": schematic(),
            "c/part.kicad_pcb": "(kicad_pcb)",
        },
    )
    designs = by_label(rev)
    assert set(designs) == {
        "a/amp.kicad_pcb",
        "b/notes.kicad_sch",
        "c/part.kicad_pcb",
        "c/top.kicad_sch",
    }
    assert designs["a/amp.kicad_pcb"].schematic == "a/amp.kicad_sch"
    assert designs["a/amp.kicad_pcb"].sheets == ["a/stage.kicad_sch"]
    assert designs["c/part.kicad_pcb"].schematic is None
    assert "without a project file" in designs["b/notes.kicad_sch"].why
    erc = sorted(j.name for j in ErcKind().plan(rev))
    assert erc == ["a/amp.kicad_sch", "b/notes.kicad_sch", "c/top.kicad_sch"]
    drc = {j.name: j.params for j in DrcKind().plan(rev)}
    assert drc["c/part.kicad_pcb"]["schematic"] is None
    assert drc["a/amp.kicad_pcb"]["project"] is None


def test_sheet_references_forms_and_paths(tmp_path: Path) -> None:
    rev = revision(
        tmp_path,
        {
            "p/top.kicad_pro": "{}",
            # KiCad 6/7 property name, a sub-directory, a Windows separator, a sheet elsewhere,
            # a sheet that is not in the revision, and "(sheet " inside a text note
            "p/top.kicad_sch": schematic(
                sheet("sub/a.kicad_sch", "a", key="Sheet file"),
                sheet("sub\\\\b.kicad_sch", "b"),  # KiCad writes \\ for a backslash
                sheet("../common/c.kicad_sch", "c"),
                sheet("gone.kicad_sch", "gone"),
                text="see (sheet x) below",
            ),
            "p/sub/a.kicad_sch": schematic(sheet("nested.kicad_sch", "n")),
            "p/sub/nested.kicad_sch": schematic(),
            "p/sub/b.kicad_sch": schematic(),
            "common/c.kicad_sch": schematic(),
            "p/_autosave-top.kicad_sch": schematic(),
            "p/top-backups/top.kicad_sch": schematic(),
        },
    )
    (design,) = designs.find_designs(rev)
    assert design.sheets == [
        "p/sub/a.kicad_sch",
        "p/sub/b.kicad_sch",
        "common/c.kicad_sch",
        "p/sub/nested.kicad_sch",
    ]
    assert design.missing_sheets == ["gone.kicad_sch"]
    assert "common/c.kicad_sch" in design.inputs  # a sheet outside the project's directory


def test_project_library_outside_the_directory_is_an_input(tmp_path: Path) -> None:
    table = (
        '(fp_lib_table\n  (version 7)\n  (lib (name "mine")(type "KiCad")'
        '(uri "${KIPRJMOD}/../libs/mine.pretty")(options "")(descr ""))\n'
        '  (lib (name "std")(type "KiCad")(uri "${KICAD9_FOOTPRINT_DIR}/x.pretty")'
        '(options "")(descr ""))\n)\n'
    )
    rev = revision(
        tmp_path,
        {
            "board/x.kicad_pro": "{}",
            "board/x.kicad_pcb": "(kicad_pcb)",
            "board/fp-lib-table": table,
            "libs/mine.pretty/R.kicad_mod": "(footprint R)",
            "libs/other.pretty/C.kicad_mod": "(footprint C)",
        },
    )
    (design,) = designs.find_designs(rev)
    assert "libs/mine.pretty/R.kicad_mod" in design.inputs
    assert "libs/other.pretty/C.kicad_mod" not in design.inputs


def test_unparsable_schematic_is_still_planned(tmp_path: Path) -> None:
    rev = revision(tmp_path, {"x.kicad_pro": "{}", "x.kicad_sch": "(kicad_sch (sheet (("})
    (job,) = ErcKind().plan(rev)
    assert job.name == "x.kicad_sch" and job.error is None


def test_no_kicad_files_no_jobs(tmp_path: Path) -> None:
    rev = revision(tmp_path, {"rtl/counter.v": "module x; endmodule", "hwrepo.toml": "[kicad"})
    assert DrcKind().plan(rev) == [] and ErcKind().plan(rev) == [] and RenderKind().plan(rev) == []


def test_read_hierarchy(tmp_path: Path) -> None:
    files = {
        "top.kicad_sch": schematic(sheet("a.kicad_sch", "a"), sheet("a.kicad_sch", "a2")),
        "a.kicad_sch": schematic(sheet("b.kicad_sch", "b")),
        "b.kicad_sch": schematic(),
    }
    revision(tmp_path, files)
    whole = inside.read_hierarchy(tmp_path, "top.kicad_sch")
    assert [f.name for f in whole.files] == ["top.kicad_sch", "a.kicad_sch", "b.kicad_sch"]
    assert whole.problems == []

    (tmp_path / "b.kicad_sch").write_text(schematic()[:20])
    assert inside.read_hierarchy(tmp_path, "top.kicad_sch").problems == [
        "b.kicad_sch: truncated: its parentheses do not close"
    ]
    (tmp_path / "b.kicad_sch").unlink()
    (problem,) = inside.read_hierarchy(tmp_path, "top.kicad_sch").problems
    assert "'b.kicad_sch', which is not among the files" in problem
    (tmp_path / "b.kicad_sch").write_text(schematic(sheet("a.kicad_sch", "loop")))
    (problem,) = inside.read_hierarchy(tmp_path, "top.kicad_sch").problems
    assert "inside itself" in problem


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("(kicad_sch (version 1))\n", None),
        ('(kicad_sch (text "a ) b" (at 1 2)))', None),
        ("(kicad_sch (version 1)", "truncated"),
        ("(kicad_pcb (version 1))", "not a kicad_sch file"),
        ("\x00\x01 binary", "not a KiCad file"),
        ("", "not a KiCad file"),
    ],
)
def test_file_problem(text: str, problem: str | None) -> None:
    found = sexp.file_problem(text, "kicad_sch")
    assert found is None if problem is None else problem in (found or "")


def test_project_file_problem(tmp_path: Path) -> None:
    pro = tmp_path / "x.kicad_pro"
    pro.write_text("{}")
    assert inside.project_file_problem(pro) is None
    for content in ("{not json", "[]"):
        pro.write_text(content)
        assert "KiCad's defaults were used" in (inside.project_file_problem(pro) or "")


# -- hwrepo.toml ---------------------------------------------------------------------------------


def plan_all(tmp_path: Path, toml: str) -> dict[str, Any]:
    shutil.copytree(CLEAN, tmp_path / "design")
    (tmp_path / "hwrepo.toml").write_text(toml)
    rev = LocalRevision(tmp_path)
    return {k.name: k.plan(rev)[0] for k in (DrcKind(), ErcKind(), RenderKind())}


def test_fail_on_and_timeouts(tmp_path: Path) -> None:
    jobs = plan_all(
        tmp_path, '[kicad]\nfail_on = ["warning", "error"]\ndrc_timeout_s = 3600\n[sim]\nx = 1\n'
    )
    assert jobs["drc"].params["fail_on"] == ["error", "warning"]
    assert jobs["erc"].params["fail_on"] == ["error", "warning"]
    assert jobs["drc"].timeout_s == 3600
    assert jobs["erc"].timeout_s == 600
    assert all(j.error is None for j in jobs.values())


@pytest.mark.parametrize(
    ("toml", "key", "kinds"),
    [
        ('[kicad]\nfail_on = "warning"\n', "fail_on", {"drc", "erc"}),
        ('[kicad]\nfail_on = ["errors"]\n', "fail_on", {"drc", "erc"}),
        ("[kicad]\nfail_on = []\n", "fail_on", {"drc", "erc"}),
        ("[kicad]\nrender_timeout_s = -1\n", "render_timeout_s", {"render"}),
        ("[kicad]\ndrc_timeout_s = true\n", "drc_timeout_s", {"drc"}),
        ("[kicad]\nfail-on = ['error']\n", "fail-on", {"drc", "erc", "render"}),
        ('kicad = "yes"\n', "[kicad]", {"drc", "erc", "render"}),
        ("[kicad\n", "hwrepo.toml", {"drc", "erc", "render"}),
    ],
)
def test_invalid_config_errors_name_the_key(
    tmp_path: Path, toml: str, key: str, kinds: set[str]
) -> None:
    jobs = plan_all(tmp_path, toml)
    for name, job in jobs.items():
        if name in kinds:
            assert job.error is not None and key in job.error and "hwrepo.toml" in job.error
        else:
            assert job.error is None


# -- reports -------------------------------------------------------------------------------------


def item(uuid: str, x: float, y: float, text: str = "thing") -> dict[str, Any]:
    return {"uuid": uuid, "description": text, "pos": {"x": x, "y": y}}


def test_drc_report_normalised() -> None:
    report = {
        "violations": [
            {
                "type": "clearance",
                "severity": "error",
                "description": "c",
                "items": [item("a", 1.5, 2)],
            },
            {
                "type": "copper_edge_clearance",
                "severity": "error",
                "description": "e",
                "excluded": True,
                "comment": "accepted",
                "items": [item("b", 3, 4)],
            },
            {"type": "silk_overlap", "severity": "warning", "description": "s", "items": []},
        ],
        "unconnected_items": [
            {"type": "unconnected_items", "severity": "error", "description": "u", "items": []}
        ],
        "schematic_parity": [
            {"type": "footprint_symbol_mismatch", "severity": "warning", "description": "p"}
        ],
    }
    raw_found, sections, raw = inside.drc_violations(report)
    found = from_sandbox(raw_found)  # as the worker reads them
    assert sections == {"violations": 3, "unconnected_items": 1, "schematic_parity": 1}
    assert [v.type for v in found] == [
        "clearance",
        "copper_edge_clearance",
        "silk_overlap",
        "unconnected_items",
        "footprint_symbol_mismatch",
    ]
    assert found[0].items[0].x_mm == 1.5 and found[0].items[0].uuid == "a"
    assert [v.excluded for v in found] == [False, True, False, False, False]
    assert inside.exclusion_comments(raw) == [
        {"type": "copper_edge_clearance", "comment": "accepted", "items": ["b"]}
    ]


@pytest.mark.parametrize(
    "report",
    [{}, {"violations": {}}, {"violations": ["x"]}, {"violations": [{"items": "x"}]}],
)
def test_drc_report_malformed(report: dict[str, Any]) -> None:
    with pytest.raises(outputs.ReportError):
        inside.drc_violations(report)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "wrote no report"),
        (b"", "empty report"),
        (b'{"violations": [', "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_read_report_failures(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "report.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(outputs.ReportError, match=message):
        inside.read_report(path)


def erc_report(scale: float) -> dict[str, Any]:
    """The ERC findings of designs/kicad-violations, positions divided by `scale`."""
    return {
        "sheets": [
            {
                "path": "/",
                "violations": [
                    {
                        "type": "power_pin_not_driven",
                        "severity": "error",
                        "description": "d",
                        "items": [
                            item(
                                "5c4875dd-8653-5bf2-bbdc-96651f814731", 40.64 / scale, 88.9 / scale
                            )
                        ],
                    }
                ],
            },
            {
                "path": "/led_driver/",
                "violations": [
                    {
                        "type": "pin_not_connected",
                        "severity": "error",
                        "description": "d",
                        "items": [
                            item(
                                "60bf5767-3aad-5388-81c1-889c3b289af4", 54.61 / scale, 63.5 / scale
                            )
                        ],
                    }
                ],
            },
        ]
    }


@pytest.mark.parametrize("reported_scale", [100.0, 1.0])
def test_erc_positions_checked_against_the_schematic(reported_scale: float) -> None:
    files = [VIOLATIONS / "violations.kicad_sch", VIOLATIONS / "led_driver.kicad_sch"]
    report = erc_report(reported_scale)
    decided = inside.erc_position_scale(report, files, "9.0.8")
    assert decided["scale"] == reported_scale
    assert decided["method"] == "compared with the schematic files"
    assert decided["checked_items"] == 2 and decided["agreeing"] == 2
    found = from_sandbox(inside.erc_violations(report, decided["scale"]))
    positions = {v.type: (v.items[0].x_mm, v.items[0].y_mm, v.items[0].sheet) for v in found}
    assert positions == {
        "power_pin_not_driven": (40.64, 88.9, "/"),
        "pin_not_connected": (54.61, 63.5, "/led_driver/"),
    }


def test_erc_scale_without_schematic_falls_back_on_the_version() -> None:
    report = erc_report(100.0)
    assert inside.erc_position_scale(report, [], "9.0.8")["scale"] == 100.0
    assert inside.erc_position_scale(report, [], "10.0.0")["scale"] == 1.0
    assert inside.erc_position_scale({"sheets": []}, [], "9.0.8")["method"].startswith("no item")


def test_summary_words() -> None:
    found = [
        Violation(type="a", severity="error", description=""),
        Violation(type="b", severity="error", description="", excluded=True),
        Violation(type="c", severity="warning", description="", waived=True),
    ]
    assert summarise(found, found[:1]) == "2 errors, 1 warning (1 waived, 1 excluded); 1 blocking"
    assert summarise([], []) == "0 errors, 0 warnings"


# -- S-expressions and board data ----------------------------------------------------------------


def test_lenient_parse_reads_forms_without_opening_parenthesis() -> None:
    text = "(kicad_pcb (pad (teardrops (curved_edges no)filter_ratio 0.9)\n) (uuid u)))"
    with pytest.raises(sexp.SexpError):
        sexp.parse_sexp(text)
    (tree,), note = sexp.parse_sexp_lenient(text)
    assert note is not None
    teardrops = sexp.child(sexp.child(tree, "pad") or [], "teardrops") or []
    assert sexp.head(teardrops[2]) == "filter_ratio"
    with pytest.raises(sexp.SexpError):
        sexp.parse_sexp_lenient("(kicad_pcb (a")


@pytest.mark.parametrize(
    ("design", "width", "height", "footprints", "nets"),
    [
        (CLEAN / "clean-led.kicad_pcb", 22, 12, 4, 3),
        (VIOLATIONS / "violations.kicad_pcb", 24, 14, 5, 5),
    ],
)
def test_board_statistics(
    design: Path, width: float, height: float, footprints: int, nets: int
) -> None:
    stats = board_statistics(sexp.parse_sexp(design.read_text()))
    assert (stats["width_mm"], stats["height_mm"]) == (width, height)
    assert stats["copper_layers"] == 2 and stats["copper_layer_names"] == ["F.Cu", "B.Cu"]
    assert stats["footprints"] == footprints and stats["nets"] == nets
    assert stats["tracks"] > 0 and stats["vias"] == 0


def test_model_references(tmp_path: Path) -> None:
    (tmp_path / "3d").mkdir()
    (tmp_path / "3d" / "local.step").write_text("x")
    board = """(kicad_pcb
      (footprint "A" (property "Reference" "U1") (model "${KIPRJMOD}/3d/local.step"))
      (footprint "B" (property "Reference" "U2") (model "${KICAD6_3DMODEL_DIR}/x.wrl"))
      (footprint "C" (property "Reference" "U3") (model "kicad-embed://in.step")
        (embedded_files (file (name "in.step") (type model))))
      (footprint "D" (property "Reference" "U4") (model "kicad-embed://gone.step"))
      (footprint "E" (property "Reference" "U5") (model "${NOPE}/y.step"))
      (footprint "F" (property "Reference" "U6") (model "hidden.step" (hide yes)))
      (footprint "G" (property "Reference" "U7")))"""
    variables = {"KICAD9_3DMODEL_DIR": str(tmp_path / "none"), "KIPRJMOD": str(tmp_path)}
    models = model_references(sexp.parse_sexp(board), variables, tmp_path)
    assert (models["referenced"], models["resolved"], models["hidden"]) == (5, 2, 1)
    assert models["footprints_without_model"] == 1
    missing = {m["reference"]: m["reason"] for m in models["missing"]}
    assert set(missing) == {"U2", "U4", "U5"}
    assert str(tmp_path / "none" / "x.wrl") in missing["U2"]
    assert "NOPE" in missing["U5"]


def test_bom_lines_and_fields(tmp_path: Path) -> None:
    csv_path = tmp_path / "bom.csv"
    csv_path.write_text(
        '"Refs","Value","Footprint","Qty","DNP"\n'
        '"C1,C2","100n","C_0805","2",""\n"J1","CONN","PinHeader","1","DNP"\n'
    )
    netlist = {
        "components": [
            {"reference": "C1", "fields": {"MPN": "X"}},
            {"reference": "C2", "fields": {}},
            {"reference": "J1", "fields": {}},
            {"reference": "TP1", "fields": {}},  # excluded from the BOM
        ]
    }
    bom = bom_data(csv_path, netlist)
    assert bom["lines"][0] == {
        "references": ["C1", "C2"],
        "value": "100n",
        "footprint": "C_0805",
        "quantity": 2,
        "dnp": False,
    }
    assert bom["lines"][1]["dnp"] is True
    assert [c["reference"] for c in bom["components"]] == ["C1", "C2", "J1"]
    csv_path.write_text('"Reference","Value"\n"R1","1k"\n')
    with pytest.raises(outputs.ReportError, match="unexpected columns"):
        bom_data(csv_path, None)


def test_svg_problem(tmp_path: Path) -> None:
    good, bad, other = tmp_path / "a.svg", tmp_path / "b.svg", tmp_path / "c.svg"
    good.write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    bad.write_text("<svg")
    other.write_text(json.dumps({"not": "svg"}))
    assert svg_problem(good) is None
    assert "not valid XML" in (svg_problem(bad) or "")
    assert svg_problem(tmp_path / "none.svg") == "kicad-cli wrote no none.svg"
    assert svg_problem(other) is not None
