"""Review threads and verdicts on the real stack: a thread on a violation follows it into the
next revision, a waiver made from it carries forward, required approvals hold a revision at
pending, Markdown is rendered without raw HTML, roles decide who may say what, events are
published, and `hwrepo reindex` brings everything back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hwrepo.adapters import eventbus
from hwrepo.checks.kicad.kind import unavailable
from hwrepo.config import Settings
from hwrepo.domain.events import EVENTS_STREAM
from hwrepo.service_layer.backends import Backends
from hwrepo.service_layer.reindex import reindex
from tests.conftest import Actor, make_actor
from tests.integration.test_comparisons import DESIGNS, board_revision_two
from tests.pipeline import new_project, pipeline_stack, running_worker, upload_dir, wait_for_checks


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, Backends, TestClient]]:
    with pipeline_stack(settings, tmp_path) as parts:
        yield parts


def _member(client: TestClient, owner: Actor, project: str, who: Actor, role: str) -> None:
    r = client.put(
        f"/api/v1/projects/{project}/members/{who.name}", json={"role": role}, headers=owner.headers
    )
    assert r.status_code == 200, r.text


def _checks(
    client: TestClient, project: str, number: int, who: Actor | None = None
) -> dict[str, Any]:
    headers = who.headers if who else {}
    r = client.get(f"/api/v1/projects/{project}/revisions/{number}/checks", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def _drc(client: TestClient, project: str, number: int) -> dict[str, Any]:
    url = next(c["url"] for c in _checks(client, project, number)["checks"] if c["kind"] == "drc")
    return client.get(url).json()


def _last_event(settings: Settings, subject: str) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        nc = await eventbus.connect(settings, name="test-reviews")
        try:
            msg = await nc.jetstream().get_last_msg(EVENTS_STREAM, subject)
            return json.loads(msg.data)
        finally:
            await nc.close()

    return asyncio.run(go())


@pytest.mark.needs(unavailable())
def test_a_thread_on_a_violation_follows_it_and_its_waiver_carries_forward(
    stack: tuple[Settings, Backends, TestClient], tmp_path: Path
) -> None:
    settings, backends, client = stack
    alice, bob, carol = (make_actor(backends, n) for n in ("alice", "bob", "carol"))
    project = new_project(client, alice.headers, "board")
    _member(client, alice, project, bob, "reviewer")
    _member(client, alice, project, carol, "reader")
    with running_worker(settings, kinds=["drc", "erc", "render"]):
        upload_dir(client, alice.headers, project, DESIGNS / "kicad-violations")
        wait_for_checks(client, project, 1, timeout_s=240)
        one = _drc(client, project, 1)
        by_type = {v["type"]: v for v in one["details"]["violations"]}
        unconnected, clearance = by_type["unconnected_items"], by_type["clearance"]

        def thread_on(violation: dict[str, Any], text: str) -> dict[str, Any]:
            r = client.post(
                f"/api/v1/projects/{project}/revisions/1/threads",
                json={
                    "anchor": {
                        "kind": "violation",
                        "check_kind": "drc",
                        "check_name": one["name"],
                        "identity": violation["identity"],
                    },
                    "body": text,
                },
                headers=bob.headers,
            )
            assert r.status_code == 201, r.text
            return r.json()

        followed = thread_on(unconnected, "GND is **not routed** <script>alert(1)</script>")
        thread_on(clearance, "Too close to J1 [pad](javascript:alert(1))")
        html = followed["comments"][0]["html"]
        assert "<strong>not routed</strong>" in html and "<script>" not in html
        assert "&lt;script&gt;" in html
        assert _last_event(settings, "hwrepo.events.review.created")["data"]["thread_id"]

        # readers read, but do not comment; reviewers reply and resolve; authors edit their own
        r = client.post(
            f"/api/v1/projects/{project}/threads/{followed['id']}/comments",
            json={"body": "me too"},
            headers=carol.headers,
        )
        assert r.status_code == 403 and "reviewer" in r.json()["detail"]
        r = client.post(
            f"/api/v1/projects/{project}/threads/{followed['id']}/comments",
            json={"body": "Routing it next revision."},
            headers=alice.headers,
        )
        assert r.status_code == 201 and len(r.json()["comments"]) == 2
        first = followed["comments"][0]["id"]
        r = client.patch(
            f"/api/v1/projects/{project}/threads/{followed['id']}/comments/{first}",
            json={"body": "edited by alice"},
            headers=alice.headers,
        )
        assert r.status_code == 403
        r = client.patch(
            f"/api/v1/projects/{project}/threads/{followed['id']}/comments/{first}",
            json={"body": "GND is not routed between J1 and D1."},
            headers=bob.headers,
        )
        assert r.status_code == 200 and r.json()["comments"][0]["edited"]

        # waived from its thread: later checks mark it waived while it still matches
        r = client.post(
            f"/api/v1/projects/{project}/threads/{followed['id']}/waiver",
            json={"reason": "routed by hand at assembly"},
            headers=bob.headers,
        )
        assert r.status_code == 403  # waiving needs a maintainer
        r = client.post(
            f"/api/v1/projects/{project}/threads/{followed['id']}/waiver",
            json={"reason": "routed by hand at assembly"},
            headers=alice.headers,
        )
        assert r.status_code == 201, r.text
        waiver = r.json()["waiver"]
        assert waiver["type"] == "unconnected_items" and waiver["items"]
        assert r.json()["thread"]["waiver_id"] == waiver["id"]

        upload_dir(client, alice.headers, project, board_revision_two(tmp_path))
        wait_for_checks(client, project, 2, timeout_s=240)
    two = _drc(client, project, 2)
    moved = next(v for v in two["details"]["violations"] if v["type"] == "unconnected_items")
    assert moved["waived"] and moved["identity"] == unconnected["identity"]

    threads = client.get(f"/api/v1/projects/{project}/revisions/2/threads").json()
    assert [(t["id"], t["followed_from"]) for t in threads] == [(followed["id"], 1)]
    assert len(client.get(f"/api/v1/projects/{project}/revisions/1/threads").json()) == 2

    r = client.patch(
        f"/api/v1/projects/{project}/threads/{followed['id']}",
        json={"resolved": True},
        headers=bob.headers,
    )
    assert r.status_code == 200 and r.json()["resolved_by"] == "bob"
    open_only = client.get(
        f"/api/v1/projects/{project}/revisions/1/threads", params={"resolved": False}
    ).json()
    assert len(open_only) == 1

    before = client.get(f"/api/v1/projects/{project}/revisions/1/threads").json()
    report = reindex(backends)
    assert report.threads == 2
    assert client.get(f"/api/v1/projects/{project}/revisions/1/threads").json() == before


def test_required_approvals_hold_a_revision_at_pending(
    stack: tuple[Settings, Backends, TestClient], tmp_path: Path
) -> None:
    settings, backends, client = stack
    alice, bob, dave, eve = (make_actor(backends, n) for n in ("alice", "bob", "dave", "eve"))
    project = new_project(client, alice.headers, "notes", visibility="private")
    _member(client, alice, project, bob, "reviewer")
    _member(client, alice, project, dave, "reviewer")
    r = client.patch(
        f"/api/v1/projects/{project}", json={"required_approvals": 2}, headers=alice.headers
    )
    assert r.status_code == 200 and r.json()["required_approvals"] == 2
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "README.md").write_text("# notes\n\nNo design files: no checks.\n")
    with running_worker(settings, kinds=[]):
        upload_dir(client, alice.headers, project, docs)
        deadline_body = None
        for _ in range(100):
            deadline_body = _checks(client, project, 1, alice)
            if deadline_body["checks_state"] != "pending":
                break
            asyncio.run(asyncio.sleep(0.1))
    body = deadline_body
    assert body is not None and body["checks_state"] == "success"
    assert body["state"] == "pending"
    assert body["review"] == {
        "state": "pending",
        "required": 2,
        "approvals": 0,
        "approved_by": [],
        "changes_requested_by": [],
        "open_threads": 0,
    }

    url = f"/api/v1/projects/{project}/revisions/1/review"
    r = client.post(url, json={"verdict": "approve"}, headers=alice.headers)
    assert r.status_code == 403 and "someone else" in r.json()["detail"]
    r = client.post(url, json={"verdict": "approve"}, headers=eve.headers)
    assert r.status_code == 404  # private: outsiders see nothing
    assert client.get(url, headers=eve.headers).status_code == 404
    assert client.get(f"/api/v1/projects/{project}/revisions/1/threads").status_code == 404
    assert client.get(f"/api/v1/projects/{project}/compare/1").status_code == 404
    r = client.post(url, json={"verdict": "maybe"}, headers=bob.headers)
    assert r.status_code == 422

    assert client.post(url, json={"verdict": "approve"}, headers=bob.headers).json()["state"] == (
        "pending"
    )
    assert _checks(client, project, 1, alice)["state"] == "pending"
    r = client.post(
        url, json={"verdict": "request_changes", "comment": "typo"}, headers=dave.headers
    )
    assert r.json()["state"] == "changes_requested"
    assert _checks(client, project, 1, alice)["state"] == "failure"
    r = client.post(url, json={"verdict": "approve"}, headers=dave.headers)
    assert r.json()["state"] == "approved"
    body = _checks(client, project, 1, alice)
    assert body["state"] == "success" and body["review"]["approved_by"] == ["bob", "dave"]
    event = _last_event(settings, "hwrepo.events.review.verdict")
    assert event["data"] == {
        "project_id": client.get(f"/api/v1/projects/{project}", headers=alice.headers).json()["id"],
        "revision": 1,
        "reviewer": "dave",
        "verdict": "approve",
        "state": "approved",
    }

    review = client.get(url, headers=alice.headers).json()
    assert [v["reviewer"] for v in review["verdicts"]] == ["bob", "dave"]
    report = reindex(backends)
    assert report.verdicts == 2
    assert client.get(url, headers=alice.headers).json()["verdicts"] == review["verdicts"]
    assert _checks(client, project, 1, alice)["state"] == "success"


def test_anchors_are_checked_against_the_revision(
    stack: tuple[Settings, Backends, TestClient],
) -> None:
    _, backends, client = stack
    alice = make_actor(backends, "alice")
    project = new_project(client, alice.headers, "counter")
    upload_dir(client, alice.headers, project, DESIGNS / "rtl-counter")
    url = f"/api/v1/projects/{project}/revisions/1/threads"
    cases = [
        ({"kind": "file", "path": "rtl/nope.v", "line_start": 3}, 422, "no file 'rtl/nope.v'"),
        ({"kind": "file", "path": "rtl/counter.v"}, 422, "needs line_start"),
        (
            {"kind": "file", "path": "rtl/counter.v", "line_start": 9, "line_end": 3},
            422,
            "line_end comes before",
        ),
        (
            {"kind": "violation", "check_kind": "drc", "check_name": "x", "identity": "y"},
            422,
            "no drc check named 'x'",
        ),
        ({"kind": "point", "x_mm": 1, "y_mm": 2}, 422, "layer or the schematic sheet"),
    ]
    for anchor, status, words in cases:
        r = client.post(url, json={"anchor": anchor, "body": "look"}, headers=alice.headers)
        assert r.status_code == status, (anchor, r.text)
        assert words in r.text, (anchor, r.text)
    r = client.post(
        url,
        json={"anchor": {"kind": "file", "path": "rtl/counter.v", "line_start": 18}, "body": " "},
        headers=alice.headers,
    )
    assert r.status_code == 422
    r = client.post(
        url,
        json={
            "anchor": {"kind": "file", "path": "rtl/counter.v", "line_start": 18, "line_end": 19},
            "body": "Why is `wrap` registered?",
        },
        headers=alice.headers,
    )
    assert r.status_code == 201, r.text
    r = client.post(
        url,
        json={"anchor": {"kind": "point", "x_mm": 104, "y_mm": 106, "layer": "F.Cu"}, "body": "x"},
        headers=alice.headers,
    )
    assert r.status_code == 201
    assert client.get(url).json()[0]["anchor"]["line_end"] == 19
    assert client.post(url, json={"anchor": {"kind": "revision"}, "body": "hi"}).status_code == 401
