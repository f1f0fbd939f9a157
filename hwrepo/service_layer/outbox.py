"""The outbox relay: publishes events that were committed with the change they announce.

Rows are marked published only after JetStream acknowledged them. A crash between commit and
publish, or between publish and marking, means the event is published (again) on the next pass;
JetStream drops the duplicate by its `Nats-Msg-Id` and consumers ignore ids they have seen.
"""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import MaxPayloadError
from nats.js.errors import APIError

from hwrepo.adapters import eventbus
from hwrepo.domain.errors import ServiceUnavailable
from hwrepo.metrics import EVENTS_PUBLISHED
from hwrepo.service_layer.backends import Backends

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(self, backends: Backends, nc: Client, *, batch: int = 200) -> None:
        self.backends = backends
        self.nc = nc
        self.js = nc.jetstream()
        self.batch = batch
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.published = 0

    def wake(self) -> None:
        """Thread-safe: ask for a pass now (called after a unit of work commits)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _pending(self) -> list[tuple[str, str, str]]:
        with self.backends.reading() as index:
            return [(m.id, m.subject, m.payload) for m in index.pending_events(self.batch)]

    def _mark(self, published: list[str], failed: dict[str, str], rejected: bool) -> None:
        with self.backends.writing() as index:
            index.mark_published(published)
            for event_id, error in failed.items():
                # Only a message NATS refuses counts as an attempt; an outage does not.
                index.note_failure(event_id, error[:2000], counts_as_attempt=rejected)

    async def publish_pending(self) -> int:
        """One pass; returns how many events were published."""
        total = 0
        while True:
            rows = await asyncio.to_thread(self._pending)
            if not rows:
                return total
            published: list[str] = []
            failed: dict[str, str] = {}
            rejected = False
            for event_id, subject, payload in rows:
                try:
                    await eventbus.publish(self.js, subject, payload.encode(), event_id)
                except (MaxPayloadError, APIError) as exc:
                    # NATS refuses this very message: after MAX_REJECTIONS passes it is set
                    # aside (kept with its error) so it cannot hold up every later event.
                    failed[event_id] = f"{exc.__class__.__name__}: {exc}"
                    rejected = True
                    log.error("outbox: NATS refused event %s: %s", event_id, exc)
                    break
                except (NatsError, TimeoutError, OSError) as exc:
                    failed[event_id] = f"{exc.__class__.__name__}: {exc}"
                    break  # keep the order: retry from here on the next pass
                published.append(event_id)
            await asyncio.to_thread(self._mark, published, failed, rejected)
            total += len(published)
            self.published += len(published)
            EVENTS_PUBLISHED.inc(len(published))
            if failed:
                return total

    async def run(self, stop: asyncio.Event, poll_s: float = 0.5) -> None:
        self._loop = asyncio.get_running_loop()
        self.backends.event_listeners.append(self.wake)
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    await self.publish_pending()
                except ServiceUnavailable as exc:
                    log.warning("outbox relay: %s", exc)
                except Exception:
                    log.exception("outbox relay pass failed")
                waiters = [
                    asyncio.ensure_future(self._wake.wait()),
                    asyncio.ensure_future(stop.wait()),
                ]
                _, pending = await asyncio.wait(
                    waiters, timeout=poll_s, return_when=asyncio.FIRST_COMPLETED
                )
                for waiter in pending:
                    waiter.cancel()
        finally:
            self.backends.event_listeners.remove(self.wake)
