"""The API's request and response bodies (kept apart from the domain and the tables)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hwrepo.domain.checks import Check
from hwrepo.domain.model import FileEntry, Project, Revision


class LinkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project: str = Field(description="'owner/name' of the linked project")
    relation: str = Field("related", description="e.g. 'firmware', 'board', 'fork-of'")


class ProjectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: Literal["hardware", "software"]
    visibility: Literal["public", "private"] = "public"
    licence: str = Field(description="SPDX licence expression, e.g. CERN-OHL-S-2.0")
    description: str = Field("", max_length=5000)
    topics: list[str] = Field(default_factory=list)
    links: list[LinkIn] = Field(default_factory=list)


class ProjectPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["hardware", "software"] | None = None
    visibility: Literal["public", "private"] | None = None
    licence: str | None = None
    description: str | None = Field(None, max_length=5000)
    topics: list[str] | None = None
    links: list[LinkIn] | None = None
    required_checks: list[Annotated[str, Field(min_length=1, max_length=500)]] | None = Field(
        None,
        max_length=50,
        description="check names or kinds every revision needs before it can succeed",
    )
    required_approvals: int | None = Field(
        None, ge=0, le=20, description="approvals a revision needs before it can succeed"
    )


class MemberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["maintainer", "reviewer", "reader"]


class LinkOut(BaseModel):
    project: str
    relation: str


class ProjectOut(BaseModel):
    id: str
    owner: str
    name: str
    full_name: str
    kind: str
    visibility: str
    licence: str
    description: str
    topics: list[str]
    links: list[LinkOut]
    members: dict[str, str]
    required_checks: list[str] = Field(default_factory=list)
    required_approvals: int = 0
    linked_from: list[LinkOut] = Field(
        default_factory=list, description="projects that link to this one (e.g. its firmware)"
    )
    created: datetime
    updated: datetime
    url: str

    @classmethod
    def of(cls, project: Project) -> ProjectOut:
        return cls(
            id=project.id,
            owner=project.owner,
            name=project.name,
            full_name=project.full_name,
            kind=project.kind.value,
            visibility=project.visibility.value,
            licence=project.licence,
            description=project.description,
            topics=project.topics,
            links=[LinkOut(project=ln.project, relation=ln.relation) for ln in project.links],
            members={k: v.value for k, v in project.members.items()},
            required_checks=list(project.required_checks),
            required_approvals=project.required_approvals,
            created=project.created,
            updated=project.updated,
            url=f"/api/v1/projects/{project.owner}/{project.name}",
        )


class ProjectPage(BaseModel):
    items: list[ProjectOut]
    page: int
    per_page: int
    total: int


class FileOut(BaseModel):
    path: str
    size: int
    sha256: str
    media_type: str

    @classmethod
    def of(cls, entry: FileEntry) -> FileOut:
        return cls(
            path=entry.path, size=entry.size, sha256=entry.sha256, media_type=entry.media_type
        )


class RevisionBrief(BaseModel):
    id: str
    project: str
    number: int
    parent: int | None
    message: str
    author: str
    created: datetime
    file_count: int
    total_size: int
    url: str


class RevisionOut(RevisionBrief):
    files: list[FileOut]
    idempotency_key: str | None = None
    created_now: bool | None = Field(
        None, description="on upload: false when an Idempotency-Key replayed an earlier upload"
    )
    new_bytes: int | None = Field(None, description="on upload: bytes not stored before")

    @classmethod
    def of(cls, project: Project, revision: Revision) -> RevisionOut:
        return cls(
            id=revision.id,
            project=project.full_name,
            number=revision.number,
            parent=revision.parent,
            message=revision.message,
            author=revision.author,
            created=revision.created,
            file_count=len(revision.files),
            total_size=revision.total_size,
            url=f"/api/v1/projects/{project.full_name}/revisions/{revision.number}",
            files=[FileOut.of(f) for f in revision.files],
            idempotency_key=revision.idempotency_key,
        )


class RevisionPage(BaseModel):
    items: list[RevisionBrief]
    page: int
    per_page: int
    total: int


class CheckOut(BaseModel):
    id: str
    kind: str
    name: str
    state: Literal["queued", "running", "passed", "failed", "errored", "timed_out", "cancelled"]
    summary: str
    run: int
    created: datetime
    started: datetime | None
    finished: datetime | None
    counts: dict[str, Any] = Field(default_factory=dict)
    url: str

    @classmethod
    def of(cls, project: Project, check: Check) -> CheckOut:
        return cls(
            id=check.id,
            kind=check.kind,
            name=check.name,
            state=check.state.value,
            summary=check.summary,
            run=check.run,
            created=check.created,
            started=check.started,
            finished=check.finished,
            counts=check.counts,
            url=f"/api/v1/projects/{project.full_name}/revisions/{check.revision}/checks/{check.id}",
        )


class ArtifactOut(BaseModel):
    name: str
    media_type: str
    size: int
    description: str = ""
    url: str


class CheckDetailOut(CheckOut):
    detected: dict[str, Any] = Field(default_factory=dict)
    artifacts: list[ArtifactOut] = Field(default_factory=list)
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="kind-specific: simulation `tests`; drc/erc/rtl-lint `counts` and the first "
        "page of `violations` (see .../violations for the rest)",
    )


class ChecksOut(BaseModel):
    state: Literal["pending", "success", "superseded", "failure"] = Field(
        description="the revision's state: its checks, and the approvals the project requires"
    )
    checks_state: Literal["pending", "success", "superseded", "failure"] = Field(
        description="the state its checks alone give (what `hwrepo push --wait` waits for)"
    )
    review: dict[str, Any] = Field(
        description="review state: none, pending, approved or changes_requested; approvals "
        "given and required; who requested changes; open threads"
    )
    planned: bool = Field(description="false until the planner announced this revision's checks")
    plan_errors: list[str] = Field(default_factory=list)
    waiting_for: list[str] = Field(
        default_factory=list,
        description="kinds of queued checks that no connected worker runs (they stay queued)",
    )
    required: list[str] = Field(default_factory=list, description="the project's required checks")
    missing_required: list[str] = Field(
        default_factory=list,
        description="required checks (names or kinds) that have not arrived: the state waits",
    )
    counts: dict[str, int]
    checks: list[CheckOut]


class ViolationPage(BaseModel):
    items: list[dict[str, Any]]
    page: int
    per_page: int
    total: int


class WaiverIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field("*", description="check kind (drc, erc, rtl-lint, ...) or * for all")
    type: str = Field(description="violation type, e.g. silk_overlap or LATCH")
    items: list[str] = Field(
        default_factory=list, description="limit to these item uuids (lint: file:line)"
    )
    severity: Literal["error", "warning", "info"] | None = Field(
        None, description="set to override the severity instead of waiving"
    )
    reason: str = Field(min_length=1, max_length=2000)


class RerunOut(BaseModel):
    queued: list[str]
