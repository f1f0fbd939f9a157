"""The transactional outbox: an event committed but never published (a crash between commit and
publish) is published by the next relay pass, once; publishing it again after a crash between
publish and marking is dropped by JetStream's de-duplication on Nats-Msg-Id."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest
from nats.aio.client import Client
from sqlalchemy import select, update

from hwrepo.adapters.archives import ArchiveLimits, StagingArea
from hwrepo.adapters.db.orm import OutboxRow
from hwrepo.config import Settings
from hwrepo.domain import events
from hwrepo.domain.events import EVENTS_STREAM
from hwrepo.service_layer import projects, revisions, users
from hwrepo.service_layer.backends import Backends
from hwrepo.service_layer.outbox import OutboxRelay
from tests.integration.helpers import collect, subscribe_events

SUBJECT = "hwrepo.events.revision.created"


def _outbox(backends: Backends) -> dict[str, OutboxRow]:
    with backends.reading() as index:
        return {row.id: row for row in index.session.scalars(select(OutboxRow))}


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
async def test_event_left_in_outbox_is_published_once_and_duplicates_are_dropped(
    backends: Backends, tmp_path: Path, nats_client: Client
) -> None:
    # A revision created by the service layer while no relay runs: committed, not published.
    alice = users.create_user(backends, "alice")
    project = projects.create_project(
        backends, alice, name="blinky", kind="hardware", licence="CERN-OHL-S-2.0"
    )
    staging_dir = tmp_path / "staging"
    staging_dir.mkdir()
    staging = StagingArea(staging_dir, ArchiveLimits())
    staging.add_file("rtl/top.v", io.BytesIO(b"module top; endmodule\n"))
    outcome = revisions.create_revision(
        backends, alice, "alice", "blinky", staging, message="before the crash"
    )
    event_id = events.event_id("revision.created", outcome.revision.id)

    pending = _outbox(backends)
    assert {row.subject for row in pending.values()} == {
        "hwrepo.events.project.created",
        SUBJECT,
    }
    row = pending[event_id]
    assert row.subject == SUBJECT
    assert row.published_at is None
    assert row.attempts == 0
    payload = json.loads(row.payload)
    assert payload["id"] == event_id
    assert payload["projectid"] == project.id
    assert payload["revision"] == 1

    # The relay starts (after the "crash"): both pending events go out, the revision's once.
    js = nats_client.jetstream()
    sub = await subscribe_events(nats_client, "revision.created")
    relay = OutboxRelay(backends, nats_client)
    assert await relay.publish_pending() == 2
    [msg] = await collect(sub, project.id, count=1, timeout=10)
    assert msg.headers is not None and msg.headers["Nats-Msg-Id"] == event_id
    assert json.loads(msg.data) == payload
    assert await collect(sub, project.id, count=1, timeout=0.5) == []
    published = _outbox(backends)[event_id]
    assert published.published_at is not None
    assert published.attempts == 1
    assert await relay.publish_pending() == 0  # nothing left

    stored = await js.get_last_msg(EVENTS_STREAM, SUBJECT)
    assert stored.headers is not None and stored.headers["Nats-Msg-Id"] == event_id
    messages_before = (await js.stream_info(EVENTS_STREAM)).state.messages

    # A crash after publishing, before marking: the row is pending again and goes out again.
    with backends.writing() as index:
        index.session.execute(
            update(OutboxRow).where(OutboxRow.id == event_id).values(published_at=None)
        )
    assert _outbox(backends)[event_id].published_at is None
    assert await relay.publish_pending() == 1
    assert _outbox(backends)[event_id].published_at is not None
    assert _outbox(backends)[event_id].attempts == 2

    # JetStream dropped the duplicate: no delivery, no new message in the stream.
    assert await collect(sub, project.id, count=1, timeout=0.5) == []
    assert (await js.stream_info(EVENTS_STREAM)).state.messages == messages_before
    again = await js.get_last_msg(EVENTS_STREAM, SUBJECT)
    assert again.seq == stored.seq
    ack = await js.publish(SUBJECT, row.payload.encode(), headers={"Nats-Msg-Id": event_id})
    assert ack.duplicate is True
    assert ack.seq == stored.seq

    # From the stream's start, the event is there exactly once.
    everything = await subscribe_events(nats_client, "revision.created", from_start=True)
    copies = await collect(everything, project.id, count=2, timeout=1.5)
    assert [m.headers["Nats-Msg-Id"] for m in copies if m.headers] == [event_id]
    await sub.unsubscribe()
    await everything.unsubscribe()


async def test_an_event_nats_refuses_is_set_aside_and_does_not_block_later_ones(
    backends: Backends, nats_client: Client
) -> None:
    from hwrepo.adapters.db.index import MAX_REJECTIONS

    too_big = "x" * (9 * 1024 * 1024)  # over the server's max_payload (8 MB)
    with backends.writing() as index:
        index.add_message("hwrepo.events.test.big", too_big, "refused-1")
        index.add_message("hwrepo.events.test.small", '{"ok": true}', "after-1")
    relay = OutboxRelay(backends, nats_client)
    for _ in range(MAX_REJECTIONS):
        assert await relay.publish_pending() == 0  # the refused one still holds the line
    assert await relay.publish_pending() == 1  # then it is set aside, and the next one goes
    rows = _outbox(backends)
    assert rows["after-1"].published_at is not None
    refused = rows["refused-1"]
    assert refused.published_at is None
    assert refused.attempts == MAX_REJECTIONS
    assert "MaxPayloadError" in (refused.last_error or "")


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_an_event_two_processes_add_at_once_goes_into_the_outbox_once(
    backends: Backends, settings: Settings
) -> None:
    """Two API processes may announce the same event (a comparison both recorders computed):
    the second waits for the first's commit, then adds nothing, with no unique-key error."""
    other = Backends.from_settings(settings)
    event = events.make_event(
        events.RevisionPlanned(project_id="p", revision_id="r", number=1, checks=0),
        id="the-same-id",
    )
    second: list[bool] = []
    try:
        with backends.writing() as index:
            assert index.add_event_once(event)

            def add_again() -> None:
                with other.writing() as other_index:
                    second.append(other_index.add_event_once(event))

            racer = threading.Thread(target=add_again)
            racer.start()
            racer.join(0.5)  # it waits on this unit of work (a row lock, or SQLite's write lock)
            assert racer.is_alive()
        racer.join(30)
        assert list(_outbox(backends)) == ["the-same-id"]
        assert second == [False]
    finally:
        other.close()
