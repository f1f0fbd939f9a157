"""GET /api/v1/projects/{owner}/{name}/events: the project's events as Server-Sent Events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from nats.aio.client import Client
from starlette.concurrency import run_in_threadpool

from hwrepo.domain.errors import ServiceUnavailable
from hwrepo.entrypoints.api.deps import BackendsDep, UserDep
from hwrepo.service_layer import streams

router = APIRouter(prefix="/api/v1/projects", tags=["events"])
MAX_REVISION = 2**31 - 1


async def _start(
    request: Request,
    owner: str,
    name: str,
    backends: BackendsDep,
    user: UserDep,
    revision: Annotated[
        int | None, Query(ge=1, le=MAX_REVISION, description="only this revision's events")
    ] = None,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[
        str | None, Query(description="resume after this event id (as Last-Event-ID)")
    ] = None,
) -> tuple[streams.StreamStart, Client]:
    """Checked before the stream opens, so that a project the caller may not see is a 404
    like everywhere else, not an empty stream (and NATS missing a 503)."""
    start = await run_in_threadpool(
        lambda: streams.stream_start(
            backends,
            user,
            owner,
            name,
            revision=revision,
            last_event_id=last_event_id or after,
        )
    )
    return start, _nats(request)


def _nats(request: Request) -> Client:
    nc = getattr(request.app.state, "nats", None)
    if nc is None or not nc.is_connected:
        raise ServiceUnavailable("NATS JetStream", "not connected: no live events now")
    return nc  # type: ignore[no-any-return]


@router.get("/{owner}/{name}/events", response_class=EventSourceResponse)
async def project_events(
    opened: Annotated[tuple[streams.StreamStart, Client], Depends(_start)],
) -> AsyncIterator[ServerSentEvent]:
    """revision.created, revision.planned, check.queued/started/finished and the other events
    of the project (of one revision with `?revision=N`), each with its id; a reconnecting
    client's Last-Event-ID resumes exactly after it. Heartbeat comments every 15 s."""
    start, nc = opened
    async for seq, kind, data in streams.project_events(nc.jetstream(), start):
        yield ServerSentEvent(id=str(seq), event=kind, raw_data=data)
