"""Review threads and verdicts.

A thread belongs to a revision (optionally seen through a comparison) and is anchored to one
thing: the revision as a whole, a file's line range, a violation (check kind and name plus the
violation's identity, see hwrepo.checks.core.compare.identity — so the thread follows the
violation into later revisions while a violation with that identity is there), a test (check
kind and name plus the test's name), or a point on a board or schematic sheet (x, y in mm, with
the layer or sheet path). Comments are Markdown, stored as text and rendered without raw HTML.

A verdict is one reviewer's `approve` or `request_changes` on one revision; a later verdict of the
same reviewer replaces the earlier one. A project can require N approvals: until they are given
the revision stays pending, and a request for changes fails it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from hwrepo.domain.model import utcnow

THREAD_SCHEMA = "hwrepo.review-thread/1"
VERDICT_SCHEMA = "hwrepo.review-verdict/1"
MAX_COMMENT = 20_000
MAX_COMMENTS = 1000


class AnchorKind(StrEnum):
    REVISION = "revision"
    FILE = "file"
    VIOLATION = "violation"
    TEST = "test"
    POINT = "point"


class Anchor(BaseModel):
    """Where a thread is. Which fields are needed depends on `kind` (see the module)."""

    kind: AnchorKind
    path: str | None = Field(None, max_length=4096)
    line_start: int | None = Field(None, ge=1, le=10_000_000)
    line_end: int | None = Field(None, ge=1, le=10_000_000)
    check_kind: str | None = Field(None, max_length=50)
    check_name: str | None = Field(None, max_length=500)
    identity: str | None = Field(None, max_length=100)
    violation: dict[str, object] | None = None  # the violation as it was when the thread began
    test: str | None = Field(None, max_length=500)
    x_mm: float | None = Field(None, ge=-100_000, le=100_000)
    y_mm: float | None = Field(None, ge=-100_000, le=100_000)
    layer: str | None = Field(None, max_length=100)
    sheet: str | None = Field(None, max_length=1000)

    @model_validator(mode="after")
    def _complete(self) -> Anchor:
        need = {
            AnchorKind.REVISION: (),
            AnchorKind.FILE: ("path", "line_start"),
            AnchorKind.VIOLATION: ("check_kind", "check_name", "identity"),
            AnchorKind.TEST: ("check_kind", "check_name", "test"),
            AnchorKind.POINT: ("x_mm", "y_mm"),
        }[self.kind]
        missing = [f for f in need if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.kind.value} anchor needs {', '.join(missing)}")
        if self.kind is AnchorKind.POINT and not (self.layer or self.sheet):
            raise ValueError("a point anchor needs the board layer or the schematic sheet")
        if self.line_start and self.line_end and self.line_end < self.line_start:
            raise ValueError("line_end comes before line_start")
        return self

    def follows(self, kind: str, name: str, identity: str) -> bool:
        return (
            self.kind is AnchorKind.VIOLATION
            and self.check_kind == kind
            and self.check_name == name
            and self.identity == identity
        )


class Comment(BaseModel):
    id: str
    author: str
    body: str = Field(max_length=MAX_COMMENT)
    created: datetime
    edited: datetime | None = None


class Thread(BaseModel):
    schema_: str = Field(THREAD_SCHEMA, alias="schema")
    id: str
    project_id: str
    revision: int
    compare_with: int | None = None  # begun on the comparison of `compare_with`...`revision`
    anchor: Anchor
    author: str
    created: datetime
    updated: datetime
    resolved: bool = False
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    waiver_id: str | None = None
    comments: list[Comment] = Field(default_factory=list)

    model_config = {"populate_by_name": True}

    def touch(self) -> None:
        self.updated = utcnow()


class VerdictKind(StrEnum):
    APPROVE = "approve"
    REQUEST_CHANGES = "request_changes"


class Verdict(BaseModel):
    schema_: str = Field(VERDICT_SCHEMA, alias="schema")
    project_id: str
    revision: int
    reviewer: str
    verdict: VerdictKind
    comment: str = Field("", max_length=MAX_COMMENT)
    created: datetime

    model_config = {"populate_by_name": True}


ReviewStateName = Literal["none", "pending", "approved", "changes_requested"]


class ReviewState(BaseModel):
    """A revision's reviews: `none` when nothing is required and nobody gave a verdict."""

    state: ReviewStateName
    required: int
    approvals: int
    approved_by: list[str]
    changes_requested_by: list[str]
    open_threads: int = 0

    @property
    def blocks(self) -> bool:
        """Whether it keeps the revision from succeeding (only when approvals are required)."""
        return self.required > 0 and self.state != "approved"


def review_state(verdicts: list[Verdict], required: int, open_threads: int = 0) -> ReviewState:
    approved = sorted(v.reviewer for v in verdicts if v.verdict is VerdictKind.APPROVE)
    changes = sorted(v.reviewer for v in verdicts if v.verdict is VerdictKind.REQUEST_CHANGES)
    state: ReviewStateName
    if changes:
        state = "changes_requested"
    elif approved and len(approved) >= required:
        state = "approved"
    elif required > 0:
        state = "pending"
    else:
        state = "none"
    return ReviewState(
        state=state,
        required=required,
        approvals=len(approved),
        approved_by=approved,
        changes_requested_by=changes,
        open_threads=open_threads,
    )
