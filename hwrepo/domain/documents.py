"""The JSON documents kept in the bucket: the source of truth the index is rebuilt from."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hwrepo.domain.model import (
    FileEntry,
    Project,
    ProjectKind,
    ProjectLink,
    Revision,
    Role,
    Token,
    User,
    Visibility,
)

USER_SCHEMA = "hwrepo.user/1"
PROJECT_SCHEMA = "hwrepo.project/1"
MANIFEST_SCHEMA = "hwrepo.revision/1"


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def user_document(user: User) -> dict[str, Any]:
    return {
        "schema": USER_SCHEMA,
        "id": user.id,
        "name": user.name,
        "admin": user.admin,
        "created": user.created.isoformat(),
        "password_hash": user.password_hash,
        # Tokens are kept as SHA-256 digests of 256-bit random secrets, never in clear.
        "tokens": [
            {
                "id": t.id,
                "name": t.name,
                "sha256": t.sha256,
                "created": t.created.isoformat(),
                "scope": t.scope,
                "expires": t.expires.isoformat() if t.expires else None,
                "revoked": t.revoked.isoformat() if t.revoked else None,
            }
            for t in user.tokens
        ],
    }


def user_from_document(doc: dict[str, Any]) -> User:
    return User(
        id=doc["id"],
        name=doc["name"],
        admin=bool(doc["admin"]),
        created=_time(doc["created"]),
        tokens=[
            Token(
                id=t["id"],
                name=t["name"],
                sha256=t["sha256"],
                created=_time(t["created"]),
                scope=t.get("scope") or "write",
                expires=_time(t["expires"]) if t.get("expires") else None,
                revoked=_time(t["revoked"]) if t.get("revoked") else None,
            )
            for t in doc.get("tokens", [])
        ],
        password_hash=doc.get("password_hash"),
    )


def project_document(project: Project) -> dict[str, Any]:
    return {
        "schema": PROJECT_SCHEMA,
        "id": project.id,
        "owner": project.owner,
        "name": project.name,
        "kind": project.kind.value,
        "visibility": project.visibility.value,
        "licence": project.licence,
        "description": project.description,
        "topics": list(project.topics),
        "links": [{"project": link.project, "relation": link.relation} for link in project.links],
        "members": {name: role.value for name, role in sorted(project.members.items())},
        "created": project.created.isoformat(),
        "updated": project.updated.isoformat(),
        "deleted": project.deleted,
        "waivers": list(project.waivers),
        "required_checks": list(project.required_checks),
        "required_approvals": project.required_approvals,
    }


def project_from_document(doc: dict[str, Any]) -> Project:
    return Project(
        id=doc["id"],
        owner=doc["owner"],
        name=doc["name"],
        kind=ProjectKind(doc["kind"]),
        visibility=Visibility(doc["visibility"]),
        licence=doc["licence"],
        description=doc.get("description", ""),
        topics=list(doc.get("topics", [])),
        links=[ProjectLink(**link) for link in doc.get("links", [])],
        members={name: Role(role) for name, role in doc.get("members", {}).items()},
        created=_time(doc["created"]),
        updated=_time(doc["updated"]),
        deleted=bool(doc.get("deleted", False)),
        waivers=list(doc.get("waivers", [])),
        required_checks=list(doc.get("required_checks", [])),
        required_approvals=int(doc.get("required_approvals", 0)),
    )


def manifest_document(revision: Revision, project: Project) -> dict[str, Any]:
    return {
        "schema": MANIFEST_SCHEMA,
        "id": revision.id,
        "project_id": revision.project_id,
        "project": project.full_name,
        "number": revision.number,
        "parent": revision.parent,
        "message": revision.message,
        "author": revision.author,
        "created": revision.created.isoformat(),
        "idempotency_key": revision.idempotency_key,
        "fingerprint": revision.fingerprint,
        "files": [
            {"path": f.path, "size": f.size, "sha256": f.sha256, "media_type": f.media_type}
            for f in revision.files
        ],
    }


def revision_from_manifest(doc: dict[str, Any]) -> Revision:
    return Revision(
        id=doc["id"],
        project_id=doc["project_id"],
        number=int(doc["number"]),
        parent=doc.get("parent"),
        message=doc.get("message", ""),
        author=doc["author"],
        created=_time(doc["created"]),
        files=[FileEntry(**f) for f in doc["files"]],
        idempotency_key=doc.get("idempotency_key"),
        fingerprint=doc.get("fingerprint"),
    )
