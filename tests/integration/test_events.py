"""An upload stores its files and manifest in S3 and announces `revision.created` on JetStream."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from nats.aio.client import Client

from hwrepo.adapters.objectstore import blob_key
from hwrepo.service_layer.backends import Backends
from tests.conftest import Actor
from tests.integration.helpers import (
    collect,
    create_project,
    sha256,
    subscribe_events,
    uploaded,
)

FILES = {
    "rtl/top.v": b"module top(input clk, output reg led);\n"
    b"  always @(posedge clk) led <= ~led;\nendmodule\n",
    "README.md": b"# blinky\n\nA LED that blinks.\n",
    "board/blinky.kicad_pcb": b"(kicad_pcb (version 20240108) (generator pcbnew))\n",
}


async def test_upload_writes_manifest_and_announces_revision_created(
    client: TestClient, backends: Backends, alice: Actor, nats_client: Client
) -> None:
    project = create_project(client, alice, "blinky")
    sub = await subscribe_events(nats_client, "revision.created")
    before = datetime.now(UTC)

    revision = uploaded(client, alice, "alice/blinky", FILES, message="first light")

    [msg] = await collect(sub, project["id"], count=1, timeout=10)
    event = json.loads(msg.data)
    manifest_key = f"projects/{project['id']}/revisions/0000000001.json"
    assert msg.subject == "hwrepo.events.revision.created"
    assert msg.headers is not None and msg.headers["Nats-Msg-Id"] == event["id"]
    assert uuid.UUID(event["id"]).version == 5
    assert event["specversion"] == "1.0"
    assert event["type"] == "revision.created"
    assert event["source"] == "/hwrepo"
    assert event["datacontenttype"] == "application/json"
    sent = datetime.fromisoformat(event["time"])
    assert before - timedelta(seconds=1) <= sent <= datetime.now(UTC)
    assert event["project"] == "alice/blinky"
    assert event["projectid"] == project["id"]
    assert event["revision"] == 1
    assert event["subject"] == "alice/blinky/revisions/1"
    assert event["data"] == {
        "project_id": project["id"],
        "owner": "alice",
        "name": "blinky",
        "number": 1,
        "revision_id": revision["id"],
        "parent": None,
        "author": "alice",
        "message": "first light",
        "files": 3,
        "total_size": sum(len(d) for d in FILES.values()),
        "manifest": manifest_key,
    }

    manifest = backends.store.get_json(event["data"]["manifest"])
    assert manifest is not None
    assert manifest["schema"] == "hwrepo.revision/1"
    assert manifest["id"] == revision["id"]
    assert manifest["project"] == "alice/blinky"
    assert manifest["number"] == 1
    assert manifest["author"] == "alice"
    assert manifest["message"] == "first light"
    assert [(f["path"], f["size"], f["sha256"]) for f in manifest["files"]] == [
        (path, len(FILES[path]), sha256(FILES[path])) for path in sorted(FILES)
    ]
    for data in FILES.values():
        assert backends.store.get_bytes(blob_key(sha256(data))) == data

    # Exactly one event for this upload.
    assert await collect(sub, project["id"], count=1, timeout=0.5) == []
    await sub.unsubscribe()


async def test_each_revision_is_announced_in_order_with_its_parent(
    client: TestClient, alice: Actor, nats_client: Client
) -> None:
    project = create_project(client, alice, "blinky")
    sub = await subscribe_events(nats_client, "revision.created")
    first = uploaded(client, alice, "alice/blinky", {"a.txt": b"1"})
    second = uploaded(client, alice, "alice/blinky", {"a.txt": b"2", "b.txt": b"22"})

    msgs = await collect(sub, project["id"], count=2, timeout=10)
    events = [json.loads(m.data) for m in msgs]
    assert [e["revision"] for e in events] == [1, 2]
    assert [e["data"]["revision_id"] for e in events] == [first["id"], second["id"]]
    assert [e["data"]["parent"] for e in events] == [None, 1]
    assert [e["data"]["files"] for e in events] == [1, 2]
    assert [e["data"]["total_size"] for e in events] == [1, 3]
    assert len({e["id"] for e in events}) == 2
    await sub.unsubscribe()


async def test_project_changes_are_announced(
    client: TestClient, alice: Actor, bob: Actor, nats_client: Client
) -> None:
    subs = {
        change: await subscribe_events(nats_client, f"project.{change}")
        for change in ("created", "updated", "deleted")
    }
    project = create_project(client, alice, "blinky", visibility="private")
    r = client.put(
        "/api/v1/projects/alice/blinky/members/bob", json={"role": "reader"}, headers=alice.headers
    )
    assert r.status_code == 200, r.text
    r = client.delete("/api/v1/projects/alice/blinky", headers=alice.headers)
    assert r.status_code == 204, r.text

    for change, sub in subs.items():
        [msg] = await collect(sub, project["id"], count=1, timeout=10)
        event = json.loads(msg.data)
        assert event["type"] == f"project.{change}"
        assert event["project"] == "alice/blinky"
        assert event["data"]["change"] == change
        assert event["data"]["visibility"] == "private"
        assert event["data"]["kind"] == "hardware"
        assert msg.headers is not None and msg.headers["Nats-Msg-Id"] == event["id"]
        await sub.unsubscribe()
