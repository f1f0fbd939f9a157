"""Checks of a revision: their states, how a revision's overall state follows from them, and
the rules for folding check events (which may arrive twice or out of order) into a check."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from hwrepo.domain.model import FileEntry
from hwrepo.domain.reviews import ReviewState


class CheckState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    ERRORED = "errored"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self not in {CheckState.QUEUED, CheckState.RUNNING}


# The kind of checks that outside systems report (other CI, a lab's test bench…).
EXTERNAL = "external"


class RevisionState(StrEnum):
    PENDING = "pending"
    SUCCESS = "success"
    SUPERSEDED = "superseded"
    FAILURE = "failure"


@dataclass
class Check:
    id: str
    revision_id: str
    project_id: str
    revision: int
    kind: str
    name: str
    run: int
    state: CheckState
    summary: str
    created: datetime
    started: datetime | None = None
    finished: datetime | None = None
    attempt: int = 0  # the delivery of the run's job that `started` and the summary are about
    superseded_by: int | None = None  # cancelled because this newer revision superseded it
    details_key: str | None = None  # object key of the details JSON in the bucket
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    detected: dict[str, Any] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict)  # what was queued (for re-runs)


def missing_required(checks: list[Check], required: list[str]) -> list[str]:
    """The required check names or kinds no check of the revision answers to (yet)."""
    have = {c.name for c in checks} | {c.kind for c in checks}
    return [r for r in required if r not in have]


def revision_state(
    planned: bool,
    checks: list[Check],
    required: list[str] | None = None,
    review: ReviewState | None = None,
) -> RevisionState:
    """pending until the revision was planned, while any check is queued or running, and while
    a required check (by name or kind) has not arrived; then success when every check passed
    (or there are none); superseded when every check that did not pass was cancelled because a
    newer revision superseded this one (nothing failed: it was not checked); else failure.
    When the project requires approvals, a revision whose checks passed is pending until they are
    given, and fails when a reviewer requests changes."""
    if not planned or any(not c.state.final for c in checks):
        return RevisionState.PENDING
    if missing_required(checks, required or []):
        return RevisionState.PENDING
    if all(c.state is CheckState.PASSED for c in checks):
        if review is not None and review.blocks:
            if review.state == "changes_requested":
                return RevisionState.FAILURE
            return RevisionState.PENDING
        return RevisionState.SUCCESS
    if all(c.state is CheckState.PASSED or _superseded(c) for c in checks):
        return RevisionState.SUPERSEDED
    return RevisionState.FAILURE


def _superseded(check: Check) -> bool:
    return check.state is CheckState.CANCELLED and check.superseded_by is not None


def accepts(current: Check | None, run: int, state: CheckState, attempt: int = 0) -> bool:
    """Whether an event (run, state[, attempt]) moves the check forward. Events of an older run
    are ignored; within a run a check only moves queued → running → final, and a final state is
    never changed by a later event of that run. A running check moves on to a later attempt of
    its run (the job redelivered after its worker died), never back to an earlier one; a
    duplicate of the attempt shown changes nothing (redeliveries are harmless)."""
    if current is None or run > current.run:
        return True
    if run < current.run:
        return False
    if current.state.final:
        return False
    if state is CheckState.QUEUED:
        return False
    if state is CheckState.RUNNING and current.state is CheckState.RUNNING:
        return attempt > current.attempt
    return True


class Waiver(BaseModel):
    """A project's decision about violations: waive them (they stay visible, marked waived, and
    do not fail the check), or override their severity. Applies to the violations of `kind`
    ("*" for every kind) with this `type` and, if `items` is non-empty, only to violations that
    involve one of these item uuids (lint: "file:line" strings)."""

    id: str
    kind: str = "*"
    type: str
    items: list[str] = Field(default_factory=list)
    severity: str | None = None  # set: a severity override instead of a waiver
    reason: str
    author: str
    created: str


class Job(BaseModel):
    """What a worker receives on the work queue."""

    check_id: str
    run: int = 1
    kind: str
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: list[FileEntry]
    timeout_s: float = 900.0
    project: str
    project_id: str
    revision: int
    revision_id: str
    waivers: list[Waiver] = Field(default_factory=list)
    # Asked for by a maintainer (a re-run): run even when a newer revision superseded this one.
    rerun: bool = False

    @property
    def job_id(self) -> str:
        return f"{self.check_id}.{self.run}"
