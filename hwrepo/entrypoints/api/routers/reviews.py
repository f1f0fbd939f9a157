"""Review threads and verdicts:

GET   /api/v1/projects/{owner}/{name}/revisions/{number}/threads
POST  /api/v1/projects/{owner}/{name}/revisions/{number}/threads
GET   /api/v1/projects/{owner}/{name}/threads/{thread_id}
PATCH /api/v1/projects/{owner}/{name}/threads/{thread_id}            (resolve, unresolve)
POST  /api/v1/projects/{owner}/{name}/threads/{thread_id}/comments
PATCH /api/v1/projects/{owner}/{name}/threads/{thread_id}/comments/{comment_id}
POST  /api/v1/projects/{owner}/{name}/threads/{thread_id}/waiver
GET   /api/v1/projects/{owner}/{name}/revisions/{number}/review
POST  /api/v1/projects/{owner}/{name}/revisions/{number}/review      (a verdict)
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from hwrepo.domain.model import MAX_REVISION
from hwrepo.domain.reviews import MAX_COMMENT, Anchor
from hwrepo.entrypoints.api.deps import BackendsDep, RevisionNumber, UserDep
from hwrepo.service_layer import reviews

router = APIRouter(prefix="/api/v1/projects/{owner}/{name}", tags=["reviews"])
ThreadId = Annotated[str, Path(max_length=36)]
Body = Annotated[str, Field(min_length=1, max_length=MAX_COMMENT, description="Markdown")]


class ThreadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    anchor: Anchor = Field(
        description="revision | file (path, line_start[, line_end]) | violation (check_kind, "
        "check_name, identity) | test (check_kind, check_name, test) | point (x_mm, y_mm, "
        "layer or sheet)"
    )
    body: Body
    compare_with: Annotated[int | None, Field(ge=1, le=MAX_REVISION)] = Field(
        None, description="begun on the comparison of this revision with the thread's"
    )


class CommentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    body: Body


class ThreadPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resolved: bool


class ThreadWaiverIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


class VerdictIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    verdict: Literal["approve", "request_changes"]
    comment: Annotated[str, Field(max_length=MAX_COMMENT)] = ""


@router.get("/revisions/{number}/threads")
async def list_threads(
    owner: str,
    name: str,
    number: RevisionNumber,
    backends: BackendsDep,
    user: UserDep,
    resolved: bool | None = None,
) -> list[dict[str, Any]]:
    """The revision's threads, with those of earlier revisions still anchored to a violation of
    this one (`followed_from`: the revision they began on)."""
    return await run_in_threadpool(
        reviews.list_threads, backends, user, owner, name, number, resolved=resolved
    )


@router.post("/revisions/{number}/threads", status_code=201)
async def create_thread(
    owner: str,
    name: str,
    number: RevisionNumber,
    body: ThreadIn,
    backends: BackendsDep,
    user: UserDep,
) -> dict[str, Any]:
    thread = await run_in_threadpool(
        lambda: reviews.create_thread(
            backends,
            user,
            owner,
            name,
            number,
            anchor=body.anchor,
            body=body.body,
            compare_with=body.compare_with,
        )
    )
    return reviews.thread_out(thread)


@router.get("/threads/{thread_id}")
async def get_thread(
    owner: str, name: str, thread_id: ThreadId, backends: BackendsDep, user: UserDep
) -> dict[str, Any]:
    _, thread = await run_in_threadpool(reviews.get_thread, backends, user, owner, name, thread_id)
    return reviews.thread_out(thread)


@router.patch("/threads/{thread_id}")
async def patch_thread(
    owner: str,
    name: str,
    thread_id: ThreadId,
    body: ThreadPatch,
    backends: BackendsDep,
    user: UserDep,
) -> dict[str, Any]:
    thread = await run_in_threadpool(
        reviews.resolve, backends, user, owner, name, thread_id, body.resolved
    )
    return reviews.thread_out(thread)


@router.post("/threads/{thread_id}/comments", status_code=201)
async def add_comment(
    owner: str,
    name: str,
    thread_id: ThreadId,
    body: CommentIn,
    backends: BackendsDep,
    user: UserDep,
) -> dict[str, Any]:
    thread = await run_in_threadpool(
        reviews.comment, backends, user, owner, name, thread_id, body.body
    )
    return reviews.thread_out(thread)


@router.patch("/threads/{thread_id}/comments/{comment_id}")
async def edit_comment(
    owner: str,
    name: str,
    thread_id: ThreadId,
    comment_id: Annotated[str, Path(max_length=36)],
    body: CommentIn,
    backends: BackendsDep,
    user: UserDep,
) -> dict[str, Any]:
    thread = await run_in_threadpool(
        reviews.edit_comment, backends, user, owner, name, thread_id, comment_id, body.body
    )
    return reviews.thread_out(thread)


@router.post("/threads/{thread_id}/waiver", status_code=201)
async def waive(
    owner: str,
    name: str,
    thread_id: ThreadId,
    body: ThreadWaiverIn,
    backends: BackendsDep,
    user: UserDep,
) -> dict[str, Any]:
    """Waive the thread's violation for later checks (matched by its items), with a reason."""
    thread, waiver = await run_in_threadpool(
        reviews.waive_from_thread, backends, user, owner, name, thread_id, body.reason
    )
    return {"waiver": waiver, "thread": reviews.thread_out(thread)}


@router.get("/revisions/{number}/review")
async def get_review(
    owner: str, name: str, number: RevisionNumber, backends: BackendsDep, user: UserDep
) -> dict[str, Any]:
    state, verdicts = await run_in_threadpool(
        reviews.get_review, backends, user, owner, name, number
    )
    return {
        **state.model_dump(),
        "verdicts": [v.model_dump(mode="json", by_alias=True) for v in verdicts],
    }


@router.post("/revisions/{number}/review")
async def give_verdict(
    owner: str,
    name: str,
    number: RevisionNumber,
    body: VerdictIn,
    backends: BackendsDep,
    user: UserDep,
) -> dict[str, Any]:
    """Approve or request changes (reviewers and above; a later verdict replaces your earlier
    one). Returns the revision's review state after it."""
    state = await run_in_threadpool(
        reviews.give_verdict, backends, user, owner, name, number, body.verdict, body.comment
    )
    return state.model_dump()
