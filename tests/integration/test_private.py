"""A private project is invisible to anyone without a role on it: every endpoint answers 404 with
the words used for a project that does not exist (never 403), and listings leave it out."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from hwrepo.domain import events
from hwrepo.service_layer import checks
from hwrepo.service_layer.backends import Backends
from tests.conftest import Actor
from tests.integration.helpers import API, assert_problem, create_project, headers_of, uploaded

PREFIX = "/api/v1/projects/{owner}/{name}"
TOP_V = b"module top; endmodule\n"


def _not_found(project: str) -> str:
    return f"there is no project {project}, or you have no access to it"


class Secret:
    """alice/secret (private): one revision, one waiver, one finished check, a reader member."""

    def __init__(self, api: TestClient, backends: Backends, alice: Actor, carol: Actor) -> None:
        project = create_project(
            api,
            alice,
            "secret",
            visibility="private",
            description="a hidden board",
            topics=["stealth"],
        )
        revision = uploaded(api, alice, "alice/secret", {"rtl/top.v": TOP_V})
        r = api.put(
            f"{API}/alice/secret/members/carol", json={"role": "reader"}, headers=alice.headers
        )
        assert r.status_code == 200, r.text
        r = api.post(
            f"{API}/alice/secret/waivers",
            json={"kind": "*", "type": "LATCH", "reason": "intended"},
            headers=alice.headers,
        )
        assert r.status_code == 201, r.text
        self.waiver_id = r.json()["id"]
        self.check_id = str(uuid.uuid4())
        finished = events.make_event(
            events.CheckFinished(
                check_id=self.check_id,
                run=1,
                revision_id=revision["id"],
                project_id=project["id"],
                number=1,
                kind="rtl-lint",
                name="lint",
                state="passed",
                summary="no findings",
            ),
            id=str(uuid.uuid4()),
            project="alice/secret",
            project_id=project["id"],
            revision=1,
        )
        assert checks.record(backends, finished)
        self.project = project

    def params(self) -> dict[str, str]:
        return {
            "number": "1",
            "path": "rtl/top.v",
            "member": "carol",
            "waiver_id": self.waiver_id,
            "check_id": self.check_id,
            "artifact": "report.txt",
            "sha256": "0" * 64,
            "spec": "1...1",
            "thread_id": "t",
            "comment_id": "c",
            "pair": "p",
            "file_name": "f.png",
        }


@pytest.fixture
def secret(api: TestClient, backends: Backends, alice: Actor, carol: Actor) -> Secret:
    return Secret(api, backends, alice, carol)


def _bodies() -> dict[tuple[str, str], dict[str, Any]]:
    """Valid request bodies, so that a 404 cannot come from validation."""
    return {
        ("patch", PREFIX): {"json": {"description": "defaced"}},
        ("put", PREFIX + "/members/{member}"): {"json": {"role": "maintainer"}},
        ("post", PREFIX + "/waivers"): {"json": {"type": "X", "reason": "because"}},
        ("post", PREFIX + "/revisions"): {
            "files": [("files", ("evil.v", b"evil"))],
            "data": {"message": "x"},
        },
        ("post", PREFIX + "/blobs/missing"): {"json": {"files": [EVIL]}},
        ("post", PREFIX + "/revisions/commit"): {"json": {"files": [EVIL], "message": "x"}},
        ("put", PREFIX + "/blobs/{sha256}"): {"content": b"evil"},
        ("post", PREFIX + "/revisions/{number}/checks/external"): {
            "json": {"name": "ci", "state": "passed"}
        },
        ("patch", PREFIX + "/revisions/{number}/checks/external/{check_id}"): {
            "json": {"state": "passed"}
        },
        ("post", PREFIX + "/revisions/{number}/threads"): {
            "json": {"anchor": {"kind": "revision"}, "body": "evil"}
        },
        ("patch", PREFIX + "/threads/{thread_id}"): {"json": {"resolved": True}},
        ("post", PREFIX + "/threads/{thread_id}/comments"): {"json": {"body": "evil"}},
        ("patch", PREFIX + "/threads/{thread_id}/comments/{comment_id}"): {
            "json": {"body": "evil"}
        },
        ("post", PREFIX + "/threads/{thread_id}/waiver"): {"json": {"reason": "evil"}},
        ("post", PREFIX + "/revisions/{number}/review"): {"json": {"verdict": "approve"}},
    }


EVIL = {"path": "evil.v", "size": 4, "sha256": "0" * 64}


def _endpoints(api: TestClient) -> list[tuple[str, str]]:
    """Every (method, path template) of the API under one project, and its HTML page."""
    paths = api.app.openapi()["paths"]  # type: ignore[attr-defined]
    found = [
        (method, path)
        for path, operations in paths.items()
        if path == PREFIX or path.startswith(PREFIX + "/")
        for method in operations
    ]
    return [*found, ("get", "/{owner}/{name}")]


def _call(
    api: TestClient,
    method: str,
    template: str,
    project: str,
    params: dict[str, str],
    actor: Actor | None,
) -> httpx.Response:
    owner, name = project.split("/")
    url = template.format(owner=owner, name=name, **params)
    kwargs = _bodies().get((method, template), {})
    return api.request(method.upper(), url, headers=headers_of(actor), **kwargs)


@pytest.mark.parametrize("outsider", ["anonymous", "bob"])
def test_every_endpoint_of_a_private_project_is_404_for_outsiders(
    api: TestClient, alice: Actor, bob: Actor, secret: Secret, outsider: str
) -> None:
    actor = None if outsider == "anonymous" else bob
    endpoints = _endpoints(api)
    templates = {t for _, t in endpoints}
    for expected in (
        PREFIX,
        PREFIX + "/members/{member}",
        PREFIX + "/revisions",
        PREFIX + "/revisions/{number}",
        PREFIX + "/revisions/{number}/files/{path}",
        PREFIX + "/revisions/{number}/archive.zip",
        PREFIX + "/revisions/{number}/checks",
        PREFIX + "/revisions/{number}/checks/{check_id}",
    ):
        assert expected in templates
    assert len(endpoints) >= 18
    before = api.get(f"{API}/alice/secret", headers=alice.headers).json()

    # What the owner gets shows the resources exist.
    owner_sees = {
        PREFIX: 200,
        PREFIX + "/revisions": 200,
        PREFIX + "/revisions/{number}": 200,
        PREFIX + "/revisions/{number}/files/{path}": 200,
        PREFIX + "/revisions/{number}/archive.zip": 200,
        PREFIX + "/revisions/{number}/checks": 200,
        PREFIX + "/revisions/{number}/checks/{check_id}": 200,
        PREFIX + "/waivers": 200,
    }
    for template, status in owner_sees.items():
        r = _call(api, "get", template, "alice/secret", secret.params(), alice)
        assert r.status_code == status, (template, r.text)

    for method, template in endpoints:
        where = f"{method.upper()} {template}"
        hidden = _call(api, method, template, "alice/secret", secret.params(), actor)
        problem = assert_problem(hidden, 404)
        assert problem["detail"] == _not_found("alice/secret"), where
        # Word for word what a project that does not exist gets.
        missing = _call(api, method, template, "alice/nothing", secret.params(), actor)
        assert missing.status_code == 404, where
        assert missing.json()["detail"] == _not_found("alice/nothing"), where

    # Nothing was changed by any of those requests.
    after = api.get(f"{API}/alice/secret", headers=alice.headers).json()
    assert after == before
    assert after["members"] == {"carol": "reader"}
    assert len(api.get(f"{API}/alice/secret/waivers", headers=alice.headers).json()) == 1
    revisions = api.get(f"{API}/alice/secret/revisions", headers=alice.headers).json()
    assert revisions["total"] == 1


def _listed(api: TestClient, actor: Actor | None, query: str) -> tuple[list[str], int]:
    r = api.get(f"{API}?{query}", headers=headers_of(actor))
    assert r.status_code == 200, r.text
    return sorted(p["full_name"] for p in r.json()["items"]), r.json()["total"]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_listings_show_a_private_project_only_to_owner_members_and_admins(
    api: TestClient,
    backends: Backends,
    alice: Actor,
    bob: Actor,
    carol: Actor,
    admin: Actor,
    secret: Secret,
) -> None:
    create_project(api, alice, "open", description="a hidden gem", topics=["stealth"])
    queries = ["", "owner=alice", "q=hidden", "topic=stealth", "kind=hardware"]
    for actor in (None, bob):
        for query in queries:
            assert _listed(api, actor, query) == (["alice/open"], 1), (actor, query)
    for actor in (alice, carol, admin):
        for query in queries:
            assert _listed(api, actor, query) == (["alice/open", "alice/secret"], 2), (
                actor.name,
                query,
            )
    # The server-rendered catalogue is public: it never shows the private project.
    page = api.get("/").text
    assert "alice/open" in page
    assert "alice/secret" not in page
    # Admins and members also reach it directly.
    for actor in (carol, admin):
        assert api.get(f"{API}/alice/secret", headers=actor.headers).status_code == 200
