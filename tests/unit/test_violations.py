from __future__ import annotations

from hwrepo.checks.core.violations import (
    Violation,
    ViolationItem,
    apply_waivers,
    blocking,
    counts,
    to_sarif,
)
from hwrepo.domain.checks import Waiver


def waiver(**kw: object) -> Waiver:
    base: dict[str, object] = {
        "id": "w",
        "type": "silk_overlap",
        "reason": "cosmetic",
        "author": "alice",
        "created": "2026-01-01T00:00:00+00:00",
    }
    base.update(kw)
    return Waiver.model_validate(base)


def board() -> list[Violation]:
    return [
        Violation(
            type="clearance",
            severity="error",
            description="Clearance violation",
            items=[ViolationItem(uuid="u1", description="Track"), ViolationItem(uuid="u2")],
        ),
        Violation(type="silk_overlap", severity="warning", description="Silk overlap"),
        Violation(type="copper_edge_clearance", severity="error", description="x", excluded=True),
    ]


def test_waiver_by_type_marks_and_keeps_the_violation() -> None:
    vs = board()
    apply_waivers(vs, [waiver()], "drc")
    assert [v.waived for v in vs] == [False, True, False]
    assert vs[1].waiver == "cosmetic"
    c = counts(vs)
    assert c == {
        "total": 3,
        "by_type": {"clearance": 1, "copper_edge_clearance": 1, "silk_overlap": 1},
        "by_severity": {"error": 2, "warning": 1},
        "waived": 1,
        "excluded": 1,
    }


def test_waiver_for_another_kind_or_other_items_does_not_apply() -> None:
    vs = board()
    apply_waivers(vs, [waiver(kind="erc"), waiver(type="clearance", items=["nope"])], "drc")
    assert not any(v.waived for v in vs)
    apply_waivers(vs, [waiver(type="clearance", items=["u2"])], "drc")
    assert vs[0].waived


def test_severity_override_and_blocking() -> None:
    vs = board()
    assert [v.type for v in blocking(vs, {"error"})] == ["clearance"]
    apply_waivers(vs, [waiver(type="clearance", severity="warning")], "drc")
    assert vs[0].severity == "warning" and not vs[0].waived
    assert blocking(vs, {"error"}) == []
    assert [v.type for v in blocking(vs, {"error", "warning"})] == ["clearance", "silk_overlap"]


def test_lint_waiver_by_file_and_line() -> None:
    v = Violation(type="LATCH", severity="warning", description="d", file="rtl/a.v", line=12)
    apply_waivers([v], [waiver(type="LATCH", items=["rtl/a.v:12"], kind="rtl-lint")], "rtl-lint")
    assert v.waived


def test_sarif_has_rules_levels_locations_and_suppressions() -> None:
    vs = board()
    apply_waivers(vs, [waiver()], "drc")
    lint = Violation(
        type="LATCH", severity="warning", description="latch", file="rtl/a.v", line=3, column=5
    )
    doc = to_sarif([*vs, lint], tool="kicad-cli", version="9.0.8", artifact="board.kicad_pcb")
    run = doc["runs"][0]
    assert doc["version"] == "2.1.0"
    assert {r["id"] for r in run["tool"]["driver"]["rules"]} == {
        "clearance",
        "silk_overlap",
        "copper_edge_clearance",
        "LATCH",
    }
    results = run["results"]
    assert [r["level"] for r in results] == ["error", "warning", "error", "warning"]
    assert results[1]["suppressions"][0]["kind"] == "external"
    assert results[2]["suppressions"][0]["kind"] == "inSource"
    assert results[3]["locations"][0]["physicalLocation"]["region"] == {
        "startLine": 3,
        "startColumn": 5,
    }
    assert results[0]["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "u1"
