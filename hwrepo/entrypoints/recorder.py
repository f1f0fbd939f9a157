"""The API side's event consumer: folds check and planning events into the index, and when a
revision's last check ends, compares it with its parent (comparison.ready).

A durable pull consumer (`hwrepo-recorder`) shared by every API process; recording is
idempotent (see hwrepo.domain.checks.accepts), so redeliveries and duplicates are harmless. An
event is acked only after its transaction committed. Events come in small batches with a short
ack wait: an event handed to an API process that was lost on its way (a NATS node or the
process going down) is delivered again within seconds, so that a check's state in the index is
never long behind its events.
"""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from hwrepo.adapters import eventbus
from hwrepo.domain import events
from hwrepo.domain.errors import ServiceUnavailable
from hwrepo.service_layer import checks, comparisons
from hwrepo.service_layer.backends import Backends

log = logging.getLogger(__name__)
DURABLE = "hwrepo-recorder"
ACK_WAIT_S = 10
BATCH = 10
# An event ahead of one another process is recording is delivered again after AHEAD_DELAY_S, up
# to AHEAD_DELIVERIES times (a check.queued that never comes: its revision was deleted).
AHEAD_DELAY_S = 0.5
AHEAD_DELIVERIES = 40
RECORDED = {
    events.RevisionPlanned.TYPE,
    events.CheckQueued.TYPE,
    events.CheckStarted.TYPE,
    events.CheckFinished.TYPE,
}


async def record_events(backends: Backends, nc: Client, stop: asyncio.Event) -> None:
    js = nc.jetstream()
    subject = f"{events.EVENTS_SUBJECT_PREFIX}.>"
    config = ConsumerConfig(
        durable_name=DURABLE,
        filter_subject=subject,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT_S,
        max_deliver=-1,
    )
    try:  # a consumer made by an earlier release gets today's ack wait
        await js.add_consumer(events.EVENTS_STREAM, config=config)
    except Exception as exc:
        log.warning("recorder: could not update the consumer %s: %s", DURABLE, exc)
    sub = await js.pull_subscribe(
        subject, durable=DURABLE, stream=events.EVENTS_STREAM, config=config
    )
    while not stop.is_set():
        try:
            msgs = await sub.fetch(BATCH, timeout=1)
        except (NatsTimeout, TimeoutError):
            continue
        except Exception as exc:
            log.warning("recorder: fetch failed: %s", exc)
            await asyncio.sleep(1)
            continue
        for msg in msgs:
            try:
                event = events.Event.from_json(msg.data)
                if event.type in RECORDED:
                    await asyncio.to_thread(checks.record, backends, event)
                if event.type == events.CheckFinished.TYPE:
                    # a comparison may take longer than the ack wait
                    heartbeat = asyncio.create_task(eventbus.keep_alive(msg, ACK_WAIT_S / 3))
                    try:
                        await asyncio.to_thread(_prepare_comparison, backends, event)
                    finally:
                        heartbeat.cancel()
                await msg.ack()
            except checks.EventAhead as exc:
                if msg.metadata.num_delivered < AHEAD_DELIVERIES:
                    await msg.nak(delay=AHEAD_DELAY_S)
                else:
                    log.warning(
                        "recorder: %s; still, after %d deliveries: dropped", exc, AHEAD_DELIVERIES
                    )
                    await msg.ack()
            except ServiceUnavailable as exc:
                log.warning("recorder: %s; will retry", exc)
                await msg.nak(delay=2)
            except Exception:
                log.exception("recorder: could not record an event; it will be redelivered")
                await msg.nak(delay=5)


def _prepare_comparison(backends: Backends, event: events.Event) -> None:
    """Compare the revision with its parent ahead of time, so a reviewer opening the comparison
    waits for nothing. An outage is retried with the event; any other failure only means the
    comparison is computed when first asked for."""
    try:
        comparisons.prepare_after(backends, event)
    except ServiceUnavailable:
        raise
    except Exception:
        log.exception("recorder: could not compare revision %s ahead of time", event.revision)
