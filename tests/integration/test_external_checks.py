"""Checks other CI systems report (the OpenI side: software projects have CI too): a software
project requiring its firmware CI stays pending until the report arrives, then succeeds; the
report's events go out like any check's; annotations are kept; a token of scope `checks` may
report and nothing else; outsiders may not; reindex brings the check back; a board lists the
firmware project that links to it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hwrepo.config import Settings
from hwrepo.domain.events import EVENTS_STREAM
from hwrepo.service_layer import users
from hwrepo.service_layer.backends import Backends
from hwrepo.service_layer.reindex import reindex
from tests.conftest import Actor, make_actor
from tests.integration.helpers import create_project, uploaded
from tests.pipeline import pipeline_stack, running_worker

API = "/api/v1/projects"


def wait_planned(client: TestClient, project: str, number: int) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = client.get(f"{API}/{project}/revisions/{number}/checks").json()
        if body["planned"]:
            return body
        time.sleep(0.1)
    raise AssertionError("never planned")


async def _types(settings: Settings, project_id: str) -> list[str]:
    from hwrepo.adapters import eventbus

    nc = await eventbus.connect(settings, name="test")
    try:
        js = nc.jetstream()
        info = await js.stream_info(EVENTS_STREAM)
        sub = await js.pull_subscribe(">", stream=EVENTS_STREAM)
        found: list[str] = []
        seen = 0
        while seen < info.state.messages:
            for msg in await sub.fetch(100, timeout=5):
                seen += 1
                event = json.loads(msg.data)
                if event.get("projectid") == project_id:
                    found.append(event["type"])
                await msg.ack()
        return found
    finally:
        await nc.close()


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, Backends, TestClient]]:
    with (
        pipeline_stack(settings, tmp_path) as (own, backends, client),
        running_worker(own, kinds=[]),  # the planner alone: no kind of check runs here
    ):
        yield own, backends, client


def test_an_external_check_turns_a_software_revision_from_pending_to_success(
    stack: tuple[Settings, Backends, TestClient], fresh_database: str
) -> None:
    settings, backends, client = stack
    alice, bob = make_actor(backends, "alice"), make_actor(backends, "bob")
    board = create_project(client, alice, "board")
    firmware = client.post(
        API,
        json={
            "name": "firmware",
            "kind": "software",
            "licence": "Apache-2.0",
            "links": [{"project": "alice/board", "relation": "firmware"}],
        },
        headers=alice.headers,
    ).json()
    patched = client.patch(
        f"{API}/alice/firmware", json={"required_checks": ["firmware-ci"]}, headers=alice.headers
    )
    assert patched.status_code == 200 and patched.json()["required_checks"] == ["firmware-ci"]
    linked = client.get(f"{API}/alice/board").json()["linked_from"]
    assert linked == [{"project": "alice/firmware", "relation": "firmware"}]
    assert board["id"] != firmware["id"]

    uploaded(client, alice, "alice/firmware", {"src/main.c": b"int main(void) { return 0; }\n"})
    body = wait_planned(client, "alice/firmware", 1)
    assert body["checks"] == [] and body["state"] == "pending"  # the required check never came
    assert body["missing_required"] == ["firmware-ci"]

    ci = users.create_token(backends, "alice", "firmware ci", scope="checks")
    ci_headers = {"Authorization": f"Bearer {ci}"}
    url = f"{API}/alice/firmware/revisions/1/checks/external"
    refused = client.post(
        url, json={"name": "firmware-ci", "state": "running"}, headers=bob.headers
    )
    assert refused.status_code == 403  # bob may read this public project, not report on it
    made = client.post(
        url,
        json={
            "name": "firmware-ci",
            "state": "running",
            "details_url": "https://ci.example.org/runs/7",
        },
        headers=ci_headers,
    )
    assert made.status_code == 201, made.text
    check = made.json()
    assert check["kind"] == "external" and check["state"] == "running"
    assert client.get(f"{API}/alice/firmware/revisions/1/checks").json()["state"] == "pending"
    again = client.post(url, json={"name": "firmware-ci", "state": "queued"}, headers=ci_headers)
    assert again.status_code == 409 and "PATCH" in again.json()["detail"]

    done = client.patch(
        f"{url}/{check['id']}",
        json={
            "state": "passed",
            "summary": "42 tests passed",
            "annotations": [
                {"path": "src/main.c", "line": 1, "level": "notice", "message": "main is short"}
            ],
        },
        headers=ci_headers,
    )
    assert done.status_code == 200, done.text
    body = client.get(f"{API}/alice/firmware/revisions/1/checks").json()
    assert body["state"] == "success" and body["missing_required"] == []
    detail = client.get(done.json()["url"]).json()
    assert detail["summary"] == "42 tests passed"
    assert detail["details"]["details_url"] == "https://ci.example.org/runs/7"
    assert detail["details"]["annotations"][0]["message"] == "main is short"
    assert detail["counts"]["annotations"] == {"error": 0, "warning": 0, "notice": 1}
    ended = client.patch(f"{url}/{check['id']}", json={"state": "failed"}, headers=ci_headers)
    assert ended.status_code == 409

    # a checks token reports checks and does nothing else
    assert (
        client.post(
            API, json={"name": "x", "kind": "software", "licence": "MIT"}, headers=ci_headers
        ).status_code
        == 403
    )

    types = asyncio.run(_types(settings, firmware["id"]))
    assert {"check.queued", "check.started", "check.finished"} <= set(types)

    rebuilt = Backends.from_settings(settings.model_copy(update={"database_url": fresh_database}))
    try:
        reindex(rebuilt)
        with rebuilt.reading() as index:
            (found,) = index.revision_checks(_revision_id(client))
        assert found.state.value == "passed" and found.kind == "external"
    finally:
        rebuilt.close()


def _revision_id(client: TestClient) -> str:
    return client.get(f"{API}/alice/firmware/revisions/1").json()["id"]


@pytest.mark.parametrize("state", ["succeeded", ""])
def test_a_report_with_an_unknown_state_is_refused(
    client: TestClient, alice: Actor, state: str
) -> None:
    client.post(
        API, json={"name": "fw", "kind": "software", "licence": "MIT"}, headers=alice.headers
    )
    uploaded(client, alice, "alice/fw", {"a.c": b"x"})
    r = client.post(
        f"{API}/alice/fw/revisions/1/checks/external",
        json={"name": "ci", "state": state},
        headers=alice.headers,
    )
    assert r.status_code == 422
