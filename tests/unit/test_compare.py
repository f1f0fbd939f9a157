"""How violations, tests and interfaces are matched across two revisions (core/compare.py and
the kinds' compare())."""

from __future__ import annotations

from typing import Any

from hwrepo.checks.core.compare import (
    BOARD_KEYS,
    CheckSide,
    identity,
    match_violations,
)
from hwrepo.checks.kicad.compare_render import compare_render, difference_picture
from hwrepo.checks.rtl.lint import RtlLint
from hwrepo.checks.rtl.structure import RtlStructure
from hwrepo.checks.simulation.kind import compare_tests
from hwrepo.service_layer.comparisons import headline


def board(type_: str, x: float, y: float, *uuids: str, text: str = "d") -> dict[str, Any]:
    items = [{"uuid": u, "x_mm": x, "y_mm": y} for u in uuids] or [{"x_mm": x, "y_mm": y}]
    return {"type": type_, "description": text, "items": items}


def side(**details: Any) -> CheckSide:
    return CheckSide(state="failed", summary="", details=details)


def test_board_violations_match_by_items_even_when_moved() -> None:
    a = [board("clearance", 1, 1, "u1", "u2"), board("silk_overlap", 5, 5, "u3")]
    b = [board("clearance", 9, 9, "u2", "u1"), board("silk_overlap", 5, 5, "u4")]
    found = match_violations(a, b, BOARD_KEYS, positional=True)
    assert [v["items"][0]["uuid"] for v in found["unchanged"]] == ["u2", "u4"]
    # silk_overlap without shared uuids: the description and position still match
    assert [v["type"] for v in found["new"]] == []
    assert [v["type"] for v in found["resolved"]] == []


def test_without_uuids_the_position_decides_within_the_tolerance() -> None:
    a = [board("pin_not_connected", 10, 10), board("pin_not_connected", 50, 50)]
    b = [board("pin_not_connected", 10.4, 10), board("pin_not_connected", 80, 80)]
    found = match_violations(a, b, BOARD_KEYS, positional=True)
    assert [v["items"][0]["x_mm"] for v in found["unchanged"]] == [10.4]
    assert [v["items"][0]["x_mm"] for v in found["new"]] == [80]
    assert [v["items"][0]["x_mm"] for v in found["resolved"]] == [50]


def test_lint_findings_match_by_rule_file_line_then_by_message() -> None:
    a = [
        {"type": "WIDTH", "file": "a.v", "line": 3, "description": "w"},
        {"type": "UNUSED", "file": "a.v", "line": 9, "description": "x unused"},
    ]
    b = [
        {"type": "WIDTH", "file": "a.v", "line": 3, "description": "w changed"},
        {"type": "UNUSED", "file": "a.v", "line": 12, "description": "x unused"},
        {"type": "LATCH", "file": "b.v", "line": 1, "description": "latch"},
    ]
    found = RtlLint().compare(side(violations=a), side(violations=b)).entry
    assert found["counts"] == {"new": 1, "resolved": 0, "unchanged": 2}
    assert found["new"][0]["type"] == "LATCH"


def test_identity_is_stable_and_names_the_items() -> None:
    v = board("clearance", 1, 1, "u1", "u2")
    w = board("clearance", 7, 7, "u2", "u1", text="other words")
    assert identity(v) == identity(w)
    assert identity(v) != identity(board("clearance", 1, 1, "u1"))


def test_tests_by_name() -> None:
    def t(name: str, status: str) -> dict[str, Any]:
        return {"name": name, "status": status, "message": f"{name} {status}"}

    a = side(tests=[t("a", "passed"), t("b", "failed"), t("c", "failed"), t("d", "passed")])
    b = side(tests=[t("a", "failed"), t("b", "passed"), t("c", "errored"), t("e", "passed")])
    entry = compare_tests(a, b).entry
    assert [x["name"] for x in entry["newly_failing"]] == ["a"]
    assert entry["newly_failing"][0]["was"] == "passed"
    assert [x["name"] for x in entry["newly_passing"]] == ["b"]
    assert [x["name"] for x in entry["still_failing"]] == ["c"]
    assert [x["name"] for x in entry["added"]] == ["e"]
    assert [x["name"] for x in entry["removed"]] == ["d"]
    assert headline(entry).startswith("1 newly failing, 1 newly passing")


def test_ports_and_parameters() -> None:
    def module(width: int, default: str) -> dict[str, Any]:
        return {
            "name": "top",
            "ports": [
                {"name": "clk", "direction": "input", "width": 1},
                {"name": "d", "direction": "input", "width": width},
            ],
            "parameters": [{"name": "N", "default": default}],
        }

    entry = (
        RtlStructure()
        .compare(side(modules=[module(8, "4")]), side(modules=[module(16, "4"), {"name": "new"}]))
        .entry
    )
    assert entry["modules_added"] == ["new"]
    (changed,) = entry["modules_changed"]
    assert changed["ports"]["changed"] == [{"name": "d", "width": {"from": 8, "to": 16}}]
    assert changed["parameters"] == {"added": [], "removed": [], "changed": []}


def test_the_difference_picture_overlays_both_images_in_board_coordinates() -> None:
    a = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 20 10"/>'
    b = b'<svg xmlns="http://www.w3.org/2000/svg" width="30mm" viewBox="-5 0 30 12"></svg>'
    picture = difference_picture("pcb-front.svg", a, b)
    assert picture is not None
    assert picture.startswith(b"<svg") and b'viewBox="-5 0 30 12"' in picture
    assert picture.count(b"data:image/svg+xml;base64,") == 2
    assert b"<script" not in picture
    assert difference_picture("pcb-front.svg", a, b"<svg></svg>") is None  # no viewBox
    assert difference_picture("x.png", b"not a png", b"not a png") is None


def _render_side(pictures: dict[str, bytes]) -> CheckSide:
    return CheckSide(
        state="passed",
        summary="",
        details={},
        artifact_names=list(pictures),
        artifact=pictures.get,
    )


def test_renders_that_differ_only_in_their_export_time_are_the_same_picture() -> None:
    def svg(when: str, x: int) -> bytes:
        return (
            '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 20 10">'
            f"<title>SVG Image created as b.svg date {when} </title><desc>Image</desc>"
            f'<rect x="{x}" y="1" width="2" height="2"/></svg>'
        ).encode()

    a = _render_side({"pcb-front.svg": svg("2026/12/01 10:00:00", 1), "pcb-back.svg": svg("1", 1)})
    b = _render_side({"pcb-front.svg": svg("2026/12/03 13:11:54", 1), "pcb-back.svg": svg("2", 5)})
    entry = compare_render(a, b).entry
    assert {v["name"]: v["changed"] for v in entry["views"]} == {
        "pcb-back.svg": True,
        "pcb-front.svg": False,
    }
    assert entry["pictures_changed"] == ["pcb-back.svg"]
    assert headline(entry) == "1 picture changed"
