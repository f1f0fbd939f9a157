"""The check pipeline end to end: upload → planner → work queue → worker → events → recorder →
API, on real servers and real tools (the RTL kinds here: pyverilog and Verilator)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hwrepo.config import Settings
from hwrepo.service_layer import waveforms
from hwrepo.service_layer.backends import Backends
from tests.conftest import Actor, make_actor
from tests.pipeline import pipeline_stack, running_worker, upload_dir, wait_for_checks

DESIGNS = Path(__file__).resolve().parents[2] / "designs"
SIM_CACHE = Path(os.environ.get("HWREPO_TEST_CACHE", "/tmp/hwrepo-test-cache")) / "worker"


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, Backends, TestClient]]:
    with pipeline_stack(settings, tmp_path) as parts:
        yield parts


def _project(client: TestClient, actor: Actor, name: str) -> str:
    r = client.post(
        "/api/v1/projects",
        json={"name": name, "kind": "hardware", "licence": "CERN-OHL-P-2.0"},
        headers=actor.headers,
    )
    assert r.status_code == 201, r.text
    return f"{actor.name}/{name}"


def test_rtl_revision_is_checked_and_results_come_back(
    stack: tuple[Settings, Backends, TestClient],
) -> None:
    settings, backends, client = stack
    alice = make_actor(backends, "alice")
    project = _project(client, alice, "lint")
    with running_worker(settings, kinds=["rtl-lint", "rtl-structure"]):
        rev = upload_dir(client, alice.headers, project, DESIGNS / "rtl-lint-findings")
        body = wait_for_checks(client, project, rev["number"], timeout_s=120)
    assert body["planned"] is True
    by_kind = {c["kind"]: c for c in body["checks"]}
    assert set(by_kind) == {"rtl-lint", "rtl-structure"}
    lint = by_kind["rtl-lint"]
    assert lint["state"] == "passed"  # warnings only; fail_on defaults to errors
    assert body["state"] == "success"
    assert lint["counts"]["total"] == 17
    assert lint["counts"]["by_type"]["LATCH"] == 2

    detail = client.get(lint["url"]).json()
    assert detail["details"]["violations_total"] == 17
    assert {a["name"] for a in detail["artifacts"]} >= {"log.txt", "result.sarif"}
    latches = client.get(lint["url"] + "/violations", params={"type": "LATCH"}).json()
    assert latches["total"] == 2 and all(v["type"] == "LATCH" for v in latches["items"])
    sarif = client.get(lint["url"] + "/sarif")
    assert sarif.status_code == 200
    assert len(json.loads(sarif.content)["runs"][0]["results"]) == 17
    log = client.get(lint["url"] + "/log", params={"limit": 100})
    assert log.status_code == 200 and len(log.content) == 100
    assert int(log.headers["X-Next-Offset"]) == 100

    structure = client.get(by_kind["rtl-structure"]["url"]).json()
    assert structure["state"] == "passed"
    assert structure["details"]["tops"] == ["findings"]

    page = client.get(f"/{project}")
    assert page.status_code == 200
    assert 'class="state state-success">success' in page.text
    assert "17 warnings" in page.text


def test_revision_without_checkable_files_is_planned_with_no_checks(
    stack: tuple[Settings, Backends, TestClient],
) -> None:
    settings, backends, client = stack
    alice = make_actor(backends, "alice")
    project = _project(client, alice, "docs")
    r = client.post(
        f"/api/v1/projects/{project}/revisions",
        files=[("files", ("README.md", b"# notes\n"))],
        headers=alice.headers,
    )
    assert r.status_code == 201
    before = client.get(f"/api/v1/projects/{project}/revisions/1/checks").json()
    assert before["state"] == "pending" and before["planned"] is False  # never a false green
    with running_worker(settings, kinds=["rtl-lint"]):
        body = wait_for_checks(client, project, 1, timeout_s=60)
    assert body == {
        "state": "success",
        "checks_state": "success",
        "review": {
            "state": "none",
            "required": 0,
            "approvals": 0,
            "approved_by": [],
            "changes_requested_by": [],
            "open_threads": 0,
        },
        "planned": True,
        "plan_errors": [],
        "waiting_for": [],
        "required": [],
        "missing_required": [],
        "counts": body["counts"],
        "checks": [],
    }


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_waiver_and_rerun_change_the_verdict(
    stack: tuple[Settings, Backends, TestClient],
) -> None:
    settings, backends, client = stack
    alice = make_actor(backends, "alice")
    project = _project(client, alice, "strict")
    # Warnings fail this design, so the lint check fails...
    (toml := settings.data_dir / "hwrepo.toml").parent.mkdir(parents=True, exist_ok=True)
    toml.write_text('[rtl]\nfail_on = ["error", "warning"]\n')
    files = [
        ("files", ("hwrepo.toml", toml.read_bytes())),
        *[
            ("files", (p.relative_to(DESIGNS / "rtl-lint-findings").as_posix(), p.read_bytes()))
            for p in sorted((DESIGNS / "rtl-lint-findings" / "rtl").glob("*.v"))
        ],
    ]
    r = client.post(f"/api/v1/projects/{project}/revisions", files=files, headers=alice.headers)
    assert r.status_code == 201, r.text
    with running_worker(settings, kinds=["rtl-lint", "rtl-structure"]):
        body = wait_for_checks(client, project, 1, timeout_s=120)
        lint = next(c for c in body["checks"] if c["kind"] == "rtl-lint")
        assert lint["state"] == "failed" and body["state"] == "failure"
        # ... until every type is waived; the waived findings stay visible.
        for vtype in lint["counts"]["by_type"]:
            w = client.post(
                f"/api/v1/projects/{project}/waivers",
                json={"kind": "rtl-lint", "type": vtype, "reason": "known, on purpose"},
                headers=alice.headers,
            )
            assert w.status_code == 201, w.text
        rr = client.post(lint["url"] + "/rerun", headers=alice.headers)
        assert rr.status_code == 202 and rr.json() == {"queued": [lint["id"]]}
        body = wait_for_checks(client, project, 1, timeout_s=120)
    lint2 = next(c for c in body["checks"] if c["kind"] == "rtl-lint")
    assert lint2["run"] == 2 and lint2["state"] == "passed"
    assert lint2["counts"]["waived"] == lint2["counts"]["total"] == 17
    # A reader may look but not re-run.
    bob = make_actor(backends, "bob")
    assert client.post(lint["url"] + "/rerun", headers=bob.headers).status_code == 403


def test_kicad_board_is_checked_with_waivers_and_exclusions(
    stack: tuple[Settings, Backends, TestClient],
) -> None:
    settings, backends, client = stack
    alice = make_actor(backends, "alice")
    project = _project(client, alice, "board")
    w = client.post(
        f"/api/v1/projects/{project}/waivers",
        json={"kind": "drc", "type": "silk_overlap", "reason": "the version label may overlap"},
        headers=alice.headers,
    )
    assert w.status_code == 201
    with running_worker(settings, kinds=["drc", "erc", "render"]):
        upload_dir(
            client, alice.headers, project, DESIGNS / "kicad-violations", directory="hw board"
        )
        body = wait_for_checks(client, project, 1, timeout_s=180)
    by_kind = {c["kind"]: c for c in body["checks"]}
    assert set(by_kind) == {"drc", "erc", "render"}
    assert body["state"] == "failure"
    drc = by_kind["drc"]
    assert drc["name"] == "hw board/violations.kicad_pcb"
    assert drc["state"] == "failed"
    assert drc["counts"]["by_type"] == {
        "clearance": 1,
        "copper_edge_clearance": 1,
        "silk_overlap": 1,
        "unconnected_items": 1,
    }
    assert drc["counts"]["waived"] == 1 and drc["counts"]["excluded"] == 1
    silk = client.get(drc["url"] + "/violations", params={"waived": True}).json()
    assert [v["type"] for v in silk["items"]] == ["silk_overlap"]
    erc = by_kind["erc"]
    assert erc["name"] == "hw board/violations.kicad_sch"
    assert erc["state"] == "failed"
    assert erc["counts"]["by_type"] == {"pin_not_connected": 1, "power_pin_not_driven": 1}
    render = client.get(by_kind["render"]["url"]).json()
    assert render["state"] == "passed", render["summary"]
    names = {a["name"] for a in render["artifacts"]}
    assert {"pcb-3d.png", "bom.json", "netlist.json", "board.json"} <= names
    png = client.get(by_kind["render"]["url"] + "/artifacts/pcb-3d.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    detail = client.get(drc["url"]).json()
    assert detail["details"]["kicad_version"].startswith("9.")
    page = client.get(f"/{project}").text
    assert f"{by_kind['render']['id']}/artifacts/pcb-3d.png" in page


def test_simulation_verdicts_through_the_api(
    stack: tuple[Settings, Backends, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, backends, client = stack
    settings = settings.model_copy(update={"worker_cache_dir": SIM_CACHE})
    alice = make_actor(backends, "alice")
    project = _project(client, alice, "fifo")
    with running_worker(settings, kinds=["simulation"]):
        upload_dir(client, alice.headers, project, DESIGNS / "rtl-axis-fifo")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            body = client.get(f"/api/v1/projects/{project}/revisions/1/checks").json()
            sims = [c for c in body["checks"] if c["kind"] == "simulation"]
            if sims and all(c["state"] not in {"queued", "running"} for c in sims):
                break
            time.sleep(0.5)
    (sim,) = sims
    assert sim["name"] == "tests/test_axis_fifo.py · icarus"
    assert sim["state"] == "failed"  # one test fails on purpose
    assert sim["counts"] == {"passed": 5, "failed": 1, "skipped": 0, "errored": 0}
    detail = client.get(sim["url"]).json()
    verdicts = {t["name"]: t["status"] for t in detail["details"]["tests"]}
    assert verdicts == {
        "test_single_frame_passthrough": "passed",
        "test_frames_keep_order_and_boundaries": "passed",
        "test_backpressure_fills_fifo": "passed",
        "test_full_throughput": "passed",
        "test_reset_flushes_contents": "passed",
        "test_known_failure_wrong_expected_order": "failed",
    }
    failed = next(t for t in detail["details"]["tests"] if t["status"] == "failed")
    assert "AssertionError" in failed["message"] or "FIFO order" in failed["message"]
    assert detail["detected"]["toplevel"] == "axis_fifo"
    xml = client.get(sim["url"] + "/artifacts/results.xml")
    assert xml.status_code == 200 and b"<testsuite" in xml.content
    wave = client.get(sim["url"] + "/waveform")
    assert wave.status_code == 200 and len(wave.content) > 100
    # the viewer's questions are answered in a sandbox once; the same question again is kept
    sandboxed: list[str] = []

    class Counted(waveforms.Sandbox):
        def python(self, entry: str, *args: Any, **kwargs: Any) -> Any:
            sandboxed.append(entry)
            return super().python(entry, *args, **kwargs)

    monkeypatch.setattr(waveforms, "Sandbox", Counted)
    listed = [client.get(sim["url"] + "/waveform/signals") for _ in range(2)]
    assert [r.status_code for r in listed] == [200, 200] and listed[0].json() == listed[1].json()
    signals = listed[0].json()
    clock = next(s["name"] for s in signals["signals"] if s["name"].endswith("clk"))
    window = {"signal": clock, "start": 0, "end": signals["end"], "pixels": 200}
    seen = [client.get(sim["url"] + "/waveform/changes", params=window) for _ in range(2)]
    assert [r.status_code for r in seen] == [200, 200] and seen[0].json() == seen[1].json()
    assert seen[0].json()["signals"][clock]["changes"], "the clock changes"
    assert sandboxed == [f"{waveforms.INSIDE}:signals", f"{waveforms.INSIDE}:changes"]
    narrower = client.get(sim["url"] + "/waveform/changes", params={**window, "pixels": 100})
    assert narrower.status_code == 200 and len(sandboxed) == 3  # another question: read again
    log = client.get(sim["url"] + "/log")
    assert log.status_code == 200 and b"test_known_failure_wrong_expected_order" in log.content


def test_a_newer_revision_cancels_the_queued_jobs_of_an_older_one(
    stack: tuple[Settings, Backends, TestClient],
) -> None:
    settings, backends, client = stack
    alice = make_actor(backends, "alice")
    project = _project(client, alice, "busy")
    # Two revisions are planned before any job worker runs.
    upload_dir(client, alice.headers, project, DESIGNS / "rtl-counter" / "rtl", message="one")
    upload_dir(client, alice.headers, project, DESIGNS / "rtl-counter" / "rtl", message="two")
    with running_worker(settings, kinds=[], plan=True):
        deadline = time.monotonic() + 60
        url = f"/api/v1/projects/{project}/revisions/{{}}/checks"
        while not all(client.get(url.format(n)).json()["planned"] for n in (1, 2)):
            assert time.monotonic() < deadline, "the planner did not plan both revisions"
            time.sleep(0.2)
    with running_worker(settings, kinds=["rtl-lint", "rtl-structure"], plan=False):
        old = wait_for_checks(client, project, 1, timeout_s=120)
        new = wait_for_checks(client, project, 2, timeout_s=120)
    assert {c["state"] for c in old["checks"]} == {"cancelled"}
    assert all("superseded" in c["summary"] for c in old["checks"])
    assert old["state"] == "superseded"  # not checked, rather than failed
    assert {c["state"] for c in new["checks"]} == {"passed"}


def test_a_rerun_of_a_superseded_revision_runs(
    stack: tuple[Settings, Backends, TestClient],
) -> None:
    """A maintainer's explicit re-run of an older revision's check is run, although a newer
    revision exists: supersession cancels only queued work nobody asked for again."""
    settings, backends, client = stack
    alice = make_actor(backends, "alice")
    project = _project(client, alice, "again")
    upload_dir(client, alice.headers, project, DESIGNS / "rtl-counter" / "rtl", message="one")
    upload_dir(client, alice.headers, project, DESIGNS / "rtl-counter" / "rtl", message="two")
    with running_worker(settings, kinds=[], plan=True):
        deadline = time.monotonic() + 60
        url = f"/api/v1/projects/{project}/revisions/{{}}/checks"
        while not all(client.get(url.format(n)).json()["planned"] for n in (1, 2)):
            assert time.monotonic() < deadline, "the planner did not plan both revisions"
            time.sleep(0.2)
    with running_worker(settings, kinds=["rtl-lint", "rtl-structure"], plan=False):
        old = wait_for_checks(client, project, 1, timeout_s=120)
        assert {c["state"] for c in old["checks"]} == {"cancelled"}
        lint = next(c for c in old["checks"] if c["kind"] == "rtl-lint")
        r = client.post(lint["url"] + "/rerun", headers=alice.headers)
        assert r.status_code == 202 and r.json() == {"queued": [lint["id"]]}, r.text
        again = wait_for_checks(client, project, 1, timeout_s=120)
    rerun = next(c for c in again["checks"] if c["kind"] == "rtl-lint")
    assert (rerun["run"], rerun["state"]) == (2, "passed"), rerun["summary"]
    structure = next(c for c in again["checks"] if c["kind"] == "rtl-structure")
    assert (structure["run"], structure["state"]) == (1, "cancelled")  # not asked for again
    assert again["state"] == "superseded"  # what did not pass was superseded


def test_queued_checks_no_worker_can_run_are_named(
    stack: tuple[Settings, Backends, TestClient],
) -> None:
    settings, backends, client = stack
    alice = make_actor(backends, "alice")
    project = _project(client, alice, "half")
    with running_worker(settings, kinds=["rtl-lint"]):
        upload_dir(client, alice.headers, project, DESIGNS / "rtl-counter" / "rtl")
        deadline = time.monotonic() + 60
        url = f"/api/v1/projects/{project}/revisions/1/checks"
        while True:
            body = client.get(url).json()
            lint = [c for c in body["checks"] if c["kind"] == "rtl-lint"]
            if lint and lint[0]["state"] == "passed":
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.2)
        assert body["state"] == "pending"
        assert body["waiting_for"] == ["rtl-structure"]  # no worker here runs it
