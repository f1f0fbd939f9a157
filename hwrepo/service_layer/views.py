"""What the pages show, gathered under the same visibility rules as the API: the catalogue
with each project's latest state, a project with its revisions' states, a file as text, and the
checks of one design that belong together (a DRC beside its board's render)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hwrepo.adapters.db.index import Index, ProjectQuery
from hwrepo.domain.checks import Check, RevisionState
from hwrepo.domain.errors import NotFound
from hwrepo.domain.model import FileEntry, Project, ProjectLink, Revision, Role, User
from hwrepo.domain.reviews import ReviewState
from hwrepo.service_layer import checks as checks_service
from hwrepo.service_layer import comparisons, projects, reviews, revisions
from hwrepo.service_layer.backends import Backends

TEXT_LIMIT = 2 * 1024 * 1024  # a file shown with line numbers; larger ones are downloads


@dataclass
class ProjectCard:
    project: Project
    latest: int | None
    state: RevisionState | None


@dataclass
class RevisionRow:
    revision: Revision
    files: int
    total_size: int
    state: RevisionState


@dataclass
class ProjectView:
    project: Project
    linked_from: list[ProjectLink]
    revisions: list[RevisionRow]
    total: int
    latest: Revision | None = None
    latest_state: RevisionState | None = None
    checks: list[Check] = field(default_factory=list)
    open_reviews: list[OpenReview] = field(default_factory=list)


def _state(index: Index, project: Project, revision: Revision) -> RevisionState:
    return checks_service.revision_checks(index, project, revision).state


@dataclass
class OpenReview:
    """A revision with unresolved review threads, or whose required approvals are not given."""

    number: int
    open_threads: int
    review: ReviewState


def catalogue(backends: Backends, query: ProjectQuery) -> tuple[list[ProjectCard], int, list[str]]:
    with backends.reading() as index:
        found, total = index.search_projects(query)
        cards = []
        for project in found:
            latest, _ = index.revisions(project.id, page=1, per_page=1)
            if latest:
                revision = latest[0][0]
                cards.append(
                    ProjectCard(project, revision.number, _state(index, project, revision))
                )
            else:
                cards.append(ProjectCard(project, None, None))
        licences = index.licences(query.viewer)
    return cards, total, licences


def project_view(
    backends: Backends, viewer: User | None, owner: str, name: str, page: int = 1
) -> ProjectView:
    with backends.reading() as index:
        project = projects.visible_project(index, viewer, owner, name)
        rows, total = index.revisions(project.id, page=page, per_page=50)
        listed = [RevisionRow(r, n, size, _state(index, project, r)) for r, n, size in rows]
    view = ProjectView(project, projects.linked_from(backends, viewer, project), listed, total)
    newest = None
    with backends.reading() as index:
        number = index.latest_revision_number(project.id)
        if number is not None:
            newest = index.revision(project.id, number)
        if newest is not None:
            view.latest = newest
            view.checks = index.revision_checks(newest.id)
            view.latest_state = _state(index, project, newest)
        view.open_reviews = _open_reviews(index, project, [r.revision.number for r in listed])
    return view


def _open_reviews(index: Index, project: Project, numbers: list[int]) -> list[OpenReview]:
    unresolved: dict[int, int] = {}
    for thread in index.threads(project.id, resolved=False):
        unresolved[thread.revision] = unresolved.get(thread.revision, 0) + 1
    out = []
    for number in sorted(set(unresolved) | set(numbers), reverse=True):
        review = checks_service.revision_review(index, project, number)
        if unresolved.get(number) or review.state in ("pending", "changes_requested"):
            out.append(OpenReview(number, unresolved.get(number, 0), review))
    return out


@dataclass
class FileView:
    project: Project
    revision: Revision
    entry: FileEntry
    lines: list[str] | None  # None: not shown as text
    why_not: str = ""


def file_view(
    backends: Backends, viewer: User | None, owner: str, name: str, number: int, path: str
) -> FileView:
    project, revision = revisions.get_revision(backends, viewer, owner, name, number)
    entry = revision.file(path)
    if entry is None:
        raise NotFound(f"revision {number} of {project.full_name} has no file {path!r}")
    if entry.size > TEXT_LIMIT:
        return FileView(project, revision, entry, None, f"larger than {TEXT_LIMIT // 2**20} MiB")
    data = b"".join(revisions.file_chunks(backends, entry))
    if b"\0" in data[:8192]:
        return FileView(project, revision, entry, None, "a binary file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return FileView(project, revision, entry, text.splitlines() or [""])


def same_design(backends: Backends, check: Check, kind: str) -> list[Check]:
    """The checks of another kind of the same revision made for the same KiCad design (same
    project, board or schematic), e.g. the render beside a DRC."""
    keys = ("project", "board", "schematic")
    mine = {k: check.detected.get(k) for k in keys if check.detected.get(k)}
    with backends.reading() as index:
        found = index.revision_checks(check.revision_id)
    return [
        c for c in found if c.kind == kind and any(c.detected.get(k) == v for k, v in mine.items())
    ]


def details(backends: Backends, check: Check) -> dict[str, Any]:
    return checks_service.check_details(backends, check)


JSON_LIMIT = 8 * 1024 * 1024


def artifact_json(backends: Backends, check: Check, name: str) -> Any:
    """A JSON artifact a tool wrote (a BOM), parsed when it is at most 8 MiB and valid JSON
    (else None: the page then offers the download only)."""
    item = checks_service.artifact(check, name)
    if int(item.get("size", 0)) > JSON_LIMIT:
        return None
    data = b"".join(backends.store.stream(str(item["key"])))
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def revision_paths(backends: Backends, check: Check) -> set[str]:
    """The paths of the check's revision (a traceback's file links to those only)."""
    with backends.reading() as index:
        project = index.project_by_id(check.project_id)
        revision = index.revision(project.id, check.revision) if project else None
    return {f.path for f in revision.files} if revision else set()


# -- reviews and comparisons -------------------------------------------------------------------
@dataclass
class Threads:
    """The review threads of one revision as a page shows them, sorted by where they are
    anchored, and whether the viewer may take part (reviewers and above)."""

    items: list[dict[str, Any]]
    can_review: bool
    me: str | None

    def _anchored(self, kind: str) -> list[dict[str, Any]]:
        return [t for t in self.items if t["anchor"]["kind"] == kind]

    def on_revision(self, compare_with: int | None = None) -> list[dict[str, Any]]:
        """The threads about the revision as a whole (or about one comparison of it)."""
        return [t for t in self._anchored("revision") if t.get("compare_with") == compare_with]

    def on_lines(self, path: str) -> dict[int, list[dict[str, Any]]]:
        """A file's threads by the line they are shown under (the range's last line)."""
        out: dict[int, list[dict[str, Any]]] = {}
        for t in self._anchored("file"):
            a = t["anchor"]
            if a.get("path") == path:
                out.setdefault(int(a.get("line_end") or a["line_start"]), []).append(t)
        return out

    def _of_check(self, kind: str, check: Check) -> list[dict[str, Any]]:
        return [
            t
            for t in self._anchored(kind)
            if t["anchor"].get("check_kind") == check.kind
            and t["anchor"].get("check_name") == check.name
        ]

    def on_violations(self, check: Check) -> list[dict[str, Any]]:
        return self._of_check("violation", check)

    def on_tests(self, check: Check) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for t in self._of_check("test", check):
            out.setdefault(str(t["anchor"]["test"]), []).append(t)
        return out

    def on_points(self) -> list[dict[str, Any]]:
        return self._anchored("point")

    def elsewhere(self) -> list[dict[str, Any]]:
        """The threads anchored to something inside the revision (listed on its page)."""
        return [t for t in self.items if t["anchor"]["kind"] != "revision"]


def threads_of(backends: Backends, viewer: User | None, project: Project, number: int) -> Threads:
    found = reviews.list_threads(backends, viewer, project.owner, project.name, number)
    found.sort(key=lambda t: t["created"])
    return Threads(found, project.has_role(viewer, Role.REVIEWER), viewer.name if viewer else None)


@dataclass
class ComparisonView:
    project: Project
    a: Revision
    b: Revision
    document: dict[str, Any]
    threads: Threads


def comparison_view(
    backends: Backends, viewer: User | None, owner: str, name: str, a: int | None, b: int
) -> ComparisonView:
    """Two revisions compared (`a` None: b's parent), with the threads begun on the comparison."""
    project, rev_a, rev_b = comparisons.resolve_pair(backends, viewer, owner, name, a, b)
    document, _ = comparisons.ensure(backends, project, rev_a, rev_b)
    return ComparisonView(
        project, rev_a, rev_b, document, threads_of(backends, viewer, project, rev_b.number)
    )
