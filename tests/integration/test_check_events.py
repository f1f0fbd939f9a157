"""Folding check events into the index (the recorder's service layer), on a real database:
duplicates and late events are harmless, and a redelivered job shows the attempt that runs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient

from hwrepo.adapters.db.engine import alembic_config
from hwrepo.config import Settings
from hwrepo.domain import events
from hwrepo.domain.checks import Check, CheckState, Job
from hwrepo.entrypoints import embedded
from hwrepo.service_layer import checks, jobs
from hwrepo.service_layer.backends import Backends
from tests.conftest import Actor
from tests.integration.helpers import API, create_project, uploaded

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def job(api: TestClient, alice: Actor) -> Job:
    """The job of one check of alice/blinky r1, queued."""
    project = create_project(api, alice, "blinky")
    revision = uploaded(api, alice, "alice/blinky", {"rtl/top.v": b"module top; endmodule\n"})
    return Job(
        check_id=str(uuid.uuid4()),
        kind="simulation",
        name="tests/test_top.py · icarus",
        inputs=[],
        project="alice/blinky",
        project_id=project["id"],
        revision=1,
        revision_id=revision["id"],
    )


def started(job: Job, worker: str, attempt: int, at: datetime) -> events.Event:
    event = jobs.job_event(
        job,
        events.CheckStarted(
            check_id=job.check_id,
            run=job.run,
            revision_id=job.revision_id,
            kind=job.kind,
            worker=worker,
            attempt=attempt,
        ),
        str(attempt),
    )
    return event.model_copy(update={"time": at})


def stored(backends: Backends, job: Job) -> Check:
    with backends.reading() as index:
        check = index.check(job.check_id)
    assert check is not None
    return check


def shown(check: Check) -> dict[str, Any]:
    return {
        "state": check.state,
        "summary": check.summary,
        "attempt": check.attempt,
        "started": check.started,
    }


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_a_redelivered_job_shows_the_attempt_that_runs(
    api: TestClient, backends: Backends, alice: Actor, job: Job
) -> None:
    assert checks.record(backends, jobs.queued_event(job, {}))
    first = started(job, "host-a:101", 1, T0)
    assert checks.record(backends, first)
    assert shown(stored(backends, job)) == {
        "state": CheckState.RUNNING,
        "summary": "running on host-a:101 (attempt 1)",
        "attempt": 1,
        "started": T0,
    }
    assert not checks.record(backends, first)  # a duplicate of the attempt shown

    # host-a died; the job was redelivered to host-b.
    second = started(job, "host-b:202", 2, T0 + timedelta(seconds=70))
    assert checks.record(backends, second)
    now = {
        "state": CheckState.RUNNING,
        "summary": "running on host-b:202 (attempt 2)",
        "attempt": 2,
        "started": T0 + timedelta(seconds=70),
    }
    assert shown(stored(backends, job)) == now
    # Duplicates of either attempt, late or not, change nothing.
    for again in (second, first, started(job, "host-a:101", 1, T0 + timedelta(seconds=90))):
        assert not checks.record(backends, again)
        assert shown(stored(backends, job)) == now

    r = api.get(f"{API}/alice/blinky/revisions/1/checks/{job.check_id}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["state"], body["summary"]) == ("running", "running on host-b:202 (attempt 2)")
    assert datetime.fromisoformat(body["started"]) == T0 + timedelta(seconds=70)

    # Once finished, no started event of the run moves it back.
    finished = jobs.finished_event(job, "passed", "1 passed", started=second.time)
    assert checks.record(backends, finished)
    assert not checks.record(backends, started(job, "host-c:303", 3, T0 + timedelta(seconds=99)))
    check = stored(backends, job)
    assert (check.state, check.summary, check.started) == (
        CheckState.PASSED,
        "1 passed",
        T0 + timedelta(seconds=70),
    )


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_superseded_checks_from_before_the_column_are_found_by_their_summary(
    api: TestClient, backends: Backends, job: Job
) -> None:
    """Migration 0004: a check cancelled by supersession before `superseded_by` existed."""
    assert checks.record(backends, jobs.queued_event(job, {}))
    planned = events.RevisionPlanned(
        project_id=job.project_id, revision_id=job.revision_id, number=1, checks=1
    )
    assert checks.record(backends, events.make_event(planned, id=str(uuid.uuid4())))
    summary = "cancelled before it started: revision 7 superseded it"
    assert checks.record(backends, jobs.finished_event(job, "cancelled", summary))
    config = alembic_config(backends.database.engine)
    command.downgrade(config, "0003")
    command.upgrade(config, "head")
    assert stored(backends, job).superseded_by == 7
    r = api.get(f"{API}/alice/blinky/revisions/1/checks")
    assert r.json()["state"] == "superseded"


def test_the_recorder_s_consumer_of_an_earlier_release_gets_the_short_ack_wait(
    settings: Settings, backends: Backends, throwaway_nats: embedded.Server
) -> None:
    """An event lost on its way to an API process is delivered again after the recorder's ack
    wait: a consumer made with the old 30 s is brought to today's when an API starts."""
    import asyncio

    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    from hwrepo.adapters import eventbus
    from hwrepo.entrypoints import recorder
    from hwrepo.service_layer import bootstrap

    own = settings.model_copy(
        update={"nats_urls": [f"nats://127.0.0.1:{throwaway_nats.ready_port}"]}
    )

    async def go() -> float:
        await bootstrap.ensure_streams(own)
        nc = await eventbus.connect(own, name="test-recorder")
        try:
            js = nc.jetstream()
            old = ConsumerConfig(
                durable_name=recorder.DURABLE,
                filter_subject=f"{events.EVENTS_SUBJECT_PREFIX}.>",
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=30,
                deliver_policy=DeliverPolicy.ALL,
            )
            await js.add_consumer(events.EVENTS_STREAM, config=old)
            stop = asyncio.Event()
            task = asyncio.create_task(recorder.record_events(backends, nc, stop))
            await asyncio.sleep(1.5)
            stop.set()
            await task
            info = await js.consumer_info(events.EVENTS_STREAM, recorder.DURABLE)
            return float(info.config.ack_wait or 0)
        finally:
            await nc.close()

    assert asyncio.run(go()) == recorder.ACK_WAIT_S


def test_a_started_event_recorded_before_its_queued_one_is_not_lost(
    settings: Settings, backends: Backends, job: Job, throwaway_nats: embedded.Server
) -> None:
    """API processes share the recorder's consumer, so one may hold a check's check.queued
    while another gets its check.started: the started event waits for the queued one and the
    check shows running, not queued until it ends."""
    import asyncio

    from hwrepo.adapters import eventbus
    from hwrepo.entrypoints import recorder
    from hwrepo.service_layer import bootstrap

    own = settings.model_copy(
        update={"nats_urls": [f"nats://127.0.0.1:{throwaway_nats.ready_port}"]}
    )
    early = started(job, "host-a:101", 1, T0)
    with pytest.raises(checks.EventAhead):
        checks.record(backends, early)

    async def go() -> None:
        await bootstrap.ensure_streams(own)
        nc = await eventbus.connect(own, name="test-recorder")
        try:
            js = nc.jetstream()
            stop = asyncio.Event()
            task = asyncio.create_task(recorder.record_events(backends, nc, stop))
            await js.publish(early.nats_subject, early.to_json(), headers={"Nats-Msg-Id": early.id})
            await asyncio.sleep(1.5)  # delivered, and again, while the check is unknown
            queued = jobs.queued_event(job, {})
            await js.publish(
                queued.nats_subject, queued.to_json(), headers={"Nats-Msg-Id": queued.id}
            )
            deadline = asyncio.get_running_loop().time() + 20
            while asyncio.get_running_loop().time() < deadline:
                with backends.reading() as index:
                    check = index.check(job.check_id)
                if check is not None and check.state is CheckState.RUNNING:
                    break
                await asyncio.sleep(0.2)
            stop.set()
            await task
        finally:
            await nc.close()

    asyncio.run(go())
    assert shown(stored(backends, job)) == {
        "state": CheckState.RUNNING,
        "summary": "running on host-a:101 (attempt 1)",
        "attempt": 1,
        "started": T0,
    }
