"""Review threads and verdicts (see hwrepo.domain.reviews for what they are).

Every change is written like any other: the index row and its event (through the outbox) in one
transaction, the document in the bucket (`projects/<id>/reviews/threads/<thread-id>.json`,
`projects/<id>/reviews/verdicts/<number>/<reviewer>.json`) before it commits, so `hwrepo
reindex` brings back exactly what was said. Readers read threads; reviewers and above begin
threads, comment, resolve and give verdicts; a private project's reviews are 404 to outsiders.
"""

from __future__ import annotations

import uuid
from typing import Any

from markdown_it import MarkdownIt

from hwrepo.adapters.db.index import Index
from hwrepo.adapters.objectstore import thread_key, verdict_key
from hwrepo.checks.core.compare import identity
from hwrepo.domain import events
from hwrepo.domain.checks import Check
from hwrepo.domain.errors import Forbidden, Invalid, NotFound
from hwrepo.domain.model import Project, Revision, Role, User, utcnow
from hwrepo.domain.reviews import (
    MAX_COMMENT,
    MAX_COMMENTS,
    Anchor,
    AnchorKind,
    Comment,
    ReviewState,
    Thread,
    Verdict,
    VerdictKind,
)
from hwrepo.service_layer import projects
from hwrepo.service_layer.backends import Backends
from hwrepo.service_layer.checks import check_details, revision_review
from hwrepo.service_layer.projects import require_role, visible_project
from hwrepo.service_layer.revisions import get_revision

# CommonMark without raw HTML; markdown-it refuses javascript: and the like in links.
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def render_markdown(text: str) -> str:
    return _MARKDOWN.render(text)


def _body(text: str) -> str:
    body = text.strip()
    if not body:
        raise Invalid("a comment needs some text", field="body")
    if len(body) > MAX_COMMENT:
        raise Invalid(f"a comment is at most {MAX_COMMENT} characters", field="body")
    return body


# -- anchors -----------------------------------------------------------------------------------
def _check_of(index: Index, revision: Revision, kind: str, name: str) -> Check | None:
    for check in index.revision_checks(revision.id):
        if check.kind == kind and check.name == name:
            return check
    return None


def _violations(backends: Backends, check: Check) -> list[dict[str, Any]]:
    found = check_details(backends, check).get("violations")
    return [v for v in found if isinstance(v, dict)] if isinstance(found, list) else []


def _check_anchor(
    backends: Backends, project: Project, revision: Revision, anchor: Anchor
) -> Anchor:
    """The anchor, checked against the revision (and a violation's snapshot filled in)."""
    where = f"revision {revision.number} of {project.full_name}"
    if anchor.kind is AnchorKind.FILE:
        if revision.file(anchor.path or "") is None:
            raise Invalid(f"{where} has no file {anchor.path!r}", field="anchor.path")
        return anchor
    if anchor.kind in (AnchorKind.VIOLATION, AnchorKind.TEST):
        with backends.reading() as index:
            check = _check_of(index, revision, anchor.check_kind or "", anchor.check_name or "")
        if check is None:
            raise Invalid(
                f"{where} has no {anchor.check_kind} check named {anchor.check_name!r}",
                field="anchor.check_name",
            )
        if anchor.kind is AnchorKind.TEST:
            tests = check_details(backends, check).get("tests") or []
            if not any(isinstance(t, dict) and t.get("name") == anchor.test for t in tests):
                raise Invalid(
                    f"check {check.name!r} has no test {anchor.test!r}", field="anchor.test"
                )
            return anchor
        for violation in _violations(backends, check):
            if identity(violation) == anchor.identity:
                return anchor.model_copy(update={"violation": violation})
        raise Invalid(
            f"check {check.name!r} has no violation with identity {anchor.identity!r} "
            "(the identities are in the check's violations and in comparisons)",
            field="anchor.identity",
        )
    return anchor


# -- reading -----------------------------------------------------------------------------------
def thread_out(thread: Thread) -> dict[str, Any]:
    out = thread.model_dump(mode="json", by_alias=True)
    for comment in out["comments"]:
        comment["html"] = render_markdown(comment["body"])
    return out


def list_threads(
    backends: Backends,
    actor: User | None,
    owner: str,
    name: str,
    number: int,
    *,
    resolved: bool | None = None,
) -> list[dict[str, Any]]:
    """The revision's threads, and the threads of earlier revisions anchored to a violation that
    a check of this revision still has (`followed_from` says where they began)."""
    project, revision = get_revision(backends, actor, owner, name, number)
    with backends.reading() as index:
        own = index.threads(project.id, revision=number, resolved=resolved)
        earlier = index.threads(
            project.id, before=number, anchor_kind=AnchorKind.VIOLATION.value, resolved=resolved
        )
        checks = (
            {(c.kind, c.name): c for c in index.revision_checks(revision.id)} if earlier else {}
        )
    out = [{**thread_out(t), "followed_from": None} for t in own]
    identities: dict[tuple[str, str], set[str]] = {}
    for thread in earlier:
        key = (thread.anchor.check_kind or "", thread.anchor.check_name or "")
        if key not in checks:
            continue
        if key not in identities:
            identities[key] = {identity(v) for v in _violations(backends, checks[key])}
        if thread.anchor.identity in identities[key]:
            out.append({**thread_out(thread), "followed_from": thread.revision})
    return out


def get_thread(
    backends: Backends, actor: User | None, owner: str, name: str, thread_id: str
) -> tuple[Project, Thread]:
    with backends.reading() as index:
        project = visible_project(index, actor, owner, name)
        thread = index.thread(thread_id)
    if thread is None or thread.project_id != project.id:
        raise NotFound(f"{project.full_name} has no review thread {thread_id!r}")
    return project, thread


def get_review(
    backends: Backends, actor: User | None, owner: str, name: str, number: int
) -> tuple[ReviewState, list[Verdict]]:
    project, _ = get_revision(backends, actor, owner, name, number)
    with backends.reading() as index:
        return revision_review(index, project, number), index.verdicts(project.id, number)


# -- writing -----------------------------------------------------------------------------------
def _store(
    backends: Backends,
    index: Index,
    project: Project,
    thread: Thread,
    event_type: type[events.ReviewChanged],
    actor: str,
    comment_id: str | None,
) -> None:
    index.save_thread(thread)
    data = event_type(
        project_id=project.id,
        thread_id=thread.id,
        revision=thread.revision,
        anchor=thread.anchor.model_dump(mode="json", exclude_none=True),
        author=actor,
        comment_id=comment_id,
        resolved=thread.resolved,
    )
    index.add_event(
        events.make_event(
            data,
            id=events.event_id(event_type.TYPE, thread.id, thread.updated.isoformat()),
            project=project.full_name,
            project_id=project.id,
            revision=thread.revision,
        )
    )
    backends.store.put_json(
        thread_key(project.id, thread.id), thread.model_dump(mode="json", by_alias=True)
    )


def create_thread(
    backends: Backends,
    actor: User | None,
    owner: str,
    name: str,
    number: int,
    *,
    anchor: Anchor,
    body: str,
    compare_with: int | None = None,
) -> Thread:
    project, revision = get_revision(backends, actor, owner, name, number)
    user = require_role(project, actor, Role.REVIEWER, "reviewing")
    text = _body(body)
    if compare_with is not None:
        get_revision(backends, actor, owner, name, compare_with)
    anchor = _check_anchor(backends, project, revision, anchor)
    now = utcnow()
    thread = Thread(
        id=str(uuid.uuid4()),
        project_id=project.id,
        revision=number,
        compare_with=compare_with,
        anchor=anchor,
        author=user.name,
        created=now,
        updated=now,
        comments=[Comment(id=str(uuid.uuid4()), author=user.name, body=text, created=now)],
    )
    with backends.writing() as index:
        visible_project(index, actor, owner, name)
        _store(backends, index, project, thread, events.ReviewCreated, user.name, None)
    return thread


def _changing(
    backends: Backends, actor: User | None, owner: str, name: str, thread_id: str, doing: str
) -> tuple[Project, User]:
    project, _ = get_thread(backends, actor, owner, name, thread_id)
    return project, require_role(project, actor, Role.REVIEWER, doing)


def comment(
    backends: Backends, actor: User | None, owner: str, name: str, thread_id: str, body: str
) -> Thread:
    project, user = _changing(backends, actor, owner, name, thread_id, "commenting")
    text = _body(body)
    with backends.writing() as index:
        thread = index.thread(thread_id, for_update=True)
        assert thread is not None
        if len(thread.comments) >= MAX_COMMENTS:
            raise Invalid(f"a thread holds at most {MAX_COMMENTS} comments; begin a new one")
        new = Comment(id=str(uuid.uuid4()), author=user.name, body=text, created=utcnow())
        thread.comments.append(new)
        thread.touch()
        _store(backends, index, project, thread, events.ReviewCommented, user.name, new.id)
    return thread


def edit_comment(
    backends: Backends,
    actor: User | None,
    owner: str,
    name: str,
    thread_id: str,
    comment_id: str,
    body: str,
) -> Thread:
    project, user = _changing(backends, actor, owner, name, thread_id, "editing comments")
    text = _body(body)
    with backends.writing() as index:
        thread = index.thread(thread_id, for_update=True)
        assert thread is not None
        found = next((c for c in thread.comments if c.id == comment_id), None)
        if found is None:
            raise NotFound(f"the thread has no comment {comment_id!r}")
        if found.author != user.name:
            raise Forbidden("only its author can edit a comment")
        found.body = text
        found.edited = utcnow()
        thread.touch()
        _store(backends, index, project, thread, events.ReviewCommented, user.name, found.id)
    return thread


def resolve(
    backends: Backends,
    actor: User | None,
    owner: str,
    name: str,
    thread_id: str,
    resolved: bool,
) -> Thread:
    project, user = _changing(backends, actor, owner, name, thread_id, "resolving threads")
    with backends.writing() as index:
        thread = index.thread(thread_id, for_update=True)
        assert thread is not None
        if thread.resolved == resolved:
            return thread
        thread.resolved = resolved
        thread.resolved_by = user.name if resolved else None
        thread.resolved_at = utcnow() if resolved else None
        thread.touch()
        _store(backends, index, project, thread, events.ReviewResolved, user.name, None)
    return thread


def waive_from_thread(
    backends: Backends,
    actor: User | None,
    owner: str,
    name: str,
    thread_id: str,
    reason: str,
) -> tuple[Thread, dict[str, Any]]:
    """Waive the violation a thread is about, for this project's later checks (matched by its
    items, so it stays waived while the violation does), and say so in the thread."""
    project, thread = get_thread(backends, actor, owner, name, thread_id)
    if thread.anchor.kind is not AnchorKind.VIOLATION or not thread.anchor.violation:
        raise Invalid("only a thread about a violation can waive it")
    if thread.waiver_id:
        raise Invalid("this thread's violation is already waived")
    violation = thread.anchor.violation
    items = sorted(
        {
            str(i["uuid"])
            for i in violation.get("items") or []
            if isinstance(i, dict) and i.get("uuid")
        }
    )
    if violation.get("file") and violation.get("line") is not None:
        items.append(f"{violation['file']}:{violation['line']}")
    waiver = projects.add_waiver(
        backends,
        actor,
        owner,
        name,
        kind=thread.anchor.check_kind or "*",
        type=str(violation.get("type")),
        items=items,
        severity=None,
        reason=reason,
    )
    with backends.writing() as index:
        locked = index.thread(thread_id, for_update=True)
        assert locked is not None
        note = Comment(
            id=str(uuid.uuid4()),
            author=waiver["author"],
            body=f"Waived for later checks: {waiver['reason']}",
            created=utcnow(),
        )
        locked.waiver_id = waiver["id"]
        locked.comments.append(note)
        locked.touch()
        _store(backends, index, project, locked, events.ReviewCommented, note.author, note.id)
    return locked, waiver


def give_verdict(
    backends: Backends,
    actor: User | None,
    owner: str,
    name: str,
    number: int,
    verdict: str,
    comment_text: str = "",
) -> ReviewState:
    project, revision = get_revision(backends, actor, owner, name, number)
    user = require_role(project, actor, Role.REVIEWER, "giving a verdict")
    try:
        kind = VerdictKind(verdict)
    except ValueError as exc:
        raise Invalid(
            f"verdict {verdict!r} is not one of approve, request_changes", field="verdict"
        ) from exc
    if kind is VerdictKind.APPROVE and revision.author == user.name:
        raise Forbidden(f"{user.name} made revision {number}; someone else has to approve it")
    given = Verdict(
        project_id=project.id,
        revision=number,
        reviewer=user.name,
        verdict=kind,
        comment=comment_text.strip()[:MAX_COMMENT],
        created=utcnow(),
    )
    with backends.writing() as index:
        visible_project(index, actor, owner, name)
        index.save_verdict(given)
        state = revision_review(index, project, number)
        index.add_event(
            events.make_event(
                events.ReviewVerdictGiven(
                    project_id=project.id,
                    revision=number,
                    reviewer=user.name,
                    verdict=kind.value,
                    state=state.state,
                ),
                id=events.event_id(
                    "review.verdict", project.id, str(number), user.name, given.created.isoformat()
                ),
                project=project.full_name,
                project_id=project.id,
                revision=number,
            )
        )
        backends.store.put_json(
            verdict_key(project.id, number, user.name), given.model_dump(mode="json", by_alias=True)
        )
    return state
