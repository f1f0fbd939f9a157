"""Comparing revisions on the real stack: two revisions of a KiCad board (one violation fixed,
one introduced, a part moved, a BOM value changed) and two of an RTL design (a port's width
changed, a test starts failing), through the API, with real kicad-cli, Icarus and pyverilog."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hwrepo.adapters.objectstore import comparison_prefix
from hwrepo.checks.kicad.kind import unavailable
from hwrepo.config import Settings
from hwrepo.domain.events import event_id
from hwrepo.service_layer.backends import Backends
from hwrepo.service_layer.comparisons import basis_digest
from tests.conftest import make_actor
from tests.pipeline import new_project, pipeline_stack, running_worker, upload_dir, wait_for_checks

DESIGNS = Path(__file__).resolve().parents[2] / "designs"
NEW_TEXT_UUID = "5b1e6a52-7c1d-4a8e-9a44-0c2f3d9e7a11"


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, Backends, TestClient]]:
    with pipeline_stack(settings, tmp_path) as parts:
        yield parts


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) >= 1, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def board_revision_two(tmp_path: Path) -> Path:
    """designs/kicad-violations with: the clearance violation fixed (the net class allows the
    gap), a new silkscreen overlap (a text on R2's reference), D1 moved by 0.5 mm with its track,
    and R2's value changed from 1k to 2k2 in schematic and board alike."""
    root = tmp_path / "board-2"
    shutil.copytree(DESIGNS / "kicad-violations", root)
    pcb = root / "violations.kicad_pcb"
    _edit(pcb, "(at 118 104 180)", "(at 118.5 104 180)")
    _edit(pcb, "(end 117.0625 104)", "(end 117.5625 104)")
    text = pcb.read_text()
    r2 = text.index('(property "Reference" "R2"')
    value = text.index('(property "Value" "1k"', r2)
    pcb.write_text(text[:value] + '(property "Value" "2k2"' + text[value + 22 :])
    _edit(
        pcb,
        '\t(gr_text "violations"',
        f'\t(gr_text "v0.2"\n\t\t(at 112.5 108.35 0)\n\t\t(layer "F.SilkS")\n'
        f'\t\t(uuid "{NEW_TEXT_UUID}")\n'
        "\t\t(effects\n\t\t\t(font\n\t\t\t\t(size 1 1)\n"
        "\t\t\t\t(thickness 0.15)\n\t\t\t)\n\t\t)\n\t)\n"
        '\t(gr_text "violations"',
    )
    _edit(root / "violations.kicad_pro", '"clearance": 0.2,', '"clearance": 0.05,')
    sch = root / "led_driver.kicad_sch"
    text = sch.read_text()
    r2 = text.index('(property "Reference" "R2"')
    value = text.index('(property "Value" "1k"', r2)
    sch.write_text(text[:value] + '(property "Value" "2k2"' + text[value + 22 :])
    return root


def _entry(document: dict[str, Any], kind: str) -> dict[str, Any]:
    (entry,) = [c for c in document["checks"] if c["kind"] == kind]
    return entry


def _wait_for_stored(backends: Backends, key: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = backends.store.get_json(key)
        if found and found.get("complete"):
            return found
        time.sleep(0.2)
    raise AssertionError(f"no complete comparison stored at {key}")


@pytest.mark.needs(unavailable())
def test_board_revisions_compared_by_what_the_checks_found(
    stack: tuple[Settings, Backends, TestClient], tmp_path: Path
) -> None:
    settings, backends, client = stack
    alice = make_actor(backends, "alice")
    project = new_project(client, alice.headers, "board")
    with running_worker(settings, kinds=["drc", "erc", "render"]):
        upload_dir(client, alice.headers, project, DESIGNS / "kicad-violations")
        wait_for_checks(client, project, 1, timeout_s=240)
        upload_dir(client, alice.headers, project, board_revision_two(tmp_path))
        wait_for_checks(client, project, 2, timeout_s=240)

    # made ahead of time: stored and announced when revision 2's last check ended
    project_id = client.get(f"/api/v1/projects/{project}").json()["id"]
    stored = _wait_for_stored(backends, comparison_prefix(project_id, 1, 2) + "comparison.json")
    ready_id = event_id("comparison.ready", project_id, "1", "2", basis_digest(stored["basis"]))
    with backends.reading() as index:
        assert index.has_message(ready_id)

    r = client.get(f"/api/v1/projects/{project}/compare/2")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["a"]["number"] == 1 and doc["b"]["number"] == 2 and doc["complete"]
    assert doc["basis"] == stored["basis"]
    assert {f["path"] for f in doc["files"]["changed"]} == {
        "violations.kicad_pcb",
        "violations.kicad_pro",
        "led_driver.kicad_sch",
    }
    assert doc["files"]["added"] == [] and doc["files"]["removed"] == []

    drc = _entry(doc, "drc")
    assert [v["type"] for v in drc["new"]] == ["silk_overlap"]
    assert NEW_TEXT_UUID in {i["uuid"] for i in drc["new"][0]["items"]}
    assert [v["type"] for v in drc["resolved"]] == ["clearance"]
    revision_two = client.get(_check_url(client, project, 2, "drc")).json()
    assert len(drc["unchanged"]) == len(revision_two["details"]["violations"]) - 1
    # the moved part keeps its violation: same items, another position
    moved = [v for v in drc["unchanged"] if v["type"] == "unconnected_items"]
    assert len(moved) == 1
    erc = _entry(doc, "erc")
    assert erc["new"] == [] and erc["resolved"] == [] and erc["unchanged"]

    render = _entry(doc, "render")
    assert render["bom"]["changed"] == [{"reference": "R2", "value": {"from": "1k", "to": "2k2"}}]
    assert render["bom"]["added"] == [] and render["bom"]["removed"] == []
    front = next(v for v in render["views"] if v["name"] == "pcb-front.svg")
    assert front["a"] and front["b"] and front["difference"] == "pcb-front.diff.svg"
    picture = client.get(
        f"/api/v1/projects/{project}/compare/1...2/artifacts/{render['id']}/pcb-front.diff.svg"
    )
    assert picture.status_code == 200
    assert picture.headers["content-type"].startswith("image/svg+xml")
    assert picture.content.count(b'href="data:image/svg+xml;base64,') == 2
    assert "sandbox" in picture.headers["content-security-policy"]
    sheet = next(v for v in render["views"] if v["name"].startswith("schematic/"))
    r = client.get(
        f"/api/v1/projects/{project}/compare/1...2/artifacts/{render['id']}/{sheet['difference']}"
    )
    assert r.status_code == 200 and r.content.startswith(b"<svg")

    diff = client.get(f"/api/v1/projects/{project}/compare/1...2/files/violations.kicad_pro")
    assert diff.status_code == 200
    body = diff.json()
    assert not body["binary"]
    assert '-        "clearance": 0.2,' in body["diff"]
    assert '+        "clearance": 0.05,' in body["diff"]

    # asking again is served from the bucket (same document, same time of computing)
    again = client.get(f"/api/v1/projects/{project}/compare/1...2").json()
    assert again["computed"] == doc["computed"]


def _check_url(client: TestClient, project: str, number: int, kind: str) -> str:
    checks = client.get(f"/api/v1/projects/{project}/revisions/{number}/checks").json()
    return next(c["url"] for c in checks["checks"] if c["kind"] == kind)


def test_rtl_revisions_show_a_changed_port_and_a_newly_failing_test(
    stack: tuple[Settings, Backends, TestClient], tmp_path: Path
) -> None:
    settings, backends, client = stack
    alice = make_actor(backends, "alice")
    project = new_project(client, alice.headers, "counter")
    two = tmp_path / "counter-2"
    shutil.copytree(DESIGNS / "rtl-counter", two)
    # `en` becomes two bits wide, and wrap no longer waits for it: the wrap test fails
    _edit(two / "rtl" / "counter.v", "input  wire             en,", "input  wire [1:0]       en,")
    _edit(two / "rtl" / "counter.v", "wrap <= en & at_max;", "wrap <= at_max;")
    with running_worker(settings, kinds=["simulation", "rtl-structure", "rtl-lint"]):
        upload_dir(client, alice.headers, project, DESIGNS / "rtl-counter")
        wait_for_checks(client, project, 1, timeout_s=300)
        upload_dir(client, alice.headers, project, two)
        wait_for_checks(client, project, 2, timeout_s=300)
    doc = client.get(f"/api/v1/projects/{project}/compare/1...2").json()
    structure = _entry(doc, "rtl-structure")
    assert structure["modules_added"] == [] and structure["modules_removed"] == []
    (module,) = structure["modules_changed"]
    assert module["module"] == "counter"
    (port,) = module["ports"]["changed"]
    assert port["name"] == "en"
    assert "width" in port or "bits" in port
    sim = _entry(doc, "simulation")
    assert [t["name"] for t in sim["newly_failing"]] == ["test_wrap_pulse"]
    assert sim["newly_failing"][0]["was"] == "passed"
    assert sim["newly_failing"][0]["message"]
    assert sim["newly_passing"] == [] and sim["added"] == [] and sim["removed"] == []
    assert "1 newly failing" in sim["headline"]
    assert json.dumps(doc)  # one JSON document


def test_comparing_names_what_is_wrong(stack: tuple[Settings, Backends, TestClient]) -> None:
    _, backends, client = stack
    alice = make_actor(backends, "alice")
    project = new_project(client, alice.headers, "empty")
    upload_dir(client, alice.headers, project, DESIGNS / "rtl-counter")
    for spec, status, words in [
        ("1", 422, "no parent"),
        ("1...1", 422, "two different revisions"),
        ("1...9", 404, "no revision 9"),
        ("x...2", 422, "A...B"),
        ("99999999999...2", 422, "A...B"),
    ]:
        r = client.get(f"/api/v1/projects/{project}/compare/{spec}")
        assert r.status_code == status, (spec, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert words in r.json()["detail"], (spec, r.json())
    r = client.get(f"/api/v1/projects/{project}/compare/1...1/files/nothing.v")
    assert r.status_code == 422
