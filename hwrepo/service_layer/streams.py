"""A project's live event stream (Server-Sent Events): where a reader starts, and which of the
stored events are theirs. The events are the JetStream stream's, in its order; a stream
sequence is the event's id, so a reader resuming after id N gets N+1 onwards: nothing missed,
nothing repeated."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from nats.js import JetStreamContext

from hwrepo.adapters import eventbus
from hwrepo.domain.errors import Invalid
from hwrepo.domain.model import User
from hwrepo.service_layer.backends import Backends
from hwrepo.service_layer.projects import get_project
from hwrepo.service_layer.revisions import get_revision

# Events of a revision may be stored a moment before its row says it was made (clocks).
MARGIN = timedelta(seconds=5)


@dataclass(frozen=True)
class StreamStart:
    project_id: str
    revision: int | None
    after_seq: int | None
    since: datetime | None


def stream_start(
    backends: Backends,
    actor: User | None,
    owner: str,
    name: str,
    *,
    revision: int | None = None,
    last_event_id: str | None = None,
) -> StreamStart:
    """Where a reader of the project's events starts (the project must be visible to them,
    the revision must exist): after the event it saw last, else at the revision's first
    events, else now."""
    if revision is not None:
        project, rev = get_revision(backends, actor, owner, name, revision)
        since: datetime | None = rev.created - MARGIN
    else:
        project, since = get_project(backends, actor, owner, name), None
    after: int | None = None
    if last_event_id:
        if not last_event_id.isdigit() or len(last_event_id) > 19:
            raise Invalid(f"Last-Event-ID {last_event_id!r} is not an event id of this stream")
        after = int(last_event_id)
    return StreamStart(project.id, revision, after, since)


def _theirs(event: dict[str, Any], start: StreamStart) -> bool:
    if event.get("projectid") != start.project_id:
        return False
    return start.revision is None or event.get("revision") == start.revision


async def project_events(
    js: JetStreamContext, start: StreamStart
) -> AsyncIterator[tuple[int, str, str]]:
    """(id, type, CloudEvent JSON) of the project's events, as they come."""
    async for seq, data in eventbus.follow_events(
        js, after_seq=start.after_seq, since=None if start.after_seq else start.since
    ):
        try:
            event = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(event, dict) and _theirs(event, start):
            yield seq, str(event.get("type", "message")), data.decode()
