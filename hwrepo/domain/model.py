"""The domain: users, projects, revisions and their files. No I/O here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from hwrepo.domain.errors import Invalid

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
TOPIC_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,49}$")
RESERVED_NAMES = {"api", "static", "new", "settings", "login", "logout", "-"}
# Numbers the index can hold: revision numbers are 32-bit integers in every database, pages of a
# listing stop far before an offset would overflow a 64-bit one, and byte offsets are 64-bit.
MAX_REVISION = 2**31 - 1
MAX_PAGE = 1_000_000
MAX_OFFSET = 2**63 - 1


def utcnow() -> datetime:
    """Now, in UTC, to the millisecond (what JSON manifests and every database keep alike)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value) or value.lower() in RESERVED_NAMES or value.endswith(".git"):
        raise Invalid(
            f"{what} {value!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            field="name",
        )
    return value


def check_topics(topics: list[str]) -> list[str]:
    clean: list[str] = []
    for topic in topics:
        t = topic.strip().lower()
        if not TOPIC_RE.match(t):
            raise Invalid(
                f"topic {topic!r} is not allowed: use lowercase letters, digits and '-', "
                "at most 50 characters",
                field="topics",
            )
        if t not in clean:
            clean.append(t)
    if len(clean) > 20:
        raise Invalid("a project has at most 20 topics", field="topics")
    return clean


class ProjectKind(StrEnum):
    HARDWARE = "hardware"
    SOFTWARE = "software"


class Visibility(StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"


class Role(StrEnum):
    """Project roles, strongest first."""

    OWNER = "owner"
    MAINTAINER = "maintainer"
    REVIEWER = "reviewer"
    READER = "reader"

    @property
    def rank(self) -> int:
        return {"owner": 4, "maintainer": 3, "reviewer": 2, "reader": 1}[self.value]

    def at_least(self, other: Role) -> bool:
        return self.rank >= other.rank


@dataclass
class Token:
    id: str
    name: str
    sha256: str
    created: datetime
    scope: str = "write"  # read: GET only; write: everything the user may do; checks: report
    expires: datetime | None = None  # external checks only
    revoked: datetime | None = None

    def problem(self, now: datetime) -> str | None:
        """Why the token cannot be used now, or None."""
        if self.revoked is not None:
            return f"the API token {self.name!r} was revoked on {self.revoked:%Y-%m-%d %H:%M} UTC"
        if self.expires is not None and now >= self.expires:
            return f"the API token {self.name!r} expired on {self.expires:%Y-%m-%d %H:%M} UTC"
        return None


TOKEN_SCOPES = ("read", "write", "checks")


@dataclass
class User:
    id: str
    name: str
    admin: bool
    created: datetime
    tokens: list[Token] = field(default_factory=list)
    # An argon2 hash of the password for signing in to the pages (None: no password set).
    password_hash: str | None = None


@dataclass
class WebSession:
    """A signed-in browser: its cookie's secret is kept only as `sha256`; `csrf` is the token
    its forms and page scripts send back with every change."""

    id: str
    sha256: str
    user: str
    csrf: str
    created: datetime
    expires: datetime


@dataclass
class ProjectLink:
    """A link to another project of the catalogue, e.g. a board and its firmware."""

    project: str  # "owner/name"
    relation: str


@dataclass
class Project:
    id: str
    owner: str
    name: str
    kind: ProjectKind
    visibility: Visibility
    licence: str
    description: str
    topics: list[str]
    links: list[ProjectLink]
    members: dict[str, Role]
    created: datetime
    updated: datetime
    deleted: bool = False
    # Waivers and severity overrides of check violations (see hwrepo.domain.checks.Waiver).
    waivers: list[dict[str, Any]] = field(default_factory=list)
    # Check names or kinds a revision needs before it can succeed (e.g. an external CI's).
    required_checks: list[str] = field(default_factory=list)
    # Approvals (review verdicts) a revision needs before it can succeed; 0: none needed.
    required_approvals: int = 0

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    def role_of(self, user: User | None) -> Role | None:
        if user is None:
            return None
        if user.name == self.owner:
            return Role.OWNER
        return self.members.get(user.name)

    def can_read(self, user: User | None) -> bool:
        if self.visibility is Visibility.PUBLIC:
            return True
        return user is not None and (user.admin or self.role_of(user) is not None)

    def has_role(self, user: User | None, role: Role) -> bool:
        if user is None:
            return False
        if user.admin:
            return True
        mine = self.role_of(user)
        return mine is not None and mine.at_least(role)


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str
    media_type: str


@dataclass
class Revision:
    id: str
    project_id: str
    number: int
    parent: int | None
    message: str
    author: str
    created: datetime
    files: list[FileEntry]
    idempotency_key: str | None = None
    fingerprint: str | None = None

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def file(self, path: str) -> FileEntry | None:
        for entry in self.files:
            if entry.path == path:
                return entry
        return None
