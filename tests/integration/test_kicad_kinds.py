"""The drc, erc and render kinds against the real kicad-cli, on designs/kicad-clean and
designs/kicad-violations and on copies of them made hostile. Each count is compared with what
the bare kicad-cli reports for the same file in the same test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hwrepo.checks.core.kind import CheckKind, CheckResult
from hwrepo.checks.core.local import LocalRevision
from hwrepo.checks.kicad.drc import DrcKind
from hwrepo.checks.kicad.erc import ErcKind
from hwrepo.checks.kicad.kind import unavailable
from hwrepo.checks.kicad.render import RenderKind
from hwrepo.checks.run.runner import Sandbox
from hwrepo.domain.checks import Waiver

pytestmark = pytest.mark.needs(unavailable())

DESIGNS = Path(__file__).resolve().parents[2] / "designs"
CLEAN = DESIGNS / "kicad-clean"
VIOLATIONS = DESIGNS / "kicad-violations"
TEMPLATE = Path("/usr/share/kicad/template")


# -- the bare kicad-cli, run as the designs' READMEs say -----------------------------------------


def bare_env(tmp_path: Path) -> dict[str, str]:
    """A fresh, empty HOME with KiCad's library tables copied in."""
    home = tmp_path / "bare-home"
    config = home / ".config" / "kicad" / "9.0"
    if not config.is_dir():
        config.mkdir(parents=True)
        for table in ("sym-lib-table", "fp-lib-table"):
            shutil.copyfile(TEMPLATE / table, config / table)
    return {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8"}


def bare(tmp_path: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kicad-cli", *args],
        cwd=cwd,
        env=bare_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def bare_report(tmp_path: Path, design: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "bare-report.json"
    out.unlink(missing_ok=True)
    done = bare(tmp_path, design.parent, *args[:-1], "-o", str(out), design.name)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text())


def bare_drc(tmp_path: Path, board: Path, parity: bool = True) -> dict[str, Any]:
    args = ["pcb", "drc", "--format", "json", "--severity-all"]
    return bare_report(tmp_path, board, *args, *(["--schematic-parity"] if parity else []), "x")


def bare_erc(tmp_path: Path, schematic: Path) -> dict[str, Any]:
    return bare_report(tmp_path, schematic, "sch", "erc", "--format", "json", "--severity-all", "x")


def drc_entries(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        *report["violations"],
        *report["unconnected_items"],
        *report.get("schematic_parity", []),
    ]


def erc_entries(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for sheet in report["sheets"] for v in sheet["violations"]]


def tally(entries: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, int]]:
    return (
        dict(Counter(e["type"] for e in entries)),
        dict(Counter(e["severity"] for e in entries)),
    )


# -- running a kind as a worker would ------------------------------------------------------------


def run(
    kind: CheckKind,
    root: Path,
    tmp_path: Path,
    name: str | None = None,
    waivers: list[Waiver] | None = None,
    timeout_s: float | None = None,
) -> CheckResult:
    rev = LocalRevision(root)
    planned = kind.plan(rev)
    job_plan = planned[0] if name is None else next(p for p in planned if p.name == name)
    assert job_plan.error is None, job_plan.error
    job = rev.job(job_plan, kind.name)
    job.waivers = waivers or []
    if timeout_s is not None:
        job.timeout_s = timeout_s
    work = tmp_path / f"ws-{kind.name}-{len(list(tmp_path.glob('ws-*')))}"
    ws = rev.workspace(job, work / "root", work / "cache")
    return kind.run(job, ws, Sandbox(ws))


def waiver(type_: str, *, kind: str = "drc", severity: str | None = None) -> Waiver:
    return Waiver(
        id=f"w-{type_}",
        kind=kind,
        type=type_,
        severity=severity,
        reason=f"{type_} accepted for this board",
        author="alice",
        created="2025-01-01T00:00:00Z",
    )


def artifact(result: CheckResult, name: str) -> Path:
    found = {a.name: a.path for a in result.artifacts}
    assert name in found, sorted(found)
    return found[name]


def copy(design: Path, tmp_path: Path, under: str = "rev/design") -> Path:
    target = tmp_path / under
    shutil.copytree(design, target)
    return target


def kicad_version() -> str:
    done = subprocess.run(["kicad-cli", "version"], capture_output=True, text=True, check=True)
    return done.stdout.strip()


# -- DRC -----------------------------------------------------------------------------------------


def test_clean_design_passes_drc_and_erc(tmp_path: Path) -> None:
    drc = run(DrcKind(), CLEAN, tmp_path)
    erc = run(ErcKind(), CLEAN, tmp_path)
    assert (drc.state, drc.summary) == ("passed", "0 errors, 0 warnings"), drc.summary
    assert (erc.state, erc.summary) == ("passed", "0 errors, 0 warnings"), erc.summary
    assert drc_entries(bare_drc(tmp_path, CLEAN / "clean-led.kicad_pcb")) == []
    assert erc_entries(bare_erc(tmp_path, CLEAN / "clean-led.kicad_sch")) == []
    for result, key, path in (
        (drc, "board", "clean-led.kicad_pcb"),
        (erc, "schematic", "clean-led.kicad_sch"),
    ):
        d = result.details
        assert d["tool"] == "kicad-cli" and d[key] == path
        assert d["kicad_version"] == kicad_version()
        assert d["libraries"]["symbols"]["available"] > 100
        assert d["libraries"]["footprints"]["available"] > 100
        assert d["counts"] == {
            "total": 0,
            "by_type": {},
            "by_severity": {},
            "waived": 0,
            "excluded": 0,
        }
        assert d["fail_on"] == ["error"] and d["violations"] == []
    assert drc.details["schematic_parity"]["checked"] is True


def test_violations_drc_fails_with_kicad_cli_counts(tmp_path: Path) -> None:
    result = run(DrcKind(), VIOLATIONS, tmp_path, waivers=[waiver("silk_overlap")])
    expected = bare_drc(tmp_path, VIOLATIONS / "violations.kicad_pcb")
    by_type, by_severity = tally(drc_entries(expected))
    counts = result.details["counts"]
    assert result.state == "failed", result.summary
    assert (counts["by_type"], counts["by_severity"]) == (by_type, by_severity)
    assert by_type == {
        "clearance": 1,
        "copper_edge_clearance": 1,
        "silk_overlap": 1,
        "unconnected_items": 1,
    }
    assert (counts["waived"], counts["excluded"], result.details["blocking"]) == (1, 1, 2)
    assert result.summary == "3 errors, 1 warning (1 waived, 1 excluded); 2 blocking"
    assert result.details["sections"] == {
        "violations": 3,
        "unconnected_items": 1,
        "schematic_parity": 0,
    }

    violations = {v["type"]: v for v in result.details["violations"]}
    edge = violations["copper_edge_clearance"]
    assert (edge["excluded"], edge["waived"], edge["severity"]) == (True, False, "error")
    silk = violations["silk_overlap"]
    assert silk["waived"] and silk["waiver"] == "silk_overlap accepted for this board"
    assert not violations["clearance"]["waived"] and not violations["clearance"]["excluded"]
    clearance_track = violations["clearance"]["items"][0]
    assert (clearance_track["x_mm"], clearance_track["y_mm"]) == (105.075, 106.0)
    assert clearance_track["uuid"] == "410841ea-1e7c-4033-b3ae-d98523683f74"
    assert "Cable-tie notch" in result.details["exclusions"][0]["comment"]

    assert json.loads(artifact(result, "report.json").read_text())["violations"]
    sarif = json.loads(artifact(result, "result.sarif").read_text())
    suppressed = {
        r["ruleId"]: [s["kind"] for s in r.get("suppressions", [])]
        for r in sarif["runs"][0]["results"]
    }
    assert suppressed["copper_edge_clearance"] == ["inSource"]
    assert suppressed["silk_overlap"] == ["external"]
    assert "pcb drc" in artifact(result, "log.txt").read_text()


def test_waiving_every_error_type_passes_and_fail_on_warning_fails(tmp_path: Path) -> None:
    waivers = [waiver("clearance"), waiver("unconnected_items")]
    passed = run(DrcKind(), VIOLATIONS, tmp_path, waivers=waivers)
    assert passed.state == "passed", passed.summary
    shown = {v["type"]: v for v in passed.details["violations"]}
    assert len(shown) == 4  # waived and excluded violations stay visible
    assert shown["clearance"]["waived"] and shown["unconnected_items"]["waived"]
    assert shown["copper_edge_clearance"]["excluded"]
    assert passed.summary == "3 errors, 1 warning (2 waived, 1 excluded)"

    # the clean design has no warning to fail on: the violations design's silk_overlap is one
    root = copy(VIOLATIONS, tmp_path).parent
    (root / "hwrepo.toml").write_text('[kicad]\nfail_on = ["error", "warning"]\n')
    failed = run(DrcKind(), root, tmp_path, waivers=waivers)
    assert failed.state == "failed", failed.summary
    assert failed.details["fail_on"] == ["error", "warning"]
    assert failed.details["blocking"] == 1
    assert failed.summary.endswith("; 1 blocking")

    # a severity override instead of a waiver
    raised = run(
        DrcKind(),
        VIOLATIONS,
        tmp_path,
        waivers=[*waivers, waiver("silk_overlap", severity="error")],
    )
    assert raised.state == "failed" and raised.details["counts"]["by_severity"] == {"error": 4}


def test_truncated_board_errors_with_kicad_cli_message(tmp_path: Path) -> None:
    design = copy(VIOLATIONS, tmp_path)
    board = design / "violations.kicad_pcb"
    data = board.read_bytes()
    board.write_bytes(data[: len(data) // 2])
    done = bare(
        tmp_path,
        design,
        "pcb",
        "drc",
        "--format",
        "json",
        "-o",
        str(tmp_path / "x.json"),
        board.name,
    )
    assert done.returncode == 3 and not (tmp_path / "x.json").exists()

    result = run(DrcKind(), design.parent, tmp_path)
    assert result.state == "errored"
    assert "exit 3" in result.summary and "Failed to load board" in result.summary
    assert result.details["kicad_version"] == kicad_version()
    assert "report.json" not in {a.name for a in result.artifacts}

    render = run(RenderKind(), design.parent, tmp_path)
    assert render.state == "errored"
    failed = {f["output"] for f in render.details["failed"]}
    assert "3D view" in failed and "board statistics" in failed
    assert "Failed to load board" in render.summary
    made = {a["name"] for a in render.details["artifacts"]}
    assert {"netlist.json", "bom.json"} <= made  # the schematic's outputs were still made


def test_truncated_schematic_errors(tmp_path: Path) -> None:
    design = copy(CLEAN, tmp_path)
    sch = design / "clean-led.kicad_sch"
    sch.write_text(sch.read_text()[:5000])
    result = run(ErcKind(), design.parent, tmp_path)
    assert result.state == "errored"
    assert "Failed to load schematic" in result.summary


def test_truncated_sub_sheet_is_not_a_silent_pass(tmp_path: Path) -> None:
    design = copy(VIOLATIONS, tmp_path)
    sub = design / "led_driver.kicad_sch"
    sub.write_text(sub.read_text()[:3000])
    # kicad-cli skips the sheet without a word: exit 0, and D2's open pin is not reported
    silent = bare_erc(tmp_path, design / "violations.kicad_sch")
    assert "pin_not_connected" not in {e["type"] for e in erc_entries(silent)}

    erc = run(ErcKind(), design.parent, tmp_path)
    assert erc.state == "errored"
    assert "design/led_driver.kicad_sch: truncated" in erc.summary
    drc = run(DrcKind(), design.parent, tmp_path)
    assert drc.details["schematic_parity"]["checked"] is False
    assert "truncated" in drc.details["schematic_parity"]["reason"]
    render = run(RenderKind(), design.parent, tmp_path)
    assert render.state == "errored" and "incomplete" in render.summary


def test_unreadable_project_file_is_reported(tmp_path: Path) -> None:
    design = copy(VIOLATIONS, tmp_path)
    (design / "violations.kicad_pro").write_text("{not json")
    result = run(DrcKind(), design.parent, tmp_path)
    # kicad-cli falls back to its defaults: the design's exclusion is gone
    assert result.state == "failed" and result.details["counts"]["excluded"] == 0
    assert "violations.kicad_pro cannot be read" in result.details["project_file_problem"]


def test_board_without_project_file_is_checked(tmp_path: Path) -> None:
    design = copy(VIOLATIONS, tmp_path)
    (design / "violations.kicad_pro").unlink()
    rev = LocalRevision(design.parent)
    (drc_job,) = DrcKind().plan(rev)
    assert drc_job.name == "design/violations.kicad_pcb"
    assert drc_job.params["project"] is None
    assert drc_job.params["schematic"] == "design/violations.kicad_sch"
    assert [j.name for j in ErcKind().plan(rev)] == ["design/violations.kicad_sch"]

    result = run(DrcKind(), design.parent, tmp_path)
    expected = bare_drc(tmp_path, design / "violations.kicad_pcb")
    by_type, by_severity = tally(drc_entries(expected))
    counts = result.details["counts"]
    assert (counts["by_type"], counts["by_severity"]) == (by_type, by_severity)
    # the exclusion lived in the project file: without it the violation is an error again
    assert counts["excluded"] == 0
    assert result.state == "failed" and result.details["blocking"] == 3


def test_paths_with_spaces_and_several_projects(tmp_path: Path) -> None:
    copy(CLEAN, tmp_path, "rev/my board")
    copy(VIOLATIONS, tmp_path, "rev/other project/rev b")
    root = tmp_path / "rev"
    rev = LocalRevision(root)
    names = sorted(j.name for j in DrcKind().plan(rev))
    assert names == ["my board/clean-led.kicad_pcb", "other project/rev b/violations.kicad_pcb"]
    planned = next(j for j in DrcKind().plan(rev) if j.name.startswith("my board/"))
    assert planned.inputs and all(p.startswith("my board/") for p in planned.inputs)

    drc = run(DrcKind(), root, tmp_path, name="my board/clean-led.kicad_pcb")
    assert drc.state == "passed", drc.summary
    erc = run(ErcKind(), root, tmp_path, name="other project/rev b/violations.kicad_sch")
    assert erc.state == "failed" and erc.details["counts"]["total"] == 2


def test_timeout(tmp_path: Path) -> None:
    result = run(DrcKind(), VIOLATIONS, tmp_path, timeout_s=0.05)
    assert result.state == "timed_out", result.summary
    assert "did not finish" in result.summary


# -- ERC -----------------------------------------------------------------------------------------


def test_erc_runs_on_the_root_sheet(tmp_path: Path) -> None:
    rev = LocalRevision(VIOLATIONS)
    assert [j.name for j in ErcKind().plan(rev)] == ["violations.kicad_sch"]
    result = run(ErcKind(), VIOLATIONS, tmp_path)
    expected = bare_erc(tmp_path, VIOLATIONS / "violations.kicad_sch")
    counts = result.details["counts"]
    assert (counts["by_type"], counts["by_severity"]) == tally(erc_entries(expected))
    assert counts["by_type"] == {"pin_not_connected": 1, "power_pin_not_driven": 1}
    assert result.state == "failed" and result.summary == "2 errors, 0 warnings; 2 blocking"
    assert [s["path"] for s in result.details["sheets"]] == ["/", "/led_driver/"]

    # positions in real mm, where the schematic files put these objects
    items = {v["type"]: v["items"][0] for v in result.details["violations"]}
    pin = items["pin_not_connected"]
    assert (pin["x_mm"], pin["y_mm"], pin["sheet"]) == (54.61, 63.5, "/led_driver/")
    pwr = items["power_pin_not_driven"]
    assert (pwr["x_mm"], pwr["y_mm"], pwr["sheet"]) == (40.64, 88.9, "/")
    raw = {v["type"]: v["items"][0]["pos"] for v in erc_entries(expected)}
    assert raw["pin_not_connected"] == {"x": 0.5461, "y": 0.635}  # what kicad-cli writes
    assert result.details["positions"]["scale"] == 100

    # the sub-sheet alone, as the bare kicad-cli would check it, is a different (wrong) answer
    alone = bare_erc(tmp_path, VIOLATIONS / "led_driver.kicad_sch")
    assert len(erc_entries(alone)) == 5


def test_erc_waiver(tmp_path: Path) -> None:
    waivers = [
        waiver("pin_not_connected", kind="erc"),
        waiver("power_pin_not_driven", kind="*"),
        waiver("clearance", kind="drc"),  # another kind's waiver does not apply
    ]
    result = run(ErcKind(), VIOLATIONS, tmp_path, waivers=waivers)
    assert result.state == "passed", result.summary
    assert result.details["counts"]["waived"] == 2
    assert result.summary == "2 errors, 0 warnings (2 waived)"


# -- render --------------------------------------------------------------------------------------


def test_render_makes_every_output(tmp_path: Path) -> None:
    result = run(RenderKind(), VIOLATIONS, tmp_path)
    assert result.state == "passed", (result.summary, result.details["failed"])
    names = {a.name for a in result.artifacts}
    assert names >= {
        "schematic/violations.svg",
        "schematic/violations-led_driver.svg",
        "pcb-front.svg",
        "pcb-back.svg",
        "pcb-3d.png",
        "bom.json",
        "bom.csv",
        "netlist.json",
        "netlist.xml",
        "board.json",
        "log.txt",
    }
    for name in names:
        path = artifact(result, name)
        assert path.stat().st_size > 0, name
        if name.endswith(".svg"):
            assert ET.parse(path).getroot().tag.endswith("svg")
    assert artifact(result, "pcb-3d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    listed = {a["name"]: a for a in result.details["artifacts"]}
    assert listed["pcb-back.svg"]["what"].startswith("board, back")
    assert listed["schematic/violations-led_driver.svg"]["what"] == "schematic, sheet led_driver"

    bom = json.loads(artifact(result, "bom.json").read_text())
    refs = sorted(r for line in bom["lines"] for r in line["references"])
    assert refs == ["D1", "D2", "J1", "R1", "R2"]
    d2 = next(c for c in bom["components"] if c["reference"] == "D2")
    assert (d2["value"], d2["footprint"]) == ("Red", "LED_SMD:LED_0805_2012Metric")
    assert d2["fields"]["Description"] == "Light emitting diode"

    netlist = json.loads(artifact(result, "netlist.json").read_text())
    nets = {n["name"]: {(x["reference"], x["pin"]) for x in n["nodes"]} for n in netlist["nets"]}
    assert nets["/VIN"] == {("J1", "1"), ("R1", "1"), ("R2", "1")}
    assert nets["GND"] == {("J1", "2"), ("D1", "1")}
    assert len(nets) == 5

    stats = result.details["board_statistics"]
    assert (stats["width_mm"], stats["height_mm"], stats["copper_layers"]) == (24, 14, 2)
    assert (stats["footprints"], stats["nets"], stats["vias"]) == (5, 5, 0)
    assert json.loads(artifact(result, "board.json").read_text()) == stats

    models = Path(result.details["3d_models"]["dir"])
    missing = result.details["missing_3d_models"]
    if not models.is_dir():  # kicad-packages3d is optional
        assert sorted(m["reference"] for m in missing) == ["D1", "D2", "J1", "R1", "R2"]
        assert "rendered without 5 of 5 3D models" in result.summary
    assert result.details["kicad_version"] == kicad_version()


def test_render_board_only(tmp_path: Path) -> None:
    design = copy(CLEAN, tmp_path)
    for name in ("clean-led.kicad_pro", "clean-led.kicad_sch"):
        (design / name).unlink()
    result = run(RenderKind(), design.parent, tmp_path)
    assert result.state == "passed", result.summary
    assert result.details["skipped"] == [
        {"output": "schematic, BOM, netlist", "reason": "no schematic"}
    ]
    stats = result.details["board_statistics"]
    assert (stats["width_mm"], stats["height_mm"], stats["footprints"]) == (22, 12, 4)


@pytest.mark.parametrize("kind", [DrcKind(), ErcKind(), RenderKind()])
def test_available(kind: CheckKind) -> None:
    assert kind.available() is None
