"""NATS JetStream: the connection, the streams (created idempotently) and publishing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoServersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import (
    APIError,
    BucketNotFoundError,
    KeyNotFoundError,
    NoKeysError,
    NotFoundError,
)
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_fixed

from hwrepo.config import Settings
from hwrepo.domain.errors import ServiceUnavailable
from hwrepo.domain.events import EVENTS_STREAM, EVENTS_SUBJECT_PREFIX

JOBS_STREAM = "HWREPO_JOBS"
JOBS_SUBJECT_PREFIX = "hwrepo.jobs"
LATEST_BUCKET = "hwrepo-latest-revision"  # KV: project id -> newest revision number
WORKERS_BUCKET = "hwrepo-workers"  # KV: worker -> the kinds it runs (entries expire)
WORKER_TTL_S = 60.0


def job_subject(kind: str) -> str:
    return f"{JOBS_SUBJECT_PREFIX}.{kind}"


SERVICE = "NATS JetStream"
log = logging.getLogger(__name__)


def stream_configs(settings: Settings) -> list[StreamConfig]:
    """Every stream hwrepo uses. Later check kinds add their work queues here."""
    return [
        StreamConfig(
            name=EVENTS_STREAM,
            description="hwrepo domain events (CloudEvents JSON)",
            subjects=[f"{EVENTS_SUBJECT_PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=timedelta(days=90).total_seconds(),
            duplicate_window=timedelta(minutes=10).total_seconds(),
            num_replicas=settings.nats_stream_replicas,
        ),
        StreamConfig(
            name=JOBS_STREAM,
            description="hwrepo check jobs, one subject per check kind (work queue)",
            subjects=[f"{JOBS_SUBJECT_PREFIX}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            max_age=timedelta(days=14).total_seconds(),
            duplicate_window=timedelta(minutes=10).total_seconds(),
            num_replicas=settings.nats_stream_replicas,
        ),
    ]


async def connect(settings: Settings, *, name: str) -> Client:
    options: dict[str, Any] = {
        "servers": settings.nats_servers,
        "name": name,
        "connect_timeout": 2,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 1,
    }
    options.update(settings.nats_credentials)
    if settings.nats_token:
        options["token"] = settings.nats_token
    if settings.nats_creds_file:
        options["user_credentials"] = str(settings.nats_creds_file)

    async def _quiet(exc: Exception) -> None:
        log.warning("NATS: %s", exc)

    options["error_cb"] = _quiet
    try:
        return await nats.connect(**options)
    except (NoServersError, OSError, NatsError, TimeoutError) as exc:
        raise ServiceUnavailable(SERVICE, f"{', '.join(settings.nats_servers)}: {exc}") from exc


def _transient(exc: BaseException) -> bool:
    """JetStream answers late or "temporarily unavailable" while a cluster elects its leaders
    (at start, or after a node was lost)."""
    if isinstance(exc, NatsTimeoutError | asyncio.TimeoutError):
        return True
    return isinstance(exc, APIError) and exc.code == 503


async def ensure_streams(js: JetStreamContext, settings: Settings) -> None:
    """Create or update the streams and KV buckets; retried for up to a minute while JetStream
    is not ready to answer."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(_transient),
        stop=stop_after_delay(60),
        wait=wait_fixed(1),
        reraise=True,
    ):
        with attempt:
            await _ensure_streams(js, settings)


async def _ensure_streams(js: JetStreamContext, settings: Settings) -> None:
    for config in stream_configs(settings):
        try:
            await js.stream_info(config.name or "")
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)
    buckets = [
        KeyValueConfig(
            bucket=LATEST_BUCKET,
            description="newest revision number per project (cancels superseded jobs)",
            history=1,
            storage=StorageType.FILE,
            replicas=settings.nats_stream_replicas,
        ),
        KeyValueConfig(
            bucket=WORKERS_BUCKET,
            description="the check kinds each live worker runs (entries expire)",
            history=1,
            ttl=WORKER_TTL_S,
            storage=StorageType.MEMORY,
            replicas=settings.nats_stream_replicas,
        ),
    ]
    for bucket in buckets:
        try:
            await js.key_value(bucket.bucket)
        except (NotFoundError, BucketNotFoundError):
            await js.create_key_value(bucket)


async def live_worker_kinds(js: JetStreamContext) -> set[str]:
    """The check kinds some worker announced in the last minute."""
    kv = await js.key_value(WORKERS_BUCKET)
    kinds: set[str] = set()
    try:
        keys = await kv.keys()
    except NoKeysError:
        return kinds
    for key in keys:
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            continue
        if entry.value:
            kinds.update(json.loads(entry.value).get("kinds", []))
    return kinds


async def keep_alive(msg: Msg, every_s: float) -> None:
    """Tell JetStream, every `every_s` until cancelled, that `msg` is still being worked on
    (so that it is not delivered again meanwhile)."""
    while True:
        await asyncio.sleep(every_s)
        with contextlib.suppress(Exception):
            await msg.in_progress()


async def publish(js: JetStreamContext, subject: str, payload: bytes, msg_id: str) -> int:
    """Publish and wait for the stream's ack; returns the stream sequence."""
    ack = await js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id}, timeout=5)
    return ack.seq


async def follow_events(
    js: JetStreamContext,
    *,
    after_seq: int | None = None,
    since: datetime | None = None,
) -> AsyncIterator[tuple[int, bytes]]:
    """The domain events as they are stored, with their stream sequence: after `after_seq`
    (exactly the next one: a client resuming misses nothing and repeats nothing), else from
    `since`, else only new ones. An ordered, ephemeral consumer: nothing to clean up."""
    if after_seq is not None:
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_seq + 1
        )
    elif since is not None:
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=since.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        )
    else:
        config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
    sub = await js.subscribe(
        f"{EVENTS_SUBJECT_PREFIX}.>", stream=EVENTS_STREAM, ordered_consumer=True, config=config
    )
    try:
        async for msg in sub.messages:
            yield msg.metadata.sequence.stream, msg.data
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
