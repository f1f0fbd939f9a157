"""Checks on the API side: folding check events into the index (idempotently), reading checks
with their details from the bucket, and re-running them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from hwrepo.adapters.db.index import Index
from hwrepo.adapters.eventbus import job_subject
from hwrepo.adapters.objectstore import live_log_prefix
from hwrepo.checks.core.compare import identity
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
from hwrepo.domain.reviews import ReviewState, review_state
from hwrepo.service_layer import jobs, livelog
from hwrepo.service_layer.backends import Backends
from hwrepo.service_layer.projects import require_role, visible_project
from hwrepo.service_layer.revisions import get_revision

log = logging.getLogger(__name__)


# -- recording events ------------------------------------------------------------------------
class EventAhead(Exception):
    """An event that can only be folded after an earlier one not recorded yet: a check.started
    before its run's check.queued, which another API process's recorder holds at that moment
    (they share one consumer). The recorder delivers it again shortly instead of dropping it."""


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
    return index.set_planned(data.revision_id, data.errors)


def _queued(index: Index, event: events.Event) -> bool:
    return _queue(index, event) is not None


def _queue(index: Index, event: events.Event) -> Check | None:
    """Fold a check.queued event; the check as stored, or None when the event changed nothing."""
    data = events.CheckQueued.model_validate(event.data)
    current = index.check(data.check_id, for_update=True)
    if not accepts(current, data.run, CheckState.QUEUED) or not index.revision_exists(
        data.revision_id
    ):
        return None
    check = Check(
        id=data.check_id,
        revision_id=data.revision_id,
        project_id=data.project_id,
        revision=data.number,
        kind=data.kind,
        name=data.name,
        run=data.run,
        state=CheckState.QUEUED,
        summary="",
        created=current.created if current else event.time,
        detected=data.detected,
        job=data.job,
    )
    index.save_check(check)
    return check


def _started(index: Index, event: events.Event) -> bool:
    data = events.CheckStarted.model_validate(event.data)
    check = index.check(data.check_id, for_update=True)
    if check is None or data.run > check.run:
        # the run's check.queued comes first: a started event alone cannot make the check
        raise EventAhead(f"check {data.check_id} run {data.run} started before it was queued")
    if not accepts(check, data.run, CheckState.RUNNING, data.attempt):
        return False
    # The attempt that runs now: a redelivered job's, once its first worker died.
    check.state = CheckState.RUNNING
    check.started = event.time
    check.attempt = data.attempt
    check.summary = f"running on {data.worker} (attempt {data.attempt})"
    index.save_check(check)
    return True


def _finished(index: Index, event: events.Event) -> bool:
    data = events.CheckFinished.model_validate(event.data)
    check = index.check(data.check_id, for_update=True)
    state = CheckState(data.state)
    if not accepts(check, data.run, state):
        return False
    if check is None:
        if not index.revision_exists(data.revision_id):
            return False
        check = Check(
            id=data.check_id,
            revision_id=data.revision_id,
            project_id=data.project_id,
            revision=data.number,
            kind=data.kind,
            name=data.name,
            run=data.run,
            state=state,
            summary="",
            created=event.time,
        )
    check.run = data.run
    check.state = state
    check.summary = data.summary
    check.started = data.started or check.started
    check.finished = data.finished or event.time
    check.details_key = data.details
    check.artifacts = data.artifacts
    check.counts = data.counts
    check.superseded_by = data.superseded_by if state is CheckState.CANCELLED else None
    index.save_check(check)
    return True


_HANDLERS = {
    events.RevisionPlanned.TYPE: _planned,
    events.CheckQueued.TYPE: _queued,
    events.CheckStarted.TYPE: _started,
    events.CheckFinished.TYPE: _finished,
}


# -- reading ---------------------------------------------------------------------------------
@dataclass
class RevisionChecks:
    """A revision's checks and what follows from them: `checks_state` from the checks alone,
    `state` with the project's required approvals too."""

    project: Project
    revision: Revision
    state: RevisionState
    checks_state: RevisionState
    planned: bool
    errors: list[str]
    checks: list[Check]
    review: ReviewState


def revision_review(index: Index, project: Project, number: int) -> ReviewState:
    return review_state(
        index.verdicts(project.id, number),
        project.required_approvals,
        index.open_thread_count(project.id, number),
    )


def revision_checks(index: Index, project: Project, revision: Revision) -> RevisionChecks:
    planned, errors = index.plan_state(revision.id)
    checks = index.revision_checks(revision.id)
    review = revision_review(index, project, revision.number)
    return RevisionChecks(
        project=project,
        revision=revision,
        state=revision_state(planned, checks, project.required_checks, review),
        checks_state=revision_state(planned, checks, project.required_checks),
        planned=planned,
        errors=errors,
        checks=checks,
        review=review,
    )


def list_checks(
    backends: Backends, actor: User | None, owner: str, name: str, number: int
) -> RevisionChecks:
    project, revision = get_revision(backends, actor, owner, name, number)
    with backends.reading() as index:
        return revision_checks(index, project, revision)


def get_check(
    backends: Backends, actor: User | None, owner: str, name: str, number: int, check_id: str
) -> tuple[Project, Check]:
    project, revision = get_revision(backends, actor, owner, name, number)
    with backends.reading() as index:
        check = index.check(check_id)
    if check is None or check.revision_id != revision.id:
        raise NotFound(f"revision {number} of {project.full_name} has no check {check_id!r}")
    return project, check


def check_details(backends: Backends, check: Check) -> dict[str, Any]:
    """The kind-specific details the worker stored with the result ({} while not finished)."""
    if not check.details_key:
        return {}
    record = backends.store.get_json(check.details_key) or {}
    details = record.get("details", {})
    if not isinstance(details, dict):
        return {}
    found = details.get("violations")
    if isinstance(found, list):
        # what review threads and comparisons know a violation by, across revisions
        details["violations"] = [
            {**v, "identity": identity(v)} if isinstance(v, dict) else v for v in found
        ]
    return details


def artifact(check: Check, name: str) -> dict[str, Any]:
    for item in check.artifacts:
        if item.get("name") == name:
            return item
    available = ", ".join(a.get("name", "?") for a in check.artifacts) or "none"
    raise NotFound(f"check {check.name!r} has no artifact {name!r} (it has: {available})")


@dataclass
class LogPage:
    data: bytes
    size: int  # of the whole log; of what has been copied so far while `live`
    live: bool  # the check has not ended: the log is still growing


def log_page(backends: Backends, check: Check, offset: int, limit: int) -> LogPage:
    """A byte range of the check's log: the stored log of a run that ended, or, while the
    check is queued or running, of what its worker has copied so far (livelog)."""
    if not check.state.final and not any(a.get("name") == "log.txt" for a in check.artifacts):
        prefix = live_log_prefix(check.project_id, check.revision, check.id, check.run)
        data, size = livelog.read(backends.store, prefix, offset, limit)
        return LogPage(data, size, live=True)
    item = artifact(check, "log.txt")  # NotFound, naming what there is, for a run without one
    size = int(item["size"])
    if offset >= size:
        return LogPage(b"", size, live=False)
    data = b"".join(backends.store.stream(item["key"], offset, limit))
    return LogPage(data, size, live=False)


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
        waivers = [Waiver.model_validate(w) for w in index.project_waivers(locked.id)]
        found = index.revision_checks(revision.id, check_id=check_id, for_update=True)
        if check_id is not None and not found:
            raise NotFound(f"revision {number} of {project.full_name} has no check {check_id!r}")
        for check in found:
            if not check.job:
                raise Invalid(f"check {check.name!r} was never queued as a job; it cannot re-run")
            if not check.state.final:
                continue  # already queued or running
            job = Job.model_validate(check.job)
            job = job.model_copy(
                update={
                    "run": check.run + 1,
                    "rerun": True,  # asked for: a newer revision does not cancel it
                    "waivers": [w for w in waivers if w.kind in {"*", job.kind}],
                }
            )
            queued = jobs.queued_event(job, check.detected)
            requeued = _queue(index, queued)
            index.add_event(queued)
            index.add_message(job_subject(job.kind), job.model_dump_json(), job.job_id)
            rerun_checks.append(requeued or check)
    return rerun_checks


def counts_by_state(checks: list[Check]) -> dict[str, int]:
    out = {s.value: 0 for s in CheckState}
    for c in checks:
        out[c.state.value] += 1
    return out
