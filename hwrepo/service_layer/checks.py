"""Checks on the API side: folding check events into the index (idempotently), reading checks
with their details from the bucket, and re-running them."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update

from hwrepo.adapters.db.index import Index
from hwrepo.adapters.db.orm import CheckRow, ProjectRow, RevisionRow
from hwrepo.adapters.eventbus import job_subject
from hwrepo.domain import events
from hwrepo.domain.checks import (
    Check,
    CheckState,
    Job,
    RevisionState,
    Waiver,
    accepts,
    revision_state,
)
from hwrepo.domain.errors import Invalid, NotFound
from hwrepo.domain.model import Project, Revision, Role, User
from hwrepo.service_layer import jobs
from hwrepo.service_layer.backends import Backends
from hwrepo.service_layer.projects import require_role, visible_project
from hwrepo.service_layer.revisions import get_revision

log = logging.getLogger(__name__)


def _check(row: CheckRow) -> Check:
    return Check(
        id=row.id,
        revision_id=row.revision_id,
        project_id=row.project_id,
        revision=row.revision,
        kind=row.kind,
        name=row.name,
        run=row.run,
        state=CheckState(row.state),
        summary=row.summary,
        created=row.created,
        started=row.started,
        finished=row.finished,
        details_key=row.details_key,
        artifacts=list(row.artifacts or []),
        counts=dict(row.counts or {}),
        detected=dict(row.detected or {}),
        job=dict(row.job or {}),
    )


# -- recording events ------------------------------------------------------------------------
def record(backends: Backends, event: events.Event) -> bool:
    """Fold one event into the index. Returns False when it changed nothing (a duplicate, an
    event of an older run, or not a check event). Safe to call twice with the same event."""
    if event.type not in _HANDLERS:
        return False
    with backends.writing() as index:
        return record_in(index, event)


def record_in(index: Index, event: events.Event) -> bool:
    """`record` inside a unit of work the caller holds (reindex folds many events in one)."""
    handler = _HANDLERS.get(event.type)
    return handler(index, event) if handler else False


def _planned(index: Index, event: events.Event) -> bool:
    data = events.RevisionPlanned.model_validate(event.data)
    result = index.session.execute(
        update(RevisionRow)
        .where(RevisionRow.id == data.revision_id)
        .values(planned=True, plan_errors=data.errors)
    )
    return bool(result.rowcount)


def _row(index: Index, check_id: str) -> CheckRow | None:
    return index.session.get(CheckRow, check_id, with_for_update=True)


def _revision_exists(index: Index, revision_id: str) -> bool:
    return index.session.get(RevisionRow, revision_id) is not None


def _queued(index: Index, event: events.Event) -> bool:
    data = events.CheckQueued.model_validate(event.data)
    row = _row(index, data.check_id)
    current = _check(row) if row else None
    if not accepts(current, data.run, CheckState.QUEUED) or not _revision_exists(
        index, data.revision_id
    ):
        return False
    if row is None:
        row = CheckRow(id=data.check_id, created=event.time)
        index.session.add(row)
    row.revision_id = data.revision_id
    row.project_id = data.project_id
    row.revision = data.number
    row.kind = data.kind
    row.name = data.name
    row.run = data.run
    row.state = CheckState.QUEUED.value
    row.summary = ""
    row.started = None
    row.finished = None
    row.details_key = None
    row.artifacts = []
    row.counts = {}
    row.detected = data.detected
    row.job = data.job
    return True


def _started(index: Index, event: events.Event) -> bool:
    data = events.CheckStarted.model_validate(event.data)
    row = _row(index, data.check_id)
    if row is None or not accepts(_check(row), data.run, CheckState.RUNNING):
        return False
    if data.run > row.run:
        return False  # the queued event of that run comes first; a started one alone is unusable
    row.state = CheckState.RUNNING.value
    row.started = event.time
    row.summary = f"running on {data.worker} (attempt {data.attempt})"
    return True


def _finished(index: Index, event: events.Event) -> bool:
    data = events.CheckFinished.model_validate(event.data)
    row = _row(index, data.check_id)
    state = CheckState(data.state)
    current = _check(row) if row else None
    if not accepts(current, data.run, state):
        return False
    if row is None:
        if not _revision_exists(index, data.revision_id):
            return False
        row = CheckRow(
            id=data.check_id,
            created=event.time,
            detected={},
            job={},
        )
        index.session.add(row)
        row.revision_id = data.revision_id
        row.project_id = data.project_id
        row.revision = data.number
        row.kind = data.kind
        row.name = data.name
    row.run = data.run
    row.state = state.value
    row.summary = data.summary
    row.started = data.started or row.started
    row.finished = data.finished or event.time
    row.details_key = data.details
    row.artifacts = data.artifacts
    row.counts = data.counts
    return True


_HANDLERS = {
    events.RevisionPlanned.TYPE: _planned,
    events.CheckQueued.TYPE: _queued,
    events.CheckStarted.TYPE: _started,
    events.CheckFinished.TYPE: _finished,
}


# -- reading ---------------------------------------------------------------------------------
def list_checks(
    backends: Backends, actor: User | None, owner: str, name: str, number: int
) -> tuple[Project, Revision, RevisionState, bool, list[str], list[Check]]:
    project, revision = get_revision(backends, actor, owner, name, number)
    with backends.reading() as index:
        rev_row = index.session.get(RevisionRow, revision.id)
        rows = index.session.scalars(
            select(CheckRow)
            .where(CheckRow.revision_id == revision.id)
            .order_by(CheckRow.kind, CheckRow.name)
        ).all()
        checks = [_check(r) for r in rows]
    planned = bool(rev_row and rev_row.planned)
    errors = list(rev_row.plan_errors or []) if rev_row else []
    return project, revision, revision_state(planned, checks), planned, errors, checks


def get_check(
    backends: Backends, actor: User | None, owner: str, name: str, number: int, check_id: str
) -> tuple[Project, Check]:
    project, revision = get_revision(backends, actor, owner, name, number)
    with backends.reading() as index:
        row = index.session.get(CheckRow, check_id)
        check = _check(row) if row is not None and row.revision_id == revision.id else None
    if check is None:
        raise NotFound(f"revision {number} of {project.full_name} has no check {check_id!r}")
    return project, check


def check_details(backends: Backends, check: Check) -> dict[str, Any]:
    """The kind-specific details the worker stored with the result ({} while not finished)."""
    if not check.details_key:
        return {}
    record = backends.store.get_json(check.details_key) or {}
    details = record.get("details", {})
    return details if isinstance(details, dict) else {}


def artifact(check: Check, name: str) -> dict[str, Any]:
    for item in check.artifacts:
        if item.get("name") == name:
            return item
    available = ", ".join(a.get("name", "?") for a in check.artifacts) or "none"
    raise NotFound(f"check {check.name!r} has no artifact {name!r} (it has: {available})")


# -- re-running ------------------------------------------------------------------------------
def rerun(
    backends: Backends,
    actor: User | None,
    owner: str,
    name: str,
    number: int,
    check_id: str | None = None,
) -> list[Check]:
    """Queue a new run of one check (or of every check of the revision). The new job and its
    `check.queued` event go through the outbox, in the transaction that marks the check queued."""
    project, revision = get_revision(backends, actor, owner, name, number)
    require_role(project, actor, Role.MAINTAINER, "re-running checks")
    rerun_checks: list[Check] = []
    with backends.writing() as index:
        locked = visible_project(index, actor, owner, name)
        waivers = [Waiver.model_validate(w) for w in _project_waivers(index, locked.id)]
        stmt = select(CheckRow).where(CheckRow.revision_id == revision.id).with_for_update()
        if check_id is not None:
            stmt = stmt.where(CheckRow.id == check_id)
        rows = index.session.scalars(stmt).all()
        if check_id is not None and not rows:
            raise NotFound(f"revision {number} of {project.full_name} has no check {check_id!r}")
        for row in rows:
            if not row.job:
                raise Invalid(f"check {row.name!r} was never queued as a job; it cannot re-run")
            if not CheckState(row.state).final:
                continue  # already queued or running
            job = Job.model_validate(row.job)
            job = job.model_copy(
                update={
                    "run": row.run + 1,
                    "waivers": [w for w in waivers if w.kind in {"*", job.kind}],
                }
            )
            queued = jobs.queued_event(job, row.detected)
            _queued(index, queued)
            index.add_event(queued)
            index.add_message(job_subject(job.kind), job.model_dump_json(), job.job_id)
            rerun_checks.append(_check(row))
    return rerun_checks


def _project_waivers(index: Index, project_id: str) -> list[dict[str, Any]]:
    row = index.session.get(ProjectRow, project_id)
    return list(row.waivers or []) if row else []


def counts_by_state(checks: list[Check]) -> dict[str, int]:
    out = {s.value: 0 for s in CheckState}
    for c in checks:
        out[c.state.value] += 1
    return out
