"""Projects of the catalogue: create, find, change, delete, and who may do what."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from hwrepo.adapters.db.index import Index, ProjectQuery
from hwrepo.adapters.objectstore import project_key
from hwrepo.domain import events
from hwrepo.domain.documents import project_document
from hwrepo.domain.errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated
from hwrepo.domain.licences import check_licence
from hwrepo.domain.model import (
    Project,
    ProjectKind,
    ProjectLink,
    Role,
    User,
    Visibility,
    check_name,
    check_topics,
    utcnow,
)
from hwrepo.service_layer.backends import Backends


def not_found(owner: str, name: str) -> NotFound:
    # The same words whether the project is missing or private: existence is not disclosed.
    return NotFound(f"there is no project {owner}/{name}, or you have no access to it")


def require_user(actor: User | None) -> User:
    if actor is None:
        raise Unauthenticated("this needs an API token: send 'Authorization: Bearer TOKEN'")
    return actor


def visible_project(index: Index, actor: User | None, owner: str, name: str) -> Project:
    project = index.project(owner, name)
    if project is None or not project.can_read(actor):
        raise not_found(owner, name)
    return project


def require_role(project: Project, actor: User | None, role: Role, doing: str) -> User:
    user = require_user(actor)
    if not project.has_role(user, role):
        raise Forbidden(f"{doing} in {project.full_name} needs the {role.value} role or higher")
    return user


def get_project(backends: Backends, actor: User | None, owner: str, name: str) -> Project:
    with backends.reading() as index:
        return visible_project(index, actor, owner, name)


def search_projects(backends: Backends, query: ProjectQuery) -> tuple[list[Project], int]:
    with backends.reading() as index:
        return index.search_projects(query)


def _check_links(index: Index, actor: User, links: list[dict[str, str]]) -> list[ProjectLink]:
    checked = []
    for link in links:
        target, relation = link.get("project", ""), link.get("relation", "related")
        owner, _, name = target.partition("/")
        linked = index.project(owner, name) if owner and name else None
        if linked is None or not linked.can_read(actor):
            raise Invalid(f"linked project {target!r} does not exist", field="links")
        if not relation or len(relation) > 50:
            raise Invalid("a link's relation is 1-50 characters, e.g. 'firmware'", field="links")
        checked.append(ProjectLink(project=linked.full_name, relation=relation))
    return checked


def _save(
    backends: Backends, index: Index, project: Project, data_type: type[events.ProjectChanged]
) -> None:
    """Index the project, queue its event and write its document, in one unit of work: the
    document is written last, so a failure anywhere rolls the index and the event back."""
    if not project.deleted:
        index.save_project(project)
    change = data_type.TYPE.rsplit(".", 1)[1]
    data = data_type(
        project_id=project.id,
        owner=project.owner,
        name=project.name,
        change=change,
        visibility=project.visibility.value,
        kind=project.kind.value,
    )
    index.add_event(
        events.make_event(
            data,
            id=events.event_id("project", project.id, change, project.updated.isoformat()),
            project=project.full_name,
            project_id=project.id,
        )
    )
    backends.store.put_json(project_key(project.id), project_document(project))


def create_project(
    backends: Backends,
    actor: User | None,
    *,
    name: str,
    kind: str,
    visibility: str = "public",
    licence: str,
    description: str = "",
    topics: list[str] | None = None,
    links: list[dict[str, str]] | None = None,
) -> Project:
    user = require_user(actor)
    check_name(name, "Project name")
    now = utcnow()
    with backends.writing() as index:
        if index.project(user.name, name) is not None:
            raise Conflict(f"you already have a project named {name!r}")
        project = Project(
            id=str(uuid.uuid4()),
            owner=user.name,
            name=name,
            kind=ProjectKind(kind),
            visibility=Visibility(visibility),
            licence=check_licence(licence),
            description=description,
            topics=check_topics(topics or []),
            links=_check_links(index, user, links or []),
            members={},
            created=now,
            updated=now,
        )
        _save(backends, index, project, events.ProjectCreated)
    return project


def linked_from(backends: Backends, actor: User | None, project: Project) -> list[ProjectLink]:
    """The projects (that the actor may see) linking to `project`, with their relation: a
    board lists the firmware that links to it."""
    with backends.reading() as index:
        found = index.projects_linking_to(project.full_name, actor)
    return [
        ProjectLink(project=p.full_name, relation=link.relation)
        for p in found
        for link in p.links
        if link.project == project.full_name
    ]


def update_project(
    backends: Backends, actor: User | None, owner: str, name: str, changes: dict[str, Any]
) -> Project:
    with backends.writing() as index:
        project = visible_project(index, actor, owner, name)
        user = require_role(project, actor, Role.MAINTAINER, "changing the project")
        updated = replace(project, updated=utcnow())
        if "kind" in changes:
            updated.kind = ProjectKind(changes["kind"])
        if "visibility" in changes:
            updated.visibility = Visibility(changes["visibility"])
        if "licence" in changes:
            updated.licence = check_licence(changes["licence"])
        if "description" in changes:
            updated.description = changes["description"]
        if "topics" in changes:
            updated.topics = check_topics(changes["topics"])
        if "links" in changes:
            updated.links = _check_links(index, user, changes["links"])
        if "required_checks" in changes:
            updated.required_checks = sorted({str(c).strip() for c in changes["required_checks"]})
        if changes.get("required_approvals") is not None:
            updated.required_approvals = int(changes["required_approvals"])
        _save(backends, index, updated, events.ProjectUpdated)
    return updated


def delete_project(backends: Backends, actor: User | None, owner: str, name: str) -> None:
    """Remove a project from the catalogue. Its document stays in the bucket as a tombstone and
    its blobs stay (other revisions may share them), so nothing stored is lost by mistake."""
    with backends.writing() as index:
        project = visible_project(index, actor, owner, name)
        require_role(project, actor, Role.OWNER, "deleting the project")
        gone = replace(project, deleted=True, updated=utcnow())
        index.delete_project(project.id)
        _save(backends, index, gone, events.ProjectDeleted)


def set_member(
    backends: Backends, actor: User | None, owner: str, name: str, member: str, role: str
) -> Project:
    try:
        new_role = Role(role)
    except ValueError as exc:
        raise Invalid(
            f"role {role!r} is not one of maintainer, reviewer, reader", field="role"
        ) from exc
    if new_role is Role.OWNER:
        raise Invalid("a project has one owner; give maintainer instead", field="role")
    with backends.writing() as index:
        project = visible_project(index, actor, owner, name)
        require_role(project, actor, Role.OWNER, "managing members")
        if index.user(member) is None:
            raise Invalid(f"there is no user named {member!r}", field="user")
        if member == project.owner:
            raise Invalid("the owner is already a member", field="user")
        updated = replace(project, members={**project.members, member: new_role}, updated=utcnow())
        _save(backends, index, updated, events.ProjectUpdated)
    return updated


def remove_member(
    backends: Backends, actor: User | None, owner: str, name: str, member: str
) -> Project:
    with backends.writing() as index:
        project = visible_project(index, actor, owner, name)
        require_role(project, actor, Role.OWNER, "managing members")
        if member not in project.members:
            raise NotFound(f"{member!r} is not a member of {project.full_name}")
        members = {k: v for k, v in project.members.items() if k != member}
        updated = replace(project, members=members, updated=utcnow())
        _save(backends, index, updated, events.ProjectUpdated)
    return updated


def add_waiver(
    backends: Backends,
    actor: User | None,
    owner: str,
    name: str,
    *,
    kind: str,
    type: str,
    items: list[str],
    severity: str | None,
    reason: str,
) -> dict[str, Any]:
    """Waive (or re-grade) violations of a type in this project's checks. Takes effect for
    checks planned or re-run from now on; the waived violations stay visible as waived."""
    if not reason.strip():
        raise Invalid("a waiver needs a reason", field="reason")
    with backends.writing() as index:
        project = visible_project(index, actor, owner, name)
        user = require_role(project, actor, Role.MAINTAINER, "waiving violations")
        waiver = {
            "id": str(uuid.uuid4()),
            "kind": kind,
            "type": type,
            "items": items,
            "severity": severity,
            "reason": reason.strip(),
            "author": user.name,
            "created": utcnow().isoformat(),
        }
        updated = replace(project, waivers=[*project.waivers, waiver], updated=utcnow())
        _save(backends, index, updated, events.ProjectUpdated)
    return waiver


def remove_waiver(
    backends: Backends, actor: User | None, owner: str, name: str, waiver_id: str
) -> None:
    with backends.writing() as index:
        project = visible_project(index, actor, owner, name)
        require_role(project, actor, Role.MAINTAINER, "removing waivers")
        kept = [w for w in project.waivers if w.get("id") != waiver_id]
        if len(kept) == len(project.waivers):
            raise NotFound(f"{project.full_name} has no waiver {waiver_id!r}")
        _save(
            backends, index, replace(project, waivers=kept, updated=utcnow()), events.ProjectUpdated
        )
