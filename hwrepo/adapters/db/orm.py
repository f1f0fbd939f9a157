"""SQL tables of the metadata index. The bucket is the truth; `hwrepo reindex` rebuilds these."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the index")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON}


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime]
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    tokens: Mapped[list[TokenRow]] = relationship(
        back_populates="user", cascade="all, delete-orphan", order_by="TokenRow.created"
    )


class TokenRow(Base):
    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[datetime]
    scope: Mapped[str] = mapped_column(String(20), default="write")
    expires: Mapped[datetime | None]
    revoked: Mapped[datetime | None]
    user: Mapped[UserRow] = relationship(back_populates="tokens")


class SessionRow(Base):
    """A signed-in browser (not in the bucket: after a reindex, people sign in again)."""

    __tablename__ = "sessions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime]
    expires: Mapped[datetime] = mapped_column(index=True)
    user: Mapped[UserRow] = relationship()


class ProjectRow(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_projects_owner_name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20), index=True)
    visibility: Mapped[str] = mapped_column(String(20))
    licence: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    links: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    created: Mapped[datetime]
    updated: Mapped[datetime]
    waivers: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, server_default="[]")
    required_checks: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    required_approvals: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Last revision number handed out; bumped under the row lock to number revisions.
    revision_counter: Mapped[int] = mapped_column(Integer, default=0)
    owner: Mapped[UserRow] = relationship()
    topics: Mapped[list[ProjectTopicRow]] = relationship(
        cascade="all, delete-orphan", order_by="ProjectTopicRow.position"
    )
    members: Mapped[list[MemberRow]] = relationship(cascade="all, delete-orphan")


class ProjectTopicRow(Base):
    __tablename__ = "project_topics"
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    topic: Mapped[str] = mapped_column(String(50), primary_key=True, index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)


class MemberRow(Base):
    __tablename__ = "project_members"
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(20))
    user: Mapped[UserRow] = relationship()


class RevisionRow(Base):
    __tablename__ = "revisions"
    __table_args__ = (
        UniqueConstraint("project_id", "number", name="uq_revisions_project_number"),
        UniqueConstraint("project_id", "idempotency_key", name="uq_revisions_idempotency"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    parent: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    author_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created: Mapped[datetime]
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Set when the planner announced the revision's checks (until then its state is pending).
    planned: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    plan_errors: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    author: Mapped[UserRow] = relationship()
    files: Mapped[list[RevisionFileRow]] = relationship(
        cascade="all, delete-orphan", order_by="RevisionFileRow.path"
    )


class RevisionFileRow(Base):
    __tablename__ = "revision_files"
    revision_id: Mapped[str] = mapped_column(
        ForeignKey("revisions.id", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    media_type: Mapped[str] = mapped_column(String(200))


class OutboxRow(Base):
    """Events written in the same transaction as the change they announce; a relay publishes."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "published_at", "seq"),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(100), unique=True)  # the Nats-Msg-Id
    subject: Mapped[str] = mapped_column(String(200))
    payload: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime]
    published_at: Mapped[datetime | None] = mapped_column(nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class CheckRow(Base):
    """One check of a revision (a job of one kind), as last reported by its events."""

    __tablename__ = "checks"
    __table_args__ = (Index("ix_checks_revision", "revision_id", "kind", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    revision_id: Mapped[str] = mapped_column(ForeignKey("revisions.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(String(36), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(50))
    name: Mapped[str] = mapped_column(String(500))
    run: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[str] = mapped_column(String(20))
    summary: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[datetime]
    started: Mapped[datetime | None] = mapped_column(nullable=True)
    finished: Mapped[datetime | None] = mapped_column(nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    superseded_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    details_key: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    artifacts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    detected: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    job: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ReviewThreadRow(Base):
    """A review thread; `document` is the thread as stored in the bucket (comments included)."""

    __tablename__ = "review_threads"
    __table_args__ = (Index("ix_review_threads_revision", "project_id", "revision"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    revision: Mapped[int] = mapped_column(Integer)
    anchor_kind: Mapped[str] = mapped_column(String(20))
    check_kind: Mapped[str | None] = mapped_column(String(50), nullable=True)
    check_name: Mapped[str | None] = mapped_column(String(500), nullable=True)
    identity: Mapped[str | None] = mapped_column(String(100), nullable=True)
    resolved: Mapped[bool] = mapped_column(Boolean, default=False)
    updated: Mapped[datetime]
    document: Mapped[dict[str, Any]] = mapped_column(JSON)


class ReviewVerdictRow(Base):
    """A reviewer's latest verdict on a revision."""

    __tablename__ = "review_verdicts"
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    reviewer: Mapped[str] = mapped_column(String(100), primary_key=True)
    verdict: Mapped[str] = mapped_column(String(20))
    created: Mapped[datetime]
    document: Mapped[dict[str, Any]] = mapped_column(JSON)


class IndexStateRow(Base):
    """One row: the index's generation, bumped by every unit of work that writes, in the same
    transaction. An answer read from the index stays valid while the generation is the same."""

    __tablename__ = "index_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger)
