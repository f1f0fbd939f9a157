"""Checks that outside systems report on a revision (another CI, a lab's test bench), in the
spirit of GitHub's check runs: a name, a state, a summary, a details URL and annotations
(`path`, `line`, `end_line`, `level`, `message`). They show beside the built-in checks, count in
the revision's state (and can be required, see `Project.required_checks`), and travel as the
same events (check.queued / started / finished) through the outbox. Their record is kept in the
bucket like every result, so reindex brings them back.

Reporting again under a name whose check has ended starts its next run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from hwrepo.adapters.objectstore import result_prefix
from hwrepo.domain import events
from hwrepo.domain.checks import EXTERNAL, Check, CheckState, Job
from hwrepo.domain.errors import Conflict, Invalid, NotFound
from hwrepo.domain.model import Role, User, utcnow
from hwrepo.service_layer import jobs
from hwrepo.service_layer.backends import Backends
from hwrepo.service_layer.checks import record_in
from hwrepo.service_layer.planner import check_id as make_check_id
from hwrepo.service_layer.projects import require_role
from hwrepo.service_layer.revisions import get_revision

STATES = ("queued", "running", "passed", "failed", "errored", "timed_out", "cancelled")
LEVELS = ("error", "warning", "notice")
MAX_ANNOTATIONS = 5000


@dataclass(frozen=True)
class Annotation:
    path: str
    line: int | None
    end_line: int | None
    level: str
    message: str


@dataclass(frozen=True)
class Report:
    """What an outside system says about its check (None: unchanged on an update)."""

    state: str
    summary: str | None = None
    details_url: str | None = None
    annotations: list[Annotation] | None = None


def _record_key(job: Job) -> str:
    return result_prefix(job.project_id, job.revision, job.check_id, job.run) + "check.json"


def _job(project: Any, revision: Any, check_id: str, name: str, run: int) -> Job:
    return Job(
        check_id=check_id,
        run=run,
        kind=EXTERNAL,
        name=name,
        inputs=[],
        project=project.full_name,
        project_id=project.id,
        revision=revision.number,
        revision_id=revision.id,
    )


def _validate(report: Report) -> None:
    if report.state not in STATES:
        raise Invalid(f"state must be one of {', '.join(STATES)}, not {report.state!r}")
    for a in report.annotations or []:
        if a.level not in LEVELS:
            raise Invalid(f"an annotation's level is one of {', '.join(LEVELS)}, not {a.level!r}")
    if len(report.annotations or []) > MAX_ANNOTATIONS:
        raise Invalid(f"at most {MAX_ANNOTATIONS} annotations per report")
    url = report.details_url
    if url is not None and not url.startswith(("https://", "http://")):
        raise Invalid("details_url must be an http(s) URL")


def report_check(
    backends: Backends,
    actor: User | None,
    owner: str,
    name: str,
    number: int,
    check_name: str,
    report: Report,
    *,
    check_id: str | None = None,
) -> Check:
    """Report (POST: `check_id` None, by name) or update (PATCH: by id) an external check."""
    _validate(report)
    project, revision = get_revision(backends, actor, owner, name, number)
    reporter = require_role(project, actor, Role.MAINTAINER, "reporting checks")
    with backends.writing() as index:
        if check_id is None:
            if not check_name.strip() or len(check_name) > 200:
                raise Invalid("an external check's name is 1 to 200 characters")
            wanted = make_check_id(revision.id, EXTERNAL, check_name)
            current = index.check(wanted, for_update=True)
            if current is not None and not current.state.final:
                raise Conflict(
                    f"check {check_name!r} is {current.state.value}: update it with PATCH "
                    f"(id {wanted})"
                )
            run = current.run + 1 if current is not None else 1
            job = _job(project, revision, wanted, check_name, run)
            previous: dict[str, Any] = {}
            evts = [jobs.queued_event(job, {"reported_by": reporter.name})]
            state_now = CheckState.QUEUED
        else:
            current = index.check(check_id, for_update=True)
            if current is None or current.revision_id != revision.id or current.kind != EXTERNAL:
                raise NotFound(f"revision {number} has no external check {check_id!r}")
            if current.state.final:
                raise Conflict(
                    f"check {current.name!r} ended ({current.state.value}); report a new run "
                    "with POST .../checks/external"
                )
            job = _job(project, revision, current.id, current.name, current.run)
            previous = backends.store.get_json(_record_key(job)) or {}
            evts = []
            state_now = current.state
        details = _details(previous.get("details") or {}, report, reporter)
        wanted_state = CheckState(report.state)
        if wanted_state is CheckState.RUNNING and state_now is not CheckState.RUNNING:
            evts.append(_started(job, reporter))
        elif wanted_state.final:
            counts = {"annotations": _annotation_counts(details["annotations"])}
            summary = report.summary if report.summary is not None else details["summary"]
            started = current.started if current is not None and check_id else None
            evts.append(
                jobs.finished_event(
                    job,
                    wanted_state.value,
                    summary or wanted_state.value,
                    counts=counts,
                    details=_record_key(job),
                    started=started or utcnow(),
                )
            )
        for event in evts:
            record_in(index, event)
            index.add_event(event)
        stored_events = [
            *(previous.get("events") or []),
            *(e.model_dump(mode="json") for e in evts),
        ]
        backends.store.put_json(
            _record_key(job),
            {
                "schema": "hwrepo.check/1",
                "event": stored_events[-1] if stored_events else None,
                "events": stored_events,
                "job": job.model_dump(mode="json"),
                "details": details,
            },
        )
        found = index.check(job.check_id)
    assert found is not None
    return found


def _started(job: Job, reporter: User) -> events.Event:
    return jobs.job_event(
        job,
        events.CheckStarted(
            check_id=job.check_id,
            run=job.run,
            revision_id=job.revision_id,
            kind=EXTERNAL,
            worker=f"{reporter.name} (external)",
            attempt=1,
        ),
        "1",
    )


def _details(previous: dict[str, Any], report: Report, reporter: User) -> dict[str, Any]:
    details = {
        "external": True,
        "reported_by": reporter.name,
        "details_url": previous.get("details_url"),
        "summary": previous.get("summary", ""),
        "annotations": list(previous.get("annotations") or []),
    }
    if report.details_url is not None:
        details["details_url"] = report.details_url
    if report.summary is not None:
        details["summary"] = report.summary
    if report.annotations is not None:
        details["annotations"] = [a.__dict__ for a in report.annotations]
    details["violations"] = [_as_violation(a) for a in details["annotations"]]
    return details


_SEVERITY = {"error": "error", "warning": "warning", "notice": "info"}


def _as_violation(a: dict[str, Any]) -> dict[str, Any]:
    """An annotation as the violations of built-in checks are listed (pages, SARIF, reviews)."""
    digest = hashlib.sha256(f"{a['path']}:{a['line']}:{a['message']}".encode()).hexdigest()[:12]
    return {
        "type": "external-annotation",
        "severity": _SEVERITY.get(a["level"], "warning"),
        "description": a["message"],
        "file": a["path"],
        "line": a.get("line"),
        "end_line": a.get("end_line"),
        "rule": digest,
        "items": [],
        "waived": False,
        "excluded": False,
    }


def _annotation_counts(annotations: list[dict[str, Any]]) -> dict[str, int]:
    counts = {level: 0 for level in LEVELS}
    for a in annotations:
        counts[a["level"]] = counts.get(a["level"], 0) + 1
    return counts
