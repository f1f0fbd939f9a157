"""The bucket is the source of truth: `reindex` rebuilds an empty database from it, and the
repository then behaves as before (same projects, members, revisions, tokens, numbering)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hwrepo.adapters.db.index import ProjectQuery
from hwrepo.adapters.db.orm import ProjectRow
from hwrepo.config import Settings
from hwrepo.domain.model import Project, Revision, User
from hwrepo.entrypoints.api.app import create_app
from hwrepo.service_layer.backends import Backends
from hwrepo.service_layer.reindex import reindex
from tests.conftest import Actor, make_actor
from tests.integration.helpers import (
    API,
    assert_problem,
    content,
    create_project,
    revision_total,
    upload,
    uploaded,
)
from tests.pipeline import pipeline_stack, running_worker, wait_for_checks


@dataclass
class Snapshot:
    users: list[User]
    projects: dict[str, Project]
    revisions: dict[str, list[Revision]]
    counters: dict[str, int]


def snapshot(backends: Backends) -> Snapshot:
    """Everything the index holds about users, projects and revisions, in domain terms."""
    with backends.reading() as index:
        users = index.users()
        admin = next(u for u in users if u.admin)
        projects, total = index.search_projects(ProjectQuery(viewer=admin, per_page=100))
        assert total == len(projects)
        revisions: dict[str, list[Revision]] = {}
        counters: dict[str, int] = {}
        for project in projects:
            rows, count = index.revisions(project.id, per_page=200)
            numbers = sorted(r.number for r, _, _ in rows)
            assert len(numbers) == count
            found = [index.revision(project.id, n) for n in numbers]
            revisions[project.full_name] = [r for r in found if r is not None]
            counters[project.full_name] = index.session.scalar(
                select(ProjectRow.revision_counter).where(ProjectRow.id == project.id)
            )
    return Snapshot(users, {p.full_name: p for p in projects}, revisions, counters)


def _fill(api: TestClient, alice: Actor, bob: Actor, carol: Actor) -> dict[str, Any]:
    """Users, public and private projects with members, topics, links, a waiver, revisions
    (with a base and an Idempotency-Key), a deleted project and one deleted and re-created."""
    put = {"alice": alice.headers, "bob": bob.headers, "carol": carol.headers}
    create_project(
        api,
        bob,
        "firmware",
        kind="software",
        licence="Apache-2.0 OR MIT",
        topics=["rust", "led"],
        description="Firmware for the board",
    )
    create_project(
        api,
        alice,
        "board",
        topics=["kicad", "led"],
        links=[{"project": "bob/firmware", "relation": "firmware"}],
        description="The board",
    )
    create_project(api, alice, "secret", visibility="private", licence="LicenseRef-mine")
    for project, member, role in [
        ("alice/secret", "bob", "reader"),
        ("alice/secret", "carol", "maintainer"),
        ("alice/board", "carol", "reviewer"),
    ]:
        r = api.put(f"{API}/{project}/members/{member}", json={"role": role}, headers=put["alice"])
        assert r.status_code == 200, r.text
    r = api.patch(f"{API}/alice/board", json={"description": "The board, v2"}, headers=put["alice"])
    assert r.status_code == 200
    r = api.post(
        f"{API}/alice/board/waivers",
        json={"kind": "drc", "type": "silk_overlap", "reason": "cosmetic"},
        headers=put["alice"],
    )
    assert r.status_code == 201, r.text

    uploaded(api, alice, "alice/board", {"pcb/b.kicad_pcb": content("pcb1", 900)}, message="r1")
    uploaded(api, alice, "alice/board", {"pcb/b.kicad_sch": content("sch", 300)}, message="r2")
    uploaded(api, alice, "alice/board", {"README.md": b"# board\n"}, base=1, message="on 1")
    uploaded(api, alice, "alice/secret", {"s.v": b"module s; endmodule\n"}, message="alice's")
    uploaded(api, carol, "alice/secret", {"t.v": b"module t; endmodule\n"}, message="carol's")
    uploaded(
        api,
        bob,
        "bob/firmware",
        {"src/main.rs": b"fn main() {}\n"},
        message="first",
        headers={"Idempotency-Key": "fw-1"},
    )
    # Deleted: must stay deleted.
    create_project(api, alice, "gone")
    uploaded(api, alice, "alice/gone", {"x.txt": b"x"})
    assert api.delete(f"{API}/alice/gone", headers=put["alice"]).status_code == 204
    # Deleted and made again: only the new one comes back.
    create_project(api, alice, "phoenix", description="old")
    uploaded(api, alice, "alice/phoenix", {"old.txt": b"old"})
    uploaded(api, alice, "alice/phoenix", {"old.txt": b"older"})
    assert api.delete(f"{API}/alice/phoenix", headers=put["alice"]).status_code == 204
    phoenix = create_project(api, alice, "phoenix", description="new")
    uploaded(api, alice, "alice/phoenix", {"new.txt": b"new"})
    return phoenix


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_reindex_into_an_empty_database_restores_everything(
    api: TestClient,
    backends: Backends,
    settings: Settings,
    fresh_database: str,
    alice: Actor,
    bob: Actor,
    carol: Actor,
    admin: Actor,
) -> None:
    phoenix = _fill(api, alice, bob, carol)
    before = snapshot(backends)
    assert sorted(before.projects) == [
        "alice/board",
        "alice/phoenix",
        "alice/secret",
        "bob/firmware",
    ]
    assert before.counters == {
        "alice/board": 3,
        "alice/phoenix": 1,
        "alice/secret": 2,
        "bob/firmware": 1,
    }

    rebuilt_settings = settings.model_copy(update={"database_url": fresh_database})
    rebuilt = Backends.from_settings(rebuilt_settings)
    try:
        with rebuilt.reading() as index:
            assert index.users() == []
        report = reindex(rebuilt)
        assert (report.users, report.projects, report.revisions, report.skipped) == (4, 4, 7, 2)
        after = snapshot(rebuilt)

        assert after.users == before.users  # names, admin flags, token digests
        assert after.projects == before.projects  # every field, members, links, waivers
        assert after.projects["alice/phoenix"].id == phoenix["id"]
        assert after.projects["alice/secret"].members == before.projects["alice/secret"].members
        assert after.revisions == before.revisions  # numbers, authors, messages, files, keys
        assert after.counters == before.counters
        assert [
            (r.number, r.author, r.message, r.parent) for r in after.revisions["alice/secret"]
        ] == [
            (1, "alice", "alice's", None),
            (2, "carol", "carol's", 1),
        ]

        with TestClient(create_app(rebuilt_settings, rebuilt, relay=False)) as rebuilt_api:
            # The tokens still authenticate, with the same rights.
            r = rebuilt_api.get(f"{API}/alice/secret", headers=bob.headers)
            assert r.status_code == 200
            assert r.json()["members"] == {"bob": "reader", "carol": "maintainer"}
            assert_problem(upload(rebuilt_api, bob, "alice/secret", {"b.v": b"b"}), 403)
            assert_problem(rebuilt_api.get(f"{API}/alice/secret"), 404)
            names = [
                p["full_name"] for p in rebuilt_api.get(API, headers=admin.headers).json()["items"]
            ]
            assert sorted(names) == sorted(before.projects)
            assert sorted(p["full_name"] for p in rebuilt_api.get(API).json()["items"]) == [
                "alice/board",
                "alice/phoenix",
                "bob/firmware",
            ]
            # The deleted project stays deleted; the re-created one has only its own revision.
            assert_problem(rebuilt_api.get(f"{API}/alice/gone", headers=alice.headers), 404)
            assert revision_total(rebuilt_api, alice, "alice/phoenix") == 1
            assert rebuilt_api.get(f"{API}/alice/phoenix").json()["description"] == "new"
            # An Idempotency-Key still replays.
            r = upload(
                rebuilt_api,
                bob,
                "bob/firmware",
                {"src/main.rs": b"fn main() {}\n"},
                message="first",
                headers={"Idempotency-Key": "fw-1"},
            )
            assert (r.status_code, r.headers.get("idempotent-replayed")) == (201, "true")
            assert r.json()["number"] == 1
            # The next uploads get the next numbers.
            assert uploaded(rebuilt_api, carol, "alice/secret", {"c.v": b"c"})["number"] == 3
            assert uploaded(rebuilt_api, alice, "alice/board", {"d.v": b"d"})["number"] == 4
            assert uploaded(rebuilt_api, alice, "alice/phoenix", {"e.v": b"e"})["number"] == 2
            r = rebuilt_api.get(f"{API}/alice/board/revisions/1/files/pcb/b.kicad_pcb")
            assert r.content == content("pcb1", 900)
    finally:
        rebuilt.close()


def test_reindex_in_place_is_idempotent_and_keeps_deleted_projects_out(
    api: TestClient, backends: Backends, alice: Actor, bob: Actor, carol: Actor, admin: Actor
) -> None:
    _fill(api, alice, bob, carol)
    before = snapshot(backends)
    for _ in range(2):
        report = reindex(backends)
        assert (report.users, report.projects, report.revisions, report.skipped) == (4, 4, 7, 2)
        assert snapshot(backends) == before
    assert_problem(api.get(f"{API}/alice/gone", headers=alice.headers), 404)
    assert uploaded(api, alice, "alice/board", {"next.txt": b"n"})["number"] == 4


COUNTER = Path(__file__).resolve().parents[2] / "designs" / "rtl-counter" / "rtl" / "counter.v"


def _checks_view(client: TestClient, project: str, number: int) -> dict[str, Any]:
    body = client.get(f"{API}/{project}/revisions/{number}/checks").json()
    return {
        "state": body["state"],
        "checks": sorted(
            (c["id"], c["kind"], c["name"], c["run"], c["state"], c["summary"])
            for c in body["checks"]
        ),
    }


def test_reindex_keeps_checks_that_ended_without_running(
    settings: Settings, tmp_path: Path, fresh_database: str
) -> None:
    """Cancelled by a newer revision, and errored by its planning: final states that no job
    ever ran for. After the index is lost they come back as they were, not queued."""
    rtl = {"rtl/counter.v": COUNTER.read_bytes()}
    with pipeline_stack(settings, tmp_path) as (own, backends, client):
        alice = make_actor(backends, "alice")
        create_project(client, alice, "busy")
        create_project(client, alice, "broken")
        uploaded(client, alice, "alice/busy", rtl, message="one")
        uploaded(client, alice, "alice/busy", rtl, message="two")
        bad_toml = b'[rtl]\nfail_on = ["sometimes"]\n'
        uploaded(client, alice, "alice/broken", {**rtl, "hwrepo.toml": bad_toml})
        revisions = [("alice/busy", 1), ("alice/busy", 2), ("alice/broken", 1)]
        with running_worker(own, kinds=[], plan=True):  # planned before any job runs
            deadline = time.monotonic() + 60
            url = f"{API}/{{}}/revisions/{{}}/checks"
            while not all(client.get(url.format(*r)).json()["planned"] for r in revisions):
                assert time.monotonic() < deadline, "the planner did not plan every revision"
                time.sleep(0.2)
        with running_worker(own, kinds=["rtl-lint", "rtl-structure"], plan=False):
            for project, number in revisions:
                wait_for_checks(client, project, number, timeout_s=120)
        before = {r: _checks_view(client, *r) for r in revisions}
        assert {c[4] for c in before[("alice/busy", 1)]["checks"]} == {"cancelled"}
        assert {c[4] for c in before[("alice/busy", 2)]["checks"]} == {"passed"}
        broken = before[("alice/broken", 1)]["checks"]
        assert {c[4] for c in broken} == {"errored"} and len(broken) == 2
        assert all("fail_on" in c[5] for c in broken), broken

        rebuilt_settings = own.model_copy(update={"database_url": fresh_database})
        rebuilt = Backends.from_settings(rebuilt_settings)
        try:
            report = reindex(rebuilt)
            assert report.checks == 6
            with TestClient(create_app(rebuilt_settings, rebuilt, relay=False)) as rebuilt_api:
                after = {r: _checks_view(rebuilt_api, *r) for r in revisions}
                assert after == before
                # Final again, so a maintainer may re-run them.
                cancelled = before[("alice/busy", 1)]["checks"][0][0]
                r = rebuilt_api.post(
                    f"{API}/alice/busy/revisions/1/checks/{cancelled}/rerun", headers=alice.headers
                )
                assert (r.status_code, r.json()) == (202, {"queued": [cancelled]}), r.text
        finally:
            rebuilt.close()
