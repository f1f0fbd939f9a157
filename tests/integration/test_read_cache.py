"""Answers kept while the index is unchanged (service_layer/readcache.py) are never stale: two
API processes share one index, one keeps answers, the other changes things, and the first
answers with the change at once: a description, a private project, a member, a finished check,
a revoked token. The reads really are kept (the keeping side counts hits)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from hwrepo.config import Settings
from hwrepo.domain import events
from hwrepo.entrypoints.api.app import create_app
from hwrepo.service_layer import checks
from hwrepo.service_layer.backends import Backends
from tests.conftest import Actor, prepare_backends
from tests.integration.helpers import API, assert_problem, create_project, uploaded

BOTH = pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)

READS = (
    API,
    f"{API}/alice/board",
    f"{API}/alice/board/revisions",
    f"{API}/alice/board/revisions/1",
    f"{API}/alice/board/revisions/1/checks",
)


@pytest.fixture
def keeper(settings: Settings, backends: Backends) -> Iterator[tuple[TestClient, Backends]]:
    """A second API process on the same index and bucket, with backends of its own."""
    own = prepare_backends(settings)
    try:
        with TestClient(create_app(settings, own, relay=False)) as client:
            yield client, own
    finally:
        own.close()


def _finished(project: dict[str, str], revision: dict[str, str], state: str) -> events.Event:
    return events.make_event(
        events.CheckFinished(
            check_id=str(uuid.uuid4()),
            run=1,
            revision_id=revision["id"],
            project_id=project["id"],
            number=1,
            kind="rtl-lint",
            name="lint",
            state=state,
            summary=f"lint {state}",
        ),
        id=str(uuid.uuid4()),
        project="alice/board",
        project_id=project["id"],
        revision=1,
    )


@BOTH
def test_kept_answers_follow_every_change_made_elsewhere(
    api: TestClient,
    backends: Backends,
    keeper: tuple[TestClient, Backends],
    alice: Actor,
    bob: Actor,
) -> None:
    other, kept = keeper
    project = create_project(api, alice, "board", description="first words")
    revision = uploaded(api, alice, "alice/board", {"rtl/top.v": b"module top; endmodule\n"})
    planned = events.RevisionPlanned(
        project_id=project["id"], revision_id=revision["id"], number=1, checks=1
    )
    assert checks.record(
        backends,
        events.make_event(
            planned, id=str(uuid.uuid4()), project="alice/board", project_id=project["id"]
        ),
    )
    assert checks.record(backends, _finished(project, revision, "passed"))

    first = {path: other.get(path, headers=alice.headers).json() for path in READS}
    hits = kept.read_cache.hits
    again = {path: other.get(path, headers=alice.headers).json() for path in READS}
    assert again == first
    assert kept.read_cache.hits >= hits + len(READS), "the second reads were not kept answers"
    assert first[f"{API}/alice/board"]["description"] == "first words"
    assert first[f"{API}/alice/board/revisions/1/checks"]["state"] == "success"

    # a change through the other process: the keeper answers with it at once
    r = api.patch(f"{API}/alice/board", json={"description": "new words"}, headers=alice.headers)
    assert r.status_code == 200, r.text
    assert other.get(f"{API}/alice/board", headers=alice.headers).json()["description"] == (
        "new words"
    )
    listed = other.get(API, headers=alice.headers).json()["items"]
    assert [p["description"] for p in listed if p["name"] == "board"] == ["new words"]

    # an event recorded elsewhere (the recorder of another API process)
    assert checks.record(backends, _finished(project, revision, "failed"))
    after = other.get(f"{API}/alice/board/revisions/1/checks", headers=alice.headers).json()
    assert after["state"] == "failure" and after["counts"] != first[READS[4]]["counts"]

    # private: outsiders lose it at once; a member added elsewhere sees it at once
    assert other.get(f"{API}/alice/board/revisions/1", headers=bob.headers).status_code == 200
    r = api.patch(f"{API}/alice/board", json={"visibility": "private"}, headers=alice.headers)
    assert r.status_code == 200, r.text
    for path in READS[1:]:
        assert_problem(other.get(path, headers=bob.headers), 404)
        assert_problem(other.get(path), 404)
    assert all(p["name"] != "board" for p in other.get(API, headers=bob.headers).json()["items"])
    r = api.put(f"{API}/alice/board/members/bob", json={"role": "reader"}, headers=alice.headers)
    assert r.status_code == 200, r.text
    for path in READS[1:]:
        assert other.get(path, headers=bob.headers).status_code == 200, path

    # a token revoked elsewhere is refused at once, though its credentials were kept
    tokens = api.get(f"{API.removesuffix('/projects')}/user/tokens", headers=bob.headers).json()
    assert other.get(READS[3], headers=bob.headers).status_code == 200
    for token in tokens:
        r = api.delete(
            f"{API.removesuffix('/projects')}/user/tokens/{token['id']}", headers=bob.headers
        )
        assert r.status_code == 204, r.text
    problem = assert_problem(other.get(READS[3], headers=bob.headers), 401)
    assert "revoked" in problem["detail"]


@BOTH
def test_the_generation_moves_with_writes_only(backends: Backends, alice: Actor) -> None:
    before = backends.database.generation()
    with backends.reading() as index:
        assert index.user("alice") is not None
    assert backends.database.generation() == before
    with backends.writing() as index:
        index.delete_sessions_of("alice")
    assert backends.database.generation() == before + 1
    with pytest.raises(RuntimeError), backends.writing() as index:
        index.delete_sessions_of("alice")
        raise RuntimeError("rolled back")
    assert backends.database.generation() == before + 1
