"""Projects through the API: create, validate, read, change, delete, list, members and roles."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Actor
from tests.integration.helpers import (
    API,
    assert_problem,
    create_project,
    revision_total,
    upload,
    uploaded,
)

# The tests whose outcome depends on the index's SQL run on both databases.
both_databases = pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)


def _names(page: dict[str, Any]) -> list[str]:
    return [p["full_name"] for p in page["items"]]


# -- create --------------------------------------------------------------------------------------


@both_databases
def test_create_returns_201_with_location_and_the_project(api: TestClient, alice: Actor) -> None:
    r = api.post(
        API,
        json={
            "name": "blinky",
            "kind": "hardware",
            "licence": "cern-ohl-s-2.0",
            "description": "A LED that blinks",
            "topics": ["FPGA", "led", "fpga"],
        },
        headers=alice.headers,
    )
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/api/v1/projects/alice/blinky"
    body = r.json()
    uuid.UUID(body["id"])
    assert {k: v for k, v in body.items() if k not in {"id", "created", "updated"}} == {
        "owner": "alice",
        "name": "blinky",
        "full_name": "alice/blinky",
        "kind": "hardware",
        "visibility": "public",
        "licence": "CERN-OHL-S-2.0",
        "description": "A LED that blinks",
        "topics": ["fpga", "led"],
        "links": [],
        "members": {},
        "required_checks": [],
        "required_approvals": 0,
        "linked_from": [],
        "url": "/api/v1/projects/alice/blinky",
    }
    assert body["created"] == body["updated"]
    assert datetime.fromisoformat(body["created"]).tzinfo is not None

    r = api.get(r.headers["location"])
    assert r.status_code == 200
    assert r.json() == body


def test_create_with_links_to_other_projects(api: TestClient, alice: Actor, bob: Actor) -> None:
    create_project(api, bob, "firmware", kind="software", licence="Apache-2.0")
    board = create_project(
        api,
        alice,
        "board",
        links=[{"project": "bob/firmware", "relation": "firmware"}, {"project": "bob/firmware"}],
        licence="CERN-OHL-W-2.0 OR LicenseRef-mine",
    )
    assert board["links"] == [
        {"project": "bob/firmware", "relation": "firmware"},
        {"project": "bob/firmware", "relation": "related"},
    ]
    assert board["licence"] == "CERN-OHL-W-2.0 OR LicenseRef-mine"


def test_create_needs_a_valid_token(api: TestClient, alice: Actor) -> None:
    body = {"name": "blinky", "kind": "hardware", "licence": "MIT"}
    r = api.post(API, json=body)
    problem = assert_problem(r, 401)
    assert "Authorization: Bearer" in problem["detail"]
    assert r.headers["www-authenticate"] == 'Bearer realm="hwrepo"'
    problem = assert_problem(
        api.post(API, json=body, headers={"Authorization": "Bearer hwr_not-a-real-token"}), 401
    )
    assert "not valid" in problem["detail"]
    assert_problem(api.post(API, json=body, headers={"Authorization": "Basic abc"}), 401)
    assert api.get(API).json()["total"] == 0


INVALID: list[tuple[dict[str, Any], str, list[str]]] = [
    # (change to a valid body, the field the problem names, words its detail must hold)
    ({"name": "bad name!"}, "name", ["'bad name!'", "letters, digits"]),
    ({"name": "-dash"}, "name", ["'-dash'", "starting with a letter or digit"]),
    ({"name": "api"}, "name", ["'api'", "not allowed"]),
    ({"name": "x" * 101}, "name", ["not allowed", "1-100"]),
    ({"licence": "Not-A-Licence"}, "licence", ["'Not-A-Licence'", "SPDX", "CERN-OHL-S-2.0"]),
    ({"licence": "MIT OR Nope-1.0"}, "licence", ["'MIT OR Nope-1.0'", "Nope-1.0"]),
    ({"licence": ""}, "licence", ["licence"]),
    ({"kind": "firmware"}, "kind", ["kind:", "'hardware'", "'software'"]),
    ({"visibility": "secret"}, "visibility", ["visibility:", "'public'", "'private'"]),
    ({"colour": "red"}, "colour", ["colour:", "Extra inputs are not permitted"]),
    ({"topics": ["Not A Topic"]}, "topics", ["'Not A Topic'", "lowercase"]),
    ({"topics": [f"t{i}" for i in range(21)]}, "topics", ["at most 20 topics"]),
    ({"links": [{"project": "nobody/nothing"}]}, "links", ["'nobody/nothing'", "does not exist"]),
    ({"links": [{"project": "alice/x", "weight": 1}]}, "links.0.weight", ["Extra inputs"]),
    ({"description": "x" * 5001}, "description", ["description:", "5000"]),
]


def test_create_rejects_invalid_input_with_a_helpful_problem(api: TestClient, alice: Actor) -> None:
    for change, field, words in INVALID:
        body = {"name": "blinky", "kind": "hardware", "licence": "CERN-OHL-S-2.0", **change}
        problem = assert_problem(api.post(API, json=body, headers=alice.headers), 422)
        for word in words:
            assert word in problem["detail"], (change, problem)
        if "errors" in problem:  # request validation: each problem names its field
            assert [e["field"] for e in problem["errors"]] == [field], (change, problem)
        else:  # domain validation
            assert problem["field"] == field, (change, problem)
    problem = assert_problem(
        api.post(API, json={"name": "blinky", "kind": "hardware"}, headers=alice.headers), 422
    )
    assert problem["detail"] == "licence: Field required"
    problem = assert_problem(
        api.post(
            API, content=b"{not json", headers={**alice.headers, "content-type": "application/json"}
        ),
        422,
    )
    assert "JSON" in problem["detail"]
    assert api.get(API, headers=alice.headers).json()["total"] == 0


@both_databases
def test_duplicate_name_is_409_but_another_owner_may_use_it(
    api: TestClient, alice: Actor, bob: Actor
) -> None:
    first = create_project(api, alice, "blinky")
    r = api.post(
        API, json={"name": "blinky", "kind": "software", "licence": "MIT"}, headers=alice.headers
    )
    problem = assert_problem(r, 409)
    assert problem["detail"] == "you already have a project named 'blinky'"
    assert problem["title"] == "Conflict"
    assert api.get(f"{API}/alice/blinky").json() == first
    assert create_project(api, bob, "blinky")["full_name"] == "bob/blinky"


# -- read, change, delete ------------------------------------------------------------------------


@both_databases
def test_patch_changes_only_the_given_fields(api: TestClient, alice: Actor, bob: Actor) -> None:
    create_project(api, bob, "firmware", kind="software", licence="Apache-2.0")
    before = create_project(api, alice, "blinky", description="old", topics=["led"])
    r = api.patch(
        f"{API}/alice/blinky",
        json={
            "description": "new words",
            "topics": ["fpga", "LED"],
            "licence": "cern-ohl-p-2.0",
            "links": [{"project": "bob/firmware", "relation": "firmware"}],
        },
        headers=alice.headers,
    )
    assert r.status_code == 200, r.text
    after = r.json()
    assert after["description"] == "new words"
    assert after["topics"] == ["fpga", "led"]
    assert after["licence"] == "CERN-OHL-P-2.0"
    assert after["links"] == [{"project": "bob/firmware", "relation": "firmware"}]
    for same in ("id", "owner", "name", "kind", "visibility", "members", "created"):
        assert after[same] == before[same]
    assert datetime.fromisoformat(after["updated"]) > datetime.fromisoformat(before["updated"])
    assert api.get(f"{API}/alice/blinky").json() == after

    r = api.patch(
        f"{API}/alice/blinky",
        json={"kind": "software", "visibility": "private"},
        headers=alice.headers,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["kind"], r.json()["visibility"]) == ("software", "private")
    assert r.json()["description"] == "new words"


def test_read_change_and_delete_errors(api: TestClient, alice: Actor, bob: Actor) -> None:
    problem = assert_problem(api.get(f"{API}/alice/nothing", headers=alice.headers), 404)
    assert problem["detail"] == "there is no project alice/nothing, or you have no access to it"
    assert problem["instance"] == "/api/v1/projects/alice/nothing"
    before = create_project(api, alice, "blinky")
    problem = assert_problem(
        api.patch(f"{API}/alice/blinky", json={"licence": "nope"}, headers=alice.headers), 422
    )
    assert "'nope'" in problem["detail"]
    problem = assert_problem(
        api.patch(f"{API}/alice/blinky", json={"name": "other"}, headers=alice.headers), 422
    )
    assert problem["detail"] == "name: Extra inputs are not permitted"
    assert api.get(f"{API}/alice/blinky").json() == before
    problem = assert_problem(
        api.patch(f"{API}/alice/blinky", json={"description": "x"}, headers=bob.headers), 403
    )
    assert problem["detail"] == (
        "changing the project in alice/blinky needs the maintainer role or higher"
    )
    assert_problem(api.patch(f"{API}/alice/blinky", json={"description": "x"}), 401)
    problem = assert_problem(api.delete(f"{API}/alice/blinky", headers=bob.headers), 403)
    assert (
        problem["detail"] == "deleting the project in alice/blinky needs the owner role or higher"
    )
    assert_problem(api.delete(f"{API}/alice/blinky"), 401)
    assert api.get(f"{API}/alice/blinky").json() == before


@both_databases
def test_delete_removes_the_project_and_frees_its_name(api: TestClient, alice: Actor) -> None:
    old = create_project(api, alice, "blinky")
    uploaded(api, alice, "alice/blinky", {"a.txt": b"a"})
    r = api.delete(f"{API}/alice/blinky", headers=alice.headers)
    assert r.status_code == 204
    assert r.content == b""
    assert_problem(api.get(f"{API}/alice/blinky", headers=alice.headers), 404)
    assert_problem(api.get(f"{API}/alice/blinky/revisions/1", headers=alice.headers), 404)
    assert_problem(api.delete(f"{API}/alice/blinky", headers=alice.headers), 404)
    assert api.get(API, headers=alice.headers).json()["total"] == 0

    new = create_project(api, alice, "blinky")
    assert new["id"] != old["id"]
    assert revision_total(api, alice, "alice/blinky") == 0
    assert uploaded(api, alice, "alice/blinky", {"b.txt": b"b"})["number"] == 1


# -- listing -------------------------------------------------------------------------------------


@pytest.fixture
def catalogue(api: TestClient, alice: Actor, bob: Actor) -> list[str]:
    """Five public projects, created in this order (listings show the newest first; the pauses
    keep their timestamps, kept to the millisecond, apart)."""
    for actor, name, fields in [
        (alice, "blinky", {"topics": ["fpga", "led"], "description": "Blinks a LED"}),
        (bob, "firmware", {"kind": "software", "licence": "MIT", "topics": ["led", "rust"]}),
        (alice, "sensor-board", {"description": "A TEMPERATURE sensor", "topics": ["i2c"]}),
        (bob, "pcb-tool", {"kind": "software", "licence": "MIT", "description": "for PCBs"}),
        (alice, "uart", {"topics": ["rtl"], "description": "A 100% serial port"}),
    ]:
        create_project(api, actor, name, **fields)
        time.sleep(0.005)
    return ["alice/blinky", "bob/firmware", "alice/sensor-board", "bob/pcb-tool", "alice/uart"]


FILTERS: list[tuple[str, list[str]]] = [
    ("", ["alice/uart", "bob/pcb-tool", "alice/sensor-board", "bob/firmware", "alice/blinky"]),
    ("kind=hardware", ["alice/uart", "alice/sensor-board", "alice/blinky"]),
    ("kind=software", ["bob/pcb-tool", "bob/firmware"]),
    ("topic=led", ["bob/firmware", "alice/blinky"]),
    ("topic=LED", ["bob/firmware", "alice/blinky"]),
    ("topic=nothing", []),
    ("owner=bob", ["bob/pcb-tool", "bob/firmware"]),
    ("owner=nobody", []),
    ("q=sensor", ["alice/sensor-board"]),
    ("q=temperature", ["alice/sensor-board"]),
    ("q=PCB", ["bob/pcb-tool"]),
    ("q=100%25", ["alice/uart"]),
    ("q=zzz", []),
    ("kind=software&topic=led", ["bob/firmware"]),
    ("owner=alice&topic=led&q=blink", ["alice/blinky"]),
    ("owner=alice&kind=software", []),
]


@both_databases
def test_list_filters_and_pages(api: TestClient, alice: Actor, catalogue: list[str]) -> None:
    for query, expected in FILTERS:
        r = api.get(f"{API}?{query}")
        assert r.status_code == 200, (query, r.text)
        page = r.json()
        assert (query, _names(page)) == (query, expected)
        assert (query, page["total"]) == (query, len(expected))
        assert (page["page"], page["per_page"]) == (1, 20)

    # Pages, newest first.
    newest_first = list(reversed(catalogue))
    pages = [api.get(f"{API}?per_page=2&page={n}").json() for n in (1, 2, 3, 4)]
    assert [_names(p) for p in pages] == [
        newest_first[0:2],
        newest_first[2:4],
        newest_first[4:],
        [],
    ]
    assert [(p["page"], p["per_page"], p["total"]) for p in pages] == [
        (1, 2, 5),
        (2, 2, 5),
        (3, 2, 5),
        (4, 2, 5),
    ]
    assert _names(api.get(f"{API}?kind=hardware&per_page=1&page=2").json()) == [
        "alice/sensor-board"
    ]
    for bad in ("per_page=0", "per_page=101", "page=0", "kind=firmware", "page=x"):
        problem = assert_problem(api.get(f"{API}?{bad}"), 422)
        assert bad.split("=")[0] in problem["detail"]

    # A change moves a project to the front.
    r = api.patch(f"{API}/alice/blinky", json={"description": "new"}, headers=alice.headers)
    assert r.status_code == 200
    assert _names(api.get(f"{API}?per_page=2").json()) == ["alice/blinky", "alice/uart"]


# -- members and roles ---------------------------------------------------------------------------


@both_databases
def test_members_put_and_delete(api: TestClient, alice: Actor, bob: Actor, carol: Actor) -> None:
    create_project(api, alice, "blinky")
    url = f"{API}/alice/blinky/members"
    r = api.put(f"{url}/bob", json={"role": "reader"}, headers=alice.headers)
    assert r.status_code == 200, r.text
    assert r.json()["members"] == {"bob": "reader"}
    r = api.put(f"{url}/carol", json={"role": "maintainer"}, headers=alice.headers)
    assert r.json()["members"] == {"bob": "reader", "carol": "maintainer"}
    r = api.put(f"{url}/bob", json={"role": "reviewer"}, headers=alice.headers)
    assert r.json()["members"] == {"bob": "reviewer", "carol": "maintainer"}
    assert api.get(f"{API}/alice/blinky").json()["members"] == {
        "bob": "reviewer",
        "carol": "maintainer",
    }

    problem = assert_problem(
        api.put(f"{url}/bob", json={"role": "owner"}, headers=alice.headers), 422
    )
    assert problem["detail"].startswith("role: ")
    problem = assert_problem(api.put(f"{url}/bob", json={}, headers=alice.headers), 422)
    assert problem["detail"] == "role: Field required"
    problem = assert_problem(
        api.put(f"{url}/nobody", json={"role": "reader"}, headers=alice.headers), 422
    )
    assert problem["detail"] == "there is no user named 'nobody'"
    problem = assert_problem(
        api.put(f"{url}/alice", json={"role": "reader"}, headers=alice.headers), 422
    )
    assert problem["detail"] == "the owner is already a member"
    # Only the owner manages members, not a maintainer.
    problem = assert_problem(
        api.put(f"{url}/bob", json={"role": "maintainer"}, headers=carol.headers), 403
    )
    assert problem["detail"] == "managing members in alice/blinky needs the owner role or higher"
    assert_problem(api.delete(f"{url}/bob", headers=carol.headers), 403)
    assert_problem(api.delete(f"{url}/bob"), 401)

    r = api.delete(f"{url}/bob", headers=alice.headers)
    assert r.status_code == 200, r.text
    assert r.json()["members"] == {"carol": "maintainer"}
    problem = assert_problem(api.delete(f"{url}/bob", headers=alice.headers), 404)
    assert problem["detail"] == "'bob' is not a member of alice/blinky"
    assert api.get(f"{API}/alice/blinky").json()["members"] == {"carol": "maintainer"}


@both_databases
def test_roles_on_a_private_project(
    api: TestClient, alice: Actor, bob: Actor, carol: Actor, admin: Actor
) -> None:
    create_project(api, alice, "secret", visibility="private")
    uploaded(api, alice, "alice/secret", {"rtl/top.v": b"module top; endmodule\n"})
    members = f"{API}/alice/secret/members"
    assert api.put(f"{members}/bob", json={"role": "reader"}, headers=alice.headers).is_success
    assert api.put(
        f"{members}/carol", json={"role": "maintainer"}, headers=alice.headers
    ).is_success

    # A reader reads everything...
    assert api.get(f"{API}/alice/secret", headers=bob.headers).status_code == 200
    assert revision_total(api, bob, "alice/secret") == 1
    r = api.get(f"{API}/alice/secret/revisions/1/files/rtl/top.v", headers=bob.headers)
    assert r.content == b"module top; endmodule\n"
    assert "alice/secret" in [
        p["full_name"] for p in api.get(API, headers=bob.headers).json()["items"]
    ]
    # ...but may not upload nor change the project.
    problem = assert_problem(upload(api, bob, "alice/secret", {"x.v": b"x"}), 403)
    assert (
        problem["detail"]
        == "uploading a revision in alice/secret needs the maintainer role or higher"
    )
    assert_problem(
        api.patch(f"{API}/alice/secret", json={"description": "x"}, headers=bob.headers), 403
    )
    assert revision_total(api, alice, "alice/secret") == 1

    # A reviewer may not upload either.
    assert api.put(f"{members}/bob", json={"role": "reviewer"}, headers=alice.headers).is_success
    assert_problem(upload(api, bob, "alice/secret", {"x.v": b"x"}), 403)

    # A maintainer uploads and changes the project, but does not delete it.
    revision = uploaded(api, carol, "alice/secret", {"x.v": b"x"}, message="by carol")
    assert (revision["number"], revision["author"], revision["parent"]) == (2, "carol", 1)
    r = api.patch(f"{API}/alice/secret", json={"description": "x"}, headers=carol.headers)
    assert r.status_code == 200
    assert_problem(api.delete(f"{API}/alice/secret", headers=carol.headers), 403)

    # A site administrator may do anything.
    assert uploaded(api, admin, "alice/secret", {"y.v": b"y"})["author"] == "root"

    # Removing a member takes the access away: the project is hidden again.
    assert api.delete(f"{members}/bob", headers=alice.headers).is_success
    assert_problem(api.get(f"{API}/alice/secret", headers=bob.headers), 404)
    assert revision_total(api, alice, "alice/secret") == 3
