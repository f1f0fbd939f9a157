"""The metadata index: queries and writes over the SQL tables, in domain terms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, Select, bindparam, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, selectinload

from hwrepo.adapters.db.orm import (
    CheckRow,
    IndexStateRow,
    MemberRow,
    OutboxRow,
    ProjectRow,
    ProjectTopicRow,
    ReviewThreadRow,
    ReviewVerdictRow,
    RevisionFileRow,
    RevisionRow,
    SessionRow,
    TokenRow,
    UserRow,
)
from hwrepo.domain.checks import Check, CheckState
from hwrepo.domain.events import Event
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
    WebSession,
    utcnow,
)
from hwrepo.domain.reviews import Thread, Verdict

MAX_REJECTIONS = 5  # an outbox row NATS refused this often is set aside


@dataclass(frozen=True)
class OutboxMessage:
    """A pending outbox row: what the relay publishes, under `id` as its Nats-Msg-Id."""

    id: str
    subject: str
    payload: str


@dataclass(frozen=True)
class ProjectQuery:
    viewer: User | None
    kind: ProjectKind | None = None
    topic: str | None = None
    owner: str | None = None
    licence: str | None = None
    text: str | None = None
    page: int = 1
    per_page: int = 20


def _token(row: Any, prefix: str = "") -> Token:
    return Token(
        id=getattr(row, prefix + "id"),
        name=row.name if not prefix else getattr(row, prefix + "name"),
        sha256=getattr(row, prefix + "sha256"),
        created=getattr(row, prefix + "created"),
        scope=getattr(row, prefix + "scope") or "write",
        expires=getattr(row, prefix + "expires"),
        revoked=getattr(row, prefix + "revoked"),
    )


def _user(row: UserRow) -> User:
    return User(
        id=row.id,
        name=row.name,
        admin=row.admin,
        created=row.created,
        tokens=[_token(t) for t in row.tokens],
        password_hash=row.password_hash,
    )


def _check(row: Any) -> Check:
    """A check from its ORM object or a row of its table's columns."""
    return Check(
        id=row.id,
        revision_id=row.revision_id,
        project_id=row.project_id,
        revision=row.revision,
        kind=row.kind,
        name=row.name,
        run=row.run,
        state=CheckState(row.state),
        summary=row.summary,
        created=row.created,
        started=row.started,
        finished=row.finished,
        attempt=row.attempt or 0,
        superseded_by=row.superseded_by,
        details_key=row.details_key,
        artifacts=list(row.artifacts or []),
        counts=dict(row.counts or {}),
        detected=dict(row.detected or {}),
        job=dict(row.job or {}),
    )


# The reads every request makes (its token, a project, a revision, its checks) are plain
# statements over the tables, built once: loading ORM objects for them cost most of a request.
_users = UserRow.__table__
_tokens = TokenRow.__table__
_projects = ProjectRow.__table__
_topics = ProjectTopicRow.__table__
_members = MemberRow.__table__
_revisions = RevisionRow.__table__
_files = RevisionFileRow.__table__
_checks = CheckRow.__table__
_threads = ReviewThreadRow.__table__
_state = IndexStateRow.__table__
_verdicts = ReviewVerdictRow.__table__

_BUMP = update(_state).where(_state.c.id == 1).values(generation=_state.c.generation + 1)
_CREDENTIALS = (
    select(
        _users.c.id,
        _users.c.name,
        _users.c.admin,
        _users.c.created,
        _users.c.password_hash,
        *(c.label("token_" + c.name) for c in _tokens.c if c.name != "user_id"),
    )
    .join_from(_tokens, _users, _tokens.c.user_id == _users.c.id)
    .where(_tokens.c.sha256 == bindparam("sha256"))
)
_PROJECT_COLUMNS = select(*_projects.c, _users.c.name.label("owner_name")).join_from(
    _projects, _users, _projects.c.owner_id == _users.c.id
)
_PROJECT_BY_NAME = _PROJECT_COLUMNS.where(
    _users.c.name == bindparam("owner"), _projects.c.name == bindparam("name")
)
_PROJECT_BY_ID = _PROJECT_COLUMNS.where(_projects.c.id == bindparam("id"))
_TOPICS = (
    select(_topics.c.project_id, _topics.c.topic)
    .where(_topics.c.project_id.in_(bindparam("ids", expanding=True)))
    .order_by(_topics.c.project_id, _topics.c.position)
)
_MEMBERS = (
    select(_members.c.project_id, _users.c.name, _members.c.role)
    .join_from(_members, _users, _members.c.user_id == _users.c.id)
    .where(_members.c.project_id.in_(bindparam("ids", expanding=True)))
    .order_by(_members.c.project_id, _users.c.name)
)
_REVISION = (
    select(*_revisions.c, _users.c.name.label("author_name"))
    .join_from(_revisions, _users, _revisions.c.author_id == _users.c.id)
    .where(_revisions.c.project_id == bindparam("project_id"))
    .where(_revisions.c.number == bindparam("number"))
)
_FILES = (
    select(_files.c.path, _files.c.size, _files.c.sha256, _files.c.media_type)
    .where(_files.c.revision_id == bindparam("revision_id"))
    .order_by(_files.c.path)
)
_PLAN_STATE = select(_revisions.c.planned, _revisions.c.plan_errors).where(
    _revisions.c.id == bindparam("revision_id")
)
_CHECK = select(_checks).where(_checks.c.id == bindparam("id"))
_REVISION_CHECKS = (
    select(_checks)
    .where(_checks.c.revision_id == bindparam("revision_id"))
    .order_by(_checks.c.kind, _checks.c.name)
)
_VERDICTS = (
    select(_verdicts.c.document)
    .where(_verdicts.c.project_id == bindparam("project_id"))
    .where(_verdicts.c.revision == bindparam("revision"))
    .order_by(_verdicts.c.created)
)
_OPEN_THREADS = (
    select(func.count())
    .select_from(_threads)
    .where(_threads.c.project_id == bindparam("project_id"))
    .where(_threads.c.revision == bindparam("revision"))
    .where(_threads.c.resolved.is_(False))
)

_PROJECT_LOAD = (  # what save_project changes with a project
    selectinload(ProjectRow.owner),
    selectinload(ProjectRow.topics),
    selectinload(ProjectRow.members).selectinload(MemberRow.user),
)


class Index:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _rows(self, stmt: Select[Any], **params: Any) -> list[Row[Any]]:
        """A statement's rows, through the session's connection (no ORM objects), after what
        the unit of work changed so far (the session's autoflush does not see these reads)."""
        self.session.flush()
        return list(self.session.connection().execute(stmt, params))

    # -- the generation (read by Database.generation) ------------------------------------------
    def bump_generation(self) -> None:
        """Part of every unit of work that writes (Database.writing), last before its commit:
        the row's lock is then held only for the commit."""
        self.session.flush()
        self.session.connection().execute(_BUMP)

    def _projects_of(self, rows: list[Row[Any]]) -> list[Project]:
        """Projects from rows of _PROJECT_COLUMNS, with their topics and members."""
        if not rows:
            return []
        ids = [r.id for r in rows]
        topics: dict[str, list[str]] = {i: [] for i in ids}
        for t in self._rows(_TOPICS, ids=ids):
            topics[t.project_id].append(t.topic)
        members: dict[str, dict[str, Role]] = {i: {} for i in ids}
        for m in self._rows(_MEMBERS, ids=ids):
            members[m.project_id][m.name] = Role(m.role)
        return [
            Project(
                id=r.id,
                owner=r.owner_name,
                name=r.name,
                kind=ProjectKind(r.kind),
                visibility=Visibility(r.visibility),
                licence=r.licence,
                description=r.description,
                topics=topics[r.id],
                links=[ProjectLink(**link) for link in r.links or []],
                members=members[r.id],
                created=r.created,
                updated=r.updated,
                waivers=list(r.waivers or []),
                required_checks=list(r.required_checks or []),
                required_approvals=int(r.required_approvals or 0),
            )
            for r in rows
        ]

    # -- users -----------------------------------------------------------------------------
    def user(self, name: str) -> User | None:
        row = self._user_row(name)
        return _user(row) if row else None

    def _user_row(self, name: str) -> UserRow | None:
        return self.session.scalars(
            select(UserRow).where(UserRow.name == name).options(selectinload(UserRow.tokens))
        ).one_or_none()

    def credentials(self, sha256: str) -> tuple[User, Token] | None:
        """The user a token's digest names and that token (the user's `tokens` hold only it)."""
        rows = self._rows(_CREDENTIALS, sha256=sha256)
        if not rows:
            return None
        r = rows[0]
        token = _token(r, "token_")
        user = User(
            id=r.id,
            name=r.name,
            admin=r.admin,
            created=r.created,
            tokens=[token],
            password_hash=r.password_hash,
        )
        return user, token

    def users(self) -> list[User]:
        rows = self.session.scalars(
            select(UserRow).options(selectinload(UserRow.tokens)).order_by(UserRow.name)
        )
        return [_user(r) for r in rows]

    def save_user(self, user: User) -> None:
        row = self.session.get(UserRow, user.id, options=[selectinload(UserRow.tokens)])
        if row is None:
            row = UserRow(id=user.id, name=user.name, admin=user.admin, created=user.created)
            self.session.add(row)
        row.admin = user.admin
        row.password_hash = user.password_hash
        rows = {t.id: t for t in row.tokens}
        for token in user.tokens:
            token_row = rows.get(token.id)
            if token_row is None:
                token_row = TokenRow(id=token.id, sha256=token.sha256, created=token.created)
                row.tokens.append(token_row)
            token_row.name = token.name
            token_row.scope = token.scope
            token_row.expires = token.expires
            token_row.revoked = token.revoked
        self.session.flush()

    # -- sessions of signed-in browsers --------------------------------------------------------
    def add_session(self, session: WebSession) -> None:
        self.session.add(
            SessionRow(
                id=session.id,
                sha256=session.sha256,
                user_id=self._user_id(session.user),
                csrf=session.csrf,
                created=session.created,
                expires=session.expires,
            )
        )
        self.session.flush()

    def session_by_digest(self, sha256: str) -> tuple[WebSession, User] | None:
        """The unexpired session whose cookie has this digest, and its user."""
        row = self.session.scalars(
            select(SessionRow)
            .where(SessionRow.sha256 == sha256, SessionRow.expires > utcnow())
            .options(selectinload(SessionRow.user).selectinload(UserRow.tokens))
        ).one_or_none()
        if row is None:
            return None
        found = WebSession(
            id=row.id,
            sha256=row.sha256,
            user=row.user.name,
            csrf=row.csrf,
            created=row.created,
            expires=row.expires,
        )
        return found, _user(row.user)

    def delete_session(self, sha256: str) -> None:
        self.session.execute(delete(SessionRow).where(SessionRow.sha256 == sha256))

    def delete_sessions_of(self, user_name: str) -> None:
        """Sign a user out everywhere (a new password), and drop expired sessions."""
        user_id = self._user_id(user_name)
        self.session.execute(
            delete(SessionRow).where(
                or_(SessionRow.user_id == user_id, SessionRow.expires <= utcnow())
            )
        )

    def _user_id(self, name: str) -> str:
        user_id = self.session.scalar(select(UserRow.id).where(UserRow.name == name))
        if user_id is None:
            raise LookupError(name)
        return user_id

    # -- projects --------------------------------------------------------------------------
    def project(self, owner: str, name: str, *, for_update: bool = False) -> Project | None:
        stmt = _PROJECT_BY_NAME.with_for_update(of=_projects) if for_update else _PROJECT_BY_NAME
        found = self._projects_of(self._rows(stmt, owner=owner, name=name))
        return found[0] if found else None

    def project_by_id(self, project_id: str) -> Project | None:
        found = self._projects_of(self._rows(_PROJECT_BY_ID, id=project_id))
        return found[0] if found else None

    def project_waivers(self, project_id: str) -> list[dict[str, Any]]:
        """The project's waivers as stored ([] for an unknown project)."""
        row = self.session.get(ProjectRow, project_id)
        return list(row.waivers or []) if row else []

    def projects_linking_to(self, full_name: str, viewer: User | None) -> list[Project]:
        """The projects the viewer may see whose links name `full_name` ("owner/name")."""
        found, _ = self.search_projects(ProjectQuery(viewer=viewer, page=1, per_page=10_000))
        return [p for p in found if any(link.project == full_name for link in p.links)]

    @staticmethod
    def _visible_to(stmt: Any, viewer: User | None) -> Any:
        if viewer is None:
            return stmt.where(_projects.c.visibility == Visibility.PUBLIC.value)
        if viewer.admin:
            return stmt
        member_of = select(_members.c.project_id).where(_members.c.user_id == viewer.id)
        return stmt.where(
            or_(
                _projects.c.visibility == Visibility.PUBLIC.value,
                _projects.c.owner_id == viewer.id,
                _projects.c.id.in_(member_of),
            )
        )

    def search_projects(self, query: ProjectQuery) -> tuple[list[Project], int]:
        stmt = self._visible_to(_PROJECT_COLUMNS, query.viewer)
        if query.kind:
            stmt = stmt.where(_projects.c.kind == query.kind.value)
        if query.owner:
            stmt = stmt.where(_users.c.name == query.owner)
        if query.licence:
            stmt = stmt.where(_projects.c.licence == query.licence)
        if query.topic:
            tagged = select(_topics.c.project_id).where(_topics.c.topic == query.topic.lower())
            stmt = stmt.where(_projects.c.id.in_(tagged))
        if query.text:
            pattern = (
                "%" + query.text.lower().replace("\\", "").replace("%", "").replace("_", "") + "%"
            )
            stmt = stmt.where(
                or_(
                    func.lower(_projects.c.name).like(pattern),
                    func.lower(_projects.c.description).like(pattern),
                )
            )
        total = self._rows(select(func.count()).select_from(stmt.subquery()))[0][0]
        rows = self._rows(
            stmt.order_by(_projects.c.updated.desc(), _projects.c.id)
            .offset((query.page - 1) * query.per_page)
            .limit(query.per_page)
        )
        return self._projects_of(rows), int(total or 0)

    def save_project(self, project: Project) -> None:
        """Insert or update a project with its topics and members."""
        row = self.session.get(ProjectRow, project.id, options=list(_PROJECT_LOAD))
        if row is None:
            row = ProjectRow(
                id=project.id,
                owner_id=self._user_id(project.owner),
                created=project.created,
                revision_counter=0,
            )
            self.session.add(row)
        row.name = project.name
        row.kind = project.kind.value
        row.visibility = project.visibility.value
        row.licence = project.licence
        row.description = project.description
        row.links = [{"project": ln.project, "relation": ln.relation} for ln in project.links]
        row.updated = project.updated
        row.waivers = list(project.waivers)
        row.required_checks = list(project.required_checks)
        row.required_approvals = project.required_approvals
        row.topics = [
            ProjectTopicRow(project_id=project.id, topic=t, position=i)
            for i, t in enumerate(project.topics)
        ]
        row.members = [
            MemberRow(project_id=project.id, user_id=self._user_id(name), role=role.value)
            for name, role in project.members.items()
        ]
        self.session.flush()

    def delete_project(self, project_id: str) -> None:
        self.session.execute(delete(ProjectRow).where(ProjectRow.id == project_id))

    def next_revision_number(self, project_id: str) -> int:
        """Hand out the next number. The UPDATE takes the row's write lock until commit, so
        concurrent uploads to one project are numbered one after the other."""
        number = self.session.execute(
            update(ProjectRow)
            .where(ProjectRow.id == project_id)
            .values(revision_counter=ProjectRow.revision_counter + 1)
            .returning(ProjectRow.revision_counter)
        ).scalar_one()
        return int(number)

    def set_revision_counter(self, project_id: str, value: int) -> None:
        self.session.execute(
            update(ProjectRow).where(ProjectRow.id == project_id).values(revision_counter=value)
        )

    # -- revisions -------------------------------------------------------------------------
    def add_revision(self, revision: Revision) -> None:
        row = RevisionRow(
            id=revision.id,
            project_id=revision.project_id,
            number=revision.number,
            parent=revision.parent,
            message=revision.message,
            author_id=self._user_id(revision.author),
            created=revision.created,
            idempotency_key=revision.idempotency_key,
            fingerprint=revision.fingerprint,
            files=[
                RevisionFileRow(path=f.path, size=f.size, sha256=f.sha256, media_type=f.media_type)
                for f in revision.files
            ],
        )
        self.session.add(row)
        self.session.flush()

    def revision(self, project_id: str, number: int) -> Revision | None:
        rows = self._rows(_REVISION, project_id=project_id, number=number)
        if not rows:
            return None
        r = rows[0]
        return Revision(
            id=r.id,
            project_id=r.project_id,
            number=r.number,
            parent=r.parent,
            message=r.message,
            author=r.author_name,
            created=r.created,
            files=[
                FileEntry(f.path, f.size, f.sha256, f.media_type)
                for f in self._rows(_FILES, revision_id=r.id)
            ],
            idempotency_key=r.idempotency_key,
            fingerprint=r.fingerprint,
        )

    def revision_exists(self, revision_id: str) -> bool:
        return self.session.get(RevisionRow, revision_id) is not None

    def set_planned(self, revision_id: str, errors: list[str]) -> bool:
        """Mark the revision planned (its checks announced); False if there is no such revision."""
        result = self.session.execute(
            update(RevisionRow)
            .where(RevisionRow.id == revision_id)
            .values(planned=True, plan_errors=errors)
        )
        return bool(result.rowcount)

    def plan_state(self, revision_id: str) -> tuple[bool, list[str]]:
        """(planned, planning errors) of a revision; (False, []) for an unknown one."""
        rows = self._rows(_PLAN_STATE, revision_id=revision_id)
        if not rows:
            return False, []
        return bool(rows[0].planned), list(rows[0].plan_errors or [])

    def revision_by_idempotency_key(self, project_id: str, key: str) -> Revision | None:
        number = self.session.scalar(
            select(RevisionRow.number).where(
                RevisionRow.project_id == project_id, RevisionRow.idempotency_key == key
            )
        )
        return None if number is None else self.revision(project_id, number)

    def licences(self, viewer: User | None) -> list[str]:
        """The licences of the projects the viewer may see, for the catalogue's filter."""
        stmt = self._visible_to(select(ProjectRow.licence).distinct(), viewer)
        return sorted(self.session.scalars(stmt))

    def latest_revision_number(self, project_id: str) -> int | None:
        return self.session.scalar(
            select(func.max(RevisionRow.number)).where(RevisionRow.project_id == project_id)
        )

    def revisions(
        self, project_id: str, *, page: int = 1, per_page: int = 50
    ) -> tuple[list[tuple[Revision, int, int]], int]:
        """Revisions newest first, without their file lists: (revision, file count, total size)."""
        total = (
            self.session.scalar(select(func.count()).where(RevisionRow.project_id == project_id))
            or 0
        )
        stats = (
            select(
                RevisionFileRow.revision_id,
                func.count().label("n"),
                func.coalesce(func.sum(RevisionFileRow.size), 0).label("size"),
            )
            .group_by(RevisionFileRow.revision_id)
            .subquery()
        )
        rows = self.session.execute(
            select(RevisionRow, stats.c.n, stats.c.size)
            .outerjoin(stats, stats.c.revision_id == RevisionRow.id)
            .where(RevisionRow.project_id == project_id)
            .options(selectinload(RevisionRow.author))
            .order_by(RevisionRow.number.desc())
            .offset((page - 1) * per_page)
            .limit(per_page)
        ).all()
        out = []
        for row, n, size in rows:
            rev = Revision(
                id=row.id,
                project_id=row.project_id,
                number=row.number,
                parent=row.parent,
                message=row.message,
                author=row.author.name,
                created=row.created,
                files=[],
            )
            out.append((rev, int(n or 0), int(size or 0)))
        return out, total

    # -- checks ----------------------------------------------------------------------------
    def check(self, check_id: str, *, for_update: bool = False) -> Check | None:
        """One check; `for_update` locks its row until the unit of work ends."""
        if for_update:  # save_check then changes the row the session holds
            row = self.session.get(CheckRow, check_id, with_for_update=True)
            return _check(row) if row else None
        rows = self._rows(_CHECK, id=check_id)
        return _check(rows[0]) if rows else None

    def revision_checks(
        self, revision_id: str, *, check_id: str | None = None, for_update: bool = False
    ) -> list[Check]:
        """The checks of a revision by kind and name (only `check_id`, if given); `for_update`
        locks their rows until the unit of work ends."""
        stmt = _REVISION_CHECKS
        if check_id is not None:
            stmt = stmt.where(_checks.c.id == check_id)
        if for_update:
            stmt = stmt.with_for_update()
        return [_check(r) for r in self._rows(stmt, revision_id=revision_id)]

    def save_check(self, check: Check) -> None:
        """Insert or update a check with every field of `check`."""
        row = self.session.get(CheckRow, check.id)
        if row is None:
            row = CheckRow(id=check.id)
            self.session.add(row)
        row.revision_id = check.revision_id
        row.project_id = check.project_id
        row.revision = check.revision
        row.kind = check.kind
        row.name = check.name
        row.run = check.run
        row.state = check.state.value
        row.summary = check.summary
        row.created = check.created
        row.started = check.started
        row.finished = check.finished
        row.attempt = check.attempt
        row.superseded_by = check.superseded_by
        row.details_key = check.details_key
        row.artifacts = list(check.artifacts)
        row.counts = dict(check.counts)
        row.detected = dict(check.detected)
        row.job = dict(check.job)

    # -- reviews ---------------------------------------------------------------------------
    def thread(self, thread_id: str, *, for_update: bool = False) -> Thread | None:
        stmt = select(ReviewThreadRow).where(ReviewThreadRow.id == thread_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = self.session.scalar(stmt)
        return Thread.model_validate(row.document) if row else None

    def threads(
        self,
        project_id: str,
        *,
        revision: int | None = None,
        before: int | None = None,
        anchor_kind: str | None = None,
        resolved: bool | None = None,
    ) -> list[Thread]:
        """Threads of a project, of one revision or of the revisions before one, oldest first."""
        stmt = select(ReviewThreadRow).where(ReviewThreadRow.project_id == project_id)
        if revision is not None:
            stmt = stmt.where(ReviewThreadRow.revision == revision)
        if before is not None:
            stmt = stmt.where(ReviewThreadRow.revision < before)
        if anchor_kind is not None:
            stmt = stmt.where(ReviewThreadRow.anchor_kind == anchor_kind)
        if resolved is not None:
            stmt = stmt.where(ReviewThreadRow.resolved.is_(resolved))
        stmt = stmt.order_by(ReviewThreadRow.revision, ReviewThreadRow.updated)
        return [Thread.model_validate(r.document) for r in self.session.scalars(stmt)]

    def open_thread_count(self, project_id: str, revision: int) -> int:
        return int(self._rows(_OPEN_THREADS, project_id=project_id, revision=revision)[0][0])

    def save_thread(self, thread: Thread) -> None:
        row = self.session.get(ReviewThreadRow, thread.id)
        if row is None:
            row = ReviewThreadRow(id=thread.id, project_id=thread.project_id)
            self.session.add(row)
        row.revision = thread.revision
        row.anchor_kind = thread.anchor.kind.value
        row.check_kind = thread.anchor.check_kind
        row.check_name = thread.anchor.check_name
        row.identity = thread.anchor.identity
        row.resolved = thread.resolved
        row.updated = thread.updated
        row.document = thread.model_dump(mode="json", by_alias=True)
        self.session.flush()

    def verdicts(self, project_id: str, revision: int) -> list[Verdict]:
        rows = self._rows(_VERDICTS, project_id=project_id, revision=revision)
        return [Verdict.model_validate(r.document) for r in rows]

    def save_verdict(self, verdict: Verdict) -> None:
        key = (verdict.project_id, verdict.revision, verdict.reviewer)
        row = self.session.get(ReviewVerdictRow, key)
        if row is None:
            row = ReviewVerdictRow(
                project_id=verdict.project_id, revision=verdict.revision, reviewer=verdict.reviewer
            )
            self.session.add(row)
        row.verdict = verdict.verdict.value
        row.created = verdict.created
        row.document = verdict.model_dump(mode="json", by_alias=True)
        self.session.flush()

    # -- outbox ----------------------------------------------------------------------------
    def add_event(self, event: Event) -> None:
        self.add_message(event.nats_subject, event.to_json().decode(), event.id)

    def add_message(self, subject: str, payload: str, msg_id: str) -> None:
        """Any message for the relay to publish after commit (e.g. a re-run's job)."""
        self.session.add(
            OutboxRow(id=msg_id, subject=subject, payload=payload, created=utcnow(), attempts=0)
        )

    def add_event_once(self, event: Event) -> bool:
        """`add_event`, unless a message with the event's id is in the outbox already (False):
        also when another process adds it at the same moment (no unique-key error then)."""
        insert = (
            postgresql_insert
            if self.session.get_bind().dialect.name == "postgresql"
            else sqlite_insert
        )
        stmt = (
            insert(OutboxRow.__table__)
            .values(
                id=event.id,
                subject=event.nats_subject,
                payload=event.to_json().decode(),
                created=utcnow(),
                attempts=0,
            )
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(OutboxRow.__table__.c.seq)  # no row when it did nothing
        )
        self.session.flush()
        return self.session.connection().execute(stmt).first() is not None

    def has_message(self, msg_id: str) -> bool:
        return self.session.scalar(select(OutboxRow.seq).where(OutboxRow.id == msg_id)) is not None

    def pending_events(self, limit: int = 100) -> list[OutboxMessage]:
        """Unpublished rows in commit order, except those NATS refused MAX_REJECTIONS times."""
        stmt = (
            select(OutboxRow)
            .where(OutboxRow.published_at.is_(None), OutboxRow.attempts < MAX_REJECTIONS)
            .order_by(OutboxRow.seq)
            .limit(limit)
        )
        return [OutboxMessage(r.id, r.subject, r.payload) for r in self.session.scalars(stmt)]

    def mark_published(self, ids: list[str]) -> None:
        """JetStream acknowledged these messages: the relay will not publish them again."""
        if not ids:
            return
        self.session.execute(
            update(OutboxRow)
            .where(OutboxRow.id.in_(ids))
            .values(published_at=utcnow(), attempts=OutboxRow.attempts + 1)
        )

    def note_failure(self, msg_id: str, error: str, *, counts_as_attempt: bool) -> None:
        """Keep why publishing a message failed; an attempt that counts brings it closer to being
        set aside (MAX_REJECTIONS)."""
        attempts = OutboxRow.attempts + 1 if counts_as_attempt else OutboxRow.attempts
        self.session.execute(
            update(OutboxRow)
            .where(OutboxRow.id == msg_id)
            .values(attempts=attempts, last_error=error)
        )

    def pending_count(self) -> int:
        return (
            self.session.scalar(select(func.count()).where(OutboxRow.published_at.is_(None))) or 0
        )

    # -- reindex ---------------------------------------------------------------------------
    def clear(self) -> None:
        """Empty every index table except the outbox (events not yet published stay)."""
        for table in (
            ReviewThreadRow,
            ReviewVerdictRow,
            RevisionFileRow,
            RevisionRow,
            MemberRow,
            ProjectTopicRow,
            ProjectRow,
        ):
            self.session.execute(delete(table))
        self.session.execute(delete(SessionRow))
        self.session.execute(delete(TokenRow))
        self.session.execute(delete(UserRow))
