"""Events: small typed records in a CloudEvents 1.0 compatible JSON envelope.

The envelope's `id` is also the JetStream `Nats-Msg-Id`, so publishing an event twice is harmless,
and consumers use it to ignore redeliveries. The NATS subject is `hwrepo.events.<type>`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from hwrepo.domain.model import utcnow

EVENTS_STREAM = "HWREPO_EVENTS"
EVENTS_SUBJECT_PREFIX = "hwrepo.events"
SOURCE = "/hwrepo"
_NAMESPACE = uuid.UUID("6f1d3a52-2b7e-4c1a-9d7e-5b0f7f3c9a10")


def event_id(*parts: str) -> str:
    """A deterministic id: the same fact announced twice gets the same id."""
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


class Event(BaseModel):
    """The envelope. `project` is "owner/name", `revision` the revision number."""

    specversion: str = "1.0"
    id: str
    type: str
    source: str = SOURCE
    time: datetime = Field(default_factory=utcnow)
    subject: str | None = None
    datacontenttype: str = "application/json"
    project: str | None = None
    projectid: str | None = None
    revision: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def nats_subject(self) -> str:
        return f"{EVENTS_SUBJECT_PREFIX}.{self.type}"

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Event:
        return cls.model_validate_json(raw)


class EventData(BaseModel):
    """Base for typed event payloads; `TYPE` names the event."""

    TYPE: ClassVar[str]


class RevisionCreated(EventData):
    TYPE: ClassVar[str] = "revision.created"

    project_id: str
    owner: str
    name: str
    number: int
    revision_id: str
    parent: int | None
    author: str
    message: str
    files: int
    total_size: int
    manifest: str  # object key of the revision manifest in the bucket


def make_event(
    data: EventData,
    *,
    id: str,
    project: str | None = None,
    project_id: str | None = None,
    revision: int | None = None,
) -> Event:
    return Event(
        id=id,
        type=data.TYPE,
        subject=f"{project}/revisions/{revision}" if project and revision else project,
        project=project,
        projectid=project_id,
        revision=revision,
        data=data.model_dump(mode="json"),
    )


class ProjectChanged(EventData):
    """project.created / project.updated / project.deleted: the project's document as stored."""

    TYPE: ClassVar[str] = "project.changed"

    project_id: str
    owner: str
    name: str
    change: str  # created | updated | deleted
    visibility: str
    kind: str


class ProjectCreated(ProjectChanged):
    TYPE: ClassVar[str] = "project.created"


class ProjectUpdated(ProjectChanged):
    TYPE: ClassVar[str] = "project.updated"


class ProjectDeleted(ProjectChanged):
    TYPE: ClassVar[str] = "project.deleted"


class RevisionPlanned(EventData):
    """The planner queued every check of a revision (`checks` may be 0)."""

    TYPE: ClassVar[str] = "revision.planned"

    project_id: str
    revision_id: str
    number: int
    checks: int
    errors: list[str] = Field(default_factory=list)


class CheckQueued(EventData):
    TYPE: ClassVar[str] = "check.queued"

    check_id: str
    run: int
    revision_id: str
    project_id: str
    number: int
    kind: str
    name: str
    detected: dict[str, Any] = Field(default_factory=dict)
    job: dict[str, Any] = Field(default_factory=dict)


class CheckStarted(EventData):
    TYPE: ClassVar[str] = "check.started"

    check_id: str
    run: int
    revision_id: str
    kind: str
    worker: str
    attempt: int


class CheckFinished(EventData):
    TYPE: ClassVar[str] = "check.finished"

    check_id: str
    run: int
    revision_id: str
    project_id: str
    number: int
    kind: str
    name: str
    state: str
    summary: str
    counts: dict[str, Any] = Field(default_factory=dict)
    details: str | None = None  # object key of the details JSON
    artifacts: list[dict[str, Any]] = Field(default_factory=list)
    started: datetime | None = None
    finished: datetime | None = None
    superseded_by: int | None = None  # cancelled: the newer revision that superseded this one


class ComparisonReady(EventData):
    """The comparison of revision `b` with `a` (its parent) is stored and current."""

    TYPE: ClassVar[str] = "comparison.ready"

    project_id: str
    a: int
    b: int
    key: str  # object key of the comparison document
    complete: bool  # every check of both revisions had ended
    checks: int


class ReviewChanged(EventData):
    """A review thread began, got a comment (or an edit of one), or was resolved/unresolved."""

    project_id: str
    thread_id: str
    revision: int
    anchor: dict[str, Any]
    author: str  # who did it
    comment_id: str | None = None
    resolved: bool = False


class ReviewCreated(ReviewChanged):
    TYPE: ClassVar[str] = "review.created"


class ReviewCommented(ReviewChanged):
    TYPE: ClassVar[str] = "review.commented"


class ReviewResolved(ReviewChanged):
    TYPE: ClassVar[str] = "review.resolved"


class ReviewVerdictGiven(EventData):
    TYPE: ClassVar[str] = "review.verdict"

    project_id: str
    revision: int
    reviewer: str
    verdict: str
    state: str  # the revision's review state after it
