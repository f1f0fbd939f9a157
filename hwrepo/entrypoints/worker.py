"""`hwrepo worker`: the planner and the check workers, as JetStream pull consumers.

- The planner consumes `revision.created` (durable `hwrepo-planner`), plans every kind's jobs,
  publishes `check.queued` events and the jobs (work queue `HWREPO_JOBS`, subject
  `hwrepo.jobs.<kind>`, `Nats-Msg-Id` = job id), then `revision.planned`, then acks.
- Each available kind has a durable pull consumer `hwrepo-worker-<kind>`; any number of worker
  processes on any number of machines share it. A job is acked only after its results are stored
  and `check.finished` is published; while it runs the worker sends in-progress acks, so a live
  job is never redelivered, and a job whose worker died is redelivered after `ack_wait`. After
  `max_attempts` deliveries the job ends `errored` saying so.
Workers never touch the database.
"""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import json
import logging
import re
import signal
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from hwrepo.adapters import eventbus
from hwrepo.adapters.objectstore import ObjectStore
from hwrepo.adapters.objectstore import from_settings as store_from_settings
from hwrepo.checks.core.kind import CheckKind, FinalState
from hwrepo.checks.registry import all_kinds
from hwrepo.config import Settings, private_dir
from hwrepo.domain import events
from hwrepo.domain.checks import Job
from hwrepo.domain.events import EVENTS_STREAM
from hwrepo.service_layer import jobs, planner

log = logging.getLogger("hwrepo.worker")


@dataclass
class WorkerOptions:
    kinds: list[str] | None = None  # None: every kind this machine can run
    concurrency: int = 1  # jobs this process runs at once, whatever their kinds
    max_attempts: int = 3
    plan: bool = True
    cancel_superseded: bool = True
    ack_wait_s: float = 60.0  # in-progress acks are sent every quarter of it


async def _fetch(sub: JetStreamContext.PullSubscription, *, timeout: float, what: str) -> list[Msg]:
    """The next message, or none. Anything but a quiet queue — the connection moving to another
    node, a consumer electing its leader after a node was lost — is logged and waited out: the
    loop asking must never end while the worker runs."""
    try:
        return await sub.fetch(1, timeout=timeout)
    except (NatsTimeout, TimeoutError):
        return []
    except Exception as exc:
        log.warning("%s: fetching failed (%s: %s); trying again", what, type(exc).__name__, exc)
        await asyncio.sleep(1)
        return []


async def _pull_subscribe(
    js: JetStreamContext, what: str, subject: str, **options: Any
) -> JetStreamContext.PullSubscription:
    """The loop's consumer, made or found. JetStream's API can time out or have no leader for a
    while (a node lost, its cluster electing): that is logged and waited out like a failed
    fetch, so a worker started during an outage takes its jobs once it is over instead of
    ending its loop (and the worker) at start."""
    while True:
        try:
            return await js.pull_subscribe(subject, **options)
        except Exception as exc:
            log.warning(
                "%s: subscribing failed (%s: %s); trying again", what, type(exc).__name__, exc
            )
            await asyncio.sleep(1)


async def _publish(js: JetStreamContext, event: events.Event) -> None:
    await eventbus.publish(js, event.nats_subject, event.to_json(), event.id)


HWREPO_PACKAGE = Path(__file__).resolve().parents[1]


def compile_own_code(root: Path = HWREPO_PACKAGE) -> None:
    """Write the bytecode of hwrepo's own modules beside them where it is missing or stale and
    the installation lets the worker (a checkout; an installed package has its own already). A
    sandboxed Python cannot write bytecode, so without it every job would compile the in-sandbox
    modules it imports again (13 to 38 ms a job)."""
    with contextlib.suppress(OSError):
        compileall.compile_dir(root, quiet=2)


class _Slots:
    """The jobs this process runs at once; `wait_free` waits for a free one without taking it,
    woken by the release itself (not by polling)."""

    def __init__(self, count: int) -> None:
        self.free = count
        self.changed = asyncio.Condition()

    def locked(self) -> bool:
        return self.free <= 0

    async def wait_free(self) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.free > 0)

    async def __aenter__(self) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.free > 0)
            self.free -= 1

    async def __aexit__(self, *exc: object) -> None:
        async with self.changed:
            self.free += 1
            self.changed.notify_all()


class Worker:
    def __init__(self, settings: Settings, options: WorkerOptions) -> None:
        self.settings = settings
        self.options = options
        self.store: ObjectStore = store_from_settings(settings)
        self.dirs = jobs.WorkerDirs(
            settings.worker_cache_dir or private_dir(settings.data_dir) / "worker"
        )
        self.kinds: dict[str, CheckKind] = {}
        self.nc: Client | None = None
        self.slots = _Slots(max(1, options.concurrency))
        self.latest: KeyValue | None = None

    def select_kinds(self) -> dict[str, CheckKind]:
        chosen: dict[str, CheckKind] = {}
        for kind in all_kinds():
            if self.options.kinds is not None and kind.name not in self.options.kinds:
                continue
            reason = kind.available()
            if reason is not None:
                log.warning("not taking %s jobs: %s", kind.name, reason)
                continue
            chosen[kind.name] = kind
        return chosen

    async def run(self, stop: asyncio.Event) -> None:
        self.nc = await eventbus.connect(self.settings, name=f"hwrepo-worker {jobs.WORKER_NAME}")
        js = self.nc.jetstream()
        await eventbus.ensure_streams(js, self.settings)
        self.latest = await js.key_value(eventbus.LATEST_BUCKET)
        await asyncio.to_thread(compile_own_code)
        self.kinds = self.select_kinds()
        tasks = []
        if self.options.plan:
            tasks.append(asyncio.create_task(self._plan_loop(js, stop)))
        for name in self.kinds:
            tasks.append(asyncio.create_task(self._job_loop(js, name, stop)))
        tasks.append(asyncio.create_task(self._announce(js, stop)))
        log.info("worker ready: planning=%s kinds=%s", self.options.plan, sorted(self.kinds))
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
            ended = [t for t in tasks if t.done()]
            if ended and not stop.is_set():
                # A loop that ended would leave its jobs to others unseen: stop, and be restarted.
                error = ended[0].exception() if not ended[0].cancelled() else None
                raise RuntimeError(f"a worker loop ended while the worker runs: {error!r}")
        finally:
            stopping.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.nc.close()

    async def _announce(self, js: JetStreamContext, stop: asyncio.Event) -> None:
        """Say which kinds this worker runs, so the API can tell when nobody runs a kind."""
        kv = await js.key_value(eventbus.WORKERS_BUCKET)
        # This worker's own key: another Worker of the same process (or of a host with the same
        # name and pid) stopping deletes its key, never this one's.
        key = re.sub(r"[^A-Za-z0-9_-]", "-", f"{jobs.WORKER_NAME}-{uuid.uuid4().hex[:12]}")
        body = json.dumps({"worker": jobs.WORKER_NAME, "kinds": sorted(self.kinds)}).encode()
        while not stop.is_set():
            with contextlib.suppress(Exception):
                await kv.put(key, body)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=eventbus.WORKER_TTL_S / 4)
        with contextlib.suppress(Exception):
            await kv.delete(key)

    # -- planner -------------------------------------------------------------------------
    async def _plan_loop(self, js: JetStreamContext, stop: asyncio.Event) -> None:
        sub = await _pull_subscribe(
            js,
            "planner",
            f"{events.EVENTS_SUBJECT_PREFIX}.{events.RevisionCreated.TYPE}",
            durable="hwrepo-planner",
            stream=EVENTS_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.options.ack_wait_s,
                max_deliver=10,
                deliver_policy=DeliverPolicy.ALL,
            ),
        )
        while not stop.is_set():
            msgs = await _fetch(sub, timeout=2, what="planner")
            for msg in msgs:
                try:
                    await self.plan(js, msg)
                except Exception:
                    log.exception("planning failed; the event will be redelivered")
                    await msg.nak(delay=5)

    async def plan(self, js: JetStreamContext, msg: Msg) -> None:
        event = events.Event.from_json(msg.data)
        created = events.RevisionCreated.model_validate(event.data)
        heartbeat = asyncio.create_task(eventbus.keep_alive(msg, self.options.ack_wait_s / 4))
        try:
            plan = await asyncio.to_thread(
                planner.plan_revision, self.store, all_kinds(), created.manifest
            )
        finally:
            heartbeat.cancel()
        if self.latest is not None:
            await self._raise_latest(created.project_id, created.number)
        for check in plan.checks:
            await _publish(js, check.queued_event())
            if check.finished is not None:  # a planning error: ended (and recorded) at once
                await _publish(js, check.finished)
                continue
            job = check.job
            await eventbus.publish(
                js, eventbus.job_subject(job.kind), job.model_dump_json().encode(), job.job_id
            )
        await _publish(js, plan.planned_event())
        await msg.ack()
        log.info("planned %s r%d: %d checks", plan.project, plan.number, len(plan.checks))

    async def _raise_latest(self, project_id: str, number: int) -> None:
        assert self.latest is not None
        try:
            entry = await self.latest.get(project_id)
            current = int(entry.value or b"0")
        except KeyNotFoundError:
            current = 0
        if number > current:
            await self.latest.put(project_id, str(number).encode())

    async def _superseded_by(self, job: Job) -> int | None:
        """The newer revision that makes this job not worth running, if any. Only queued work
        nobody asked for again is cancelled: never a re-run a maintainer asked for."""
        if not self.options.cancel_superseded or self.latest is None:
            return None
        if job.rerun or job.run > 1:
            return None
        try:
            entry = await self.latest.get(job.project_id)
        except KeyNotFoundError:
            return None
        newest = int(entry.value or b"0")
        return newest if newest > job.revision else None

    # -- jobs ----------------------------------------------------------------------------
    async def _job_loop(self, js: JetStreamContext, kind: str, stop: asyncio.Event) -> None:
        sub = await _pull_subscribe(
            js,
            f"{kind} jobs",
            eventbus.job_subject(kind),
            durable=f"hwrepo-worker-{kind}",
            stream=eventbus.JOBS_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.options.ack_wait_s,
                # One delivery more than the attempts: that one only reports the failure.
                max_deliver=self.options.max_attempts + 1,
            ),
        )
        while not stop.is_set():
            # Ask for a job only while this process has a free slot, and hold the slot only
            # while a job runs: an idle kind must not keep another kind's job waiting.
            if self.slots.locked():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.slots.wait_free(), timeout=1)
                continue
            msgs = await _fetch(sub, timeout=1, what=f"{kind} jobs")
            for msg in msgs:
                keep_alive = asyncio.create_task(
                    eventbus.keep_alive(msg, self.options.ack_wait_s / 4)
                )
                try:
                    async with self.slots:
                        keep_alive.cancel()
                        await self.handle(js, msg)
                except Exception:
                    log.exception("job handling failed; it will be redelivered")
                finally:
                    keep_alive.cancel()

    async def handle(self, js: JetStreamContext, msg: Msg) -> None:
        job = Job.model_validate_json(msg.data)
        attempt = msg.metadata.num_delivered
        # A run that ended before (its worker died after storing the record, before the ack) is
        # announced again, never run again (JetStream drops the duplicate event).
        done = await asyncio.to_thread(jobs.stored_finish, self.store, job)
        if done is not None:
            await _publish(js, done)
            await msg.ack()
            return
        if attempt > self.options.max_attempts:
            summary = (
                f"the job was started {attempt - 1} times and never finished: the worker "
                "running it stopped or was killed each time"
            )
            await self._end_unrun(js, msg, job, "errored", summary)
            return
        newer = await self._superseded_by(job)
        if newer is not None:
            summary = f"cancelled before it started: revision {newer} superseded it"
            await self._end_unrun(js, msg, job, "cancelled", summary, superseded_by=newer)
            return
        kind = self.kinds[job.kind]
        await _publish(js, jobs.started_event(job, attempt))
        heartbeat = asyncio.create_task(eventbus.keep_alive(msg, self.options.ack_wait_s / 4))
        try:
            finished = await asyncio.to_thread(
                jobs.execute, self.store, kind, job, self.dirs, attempt
            )
        finally:
            heartbeat.cancel()
        await _publish(js, finished)
        await msg.ack()
        log.info("%s %s: %s", job.kind, job.name, finished.data.get("summary"))

    async def _end_unrun(
        self,
        js: JetStreamContext,
        msg: Msg,
        job: Job,
        state: FinalState,
        summary: str,
        superseded_by: int | None = None,
    ) -> None:
        """End a job without running it: its record in the bucket (where reindex finds every
        final state), then its event, then the ack."""
        finished = await asyncio.to_thread(
            lambda: jobs.store_outcome(self.store, job, state, summary, superseded_by=superseded_by)
        )
        await _publish(js, finished)
        await msg.ack()
        log.info("%s %s: %s", job.kind, job.name, summary)


def run_worker(settings: Settings, options: WorkerOptions) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await Worker(settings, options).run(stop)

    asyncio.run(main())
