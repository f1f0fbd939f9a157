"""Users, API tokens, passwords and browser sessions. Tokens and session cookies are random
256-bit secrets, kept only as SHA-256 digests; passwords only as argon2 hashes."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from hwrepo.adapters.objectstore import user_key
from hwrepo.domain.documents import user_document
from hwrepo.domain.errors import Conflict, Invalid, NotFound, Unauthenticated
from hwrepo.domain.model import TOKEN_SCOPES, Token, User, WebSession, check_name, utcnow
from hwrepo.service_layer.backends import Backends

TOKEN_PREFIX = "hwr_"
MIN_PASSWORD = 10
_hasher = PasswordHasher()


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(backends: Backends, name: str, *, admin: bool = False) -> User:
    check_name(name, "User name")
    with backends.writing() as index:
        if index.user(name) is not None:
            raise Conflict(f"a user named {name!r} already exists")
        user = User(id=str(uuid.uuid4()), name=name, admin=admin, created=utcnow())
        index.save_user(user)
        # The bucket first: if this fails the transaction rolls back and nothing is half-made.
        backends.store.put_json(user_key(name), user_document(user))
    return user


def ensure_user(backends: Backends, name: str, *, admin: bool = False) -> User:
    with backends.reading() as index:
        user = index.user(name)
    return user or create_user(backends, name, admin=admin)


def create_token(
    backends: Backends,
    user_name: str,
    token_name: str = "default",
    *,
    scope: str = "write",
    expires: datetime | None = None,
) -> str:
    """Make a new API token for a user and return it; it is shown once and stored hashed."""
    return issue_token(backends, user_name, token_name, scope=scope, expires=expires)[0]


def issue_token(
    backends: Backends,
    user_name: str,
    token_name: str = "default",
    *,
    scope: str = "write",
    expires: datetime | None = None,
) -> tuple[str, Token]:
    """A new token: the secret (shown once) and its record (stored with its digest only)."""
    if scope not in TOKEN_SCOPES:
        raise Invalid(f"a token's scope is one of {', '.join(TOKEN_SCOPES)}, not {scope!r}")
    if not token_name.strip() or len(token_name) > 100:
        raise Invalid("a token's name is 1 to 100 characters")
    if expires is not None and expires <= utcnow():
        raise Invalid("a token's expiry must lie in the future")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with backends.writing() as index:
        user = index.user(user_name)
        if user is None:
            raise NotFound(f"there is no user named {user_name!r}")
        token = Token(
            id=str(uuid.uuid4()),
            name=token_name.strip(),
            sha256=token_digest(secret),
            created=utcnow(),
            scope=scope,
            expires=expires,
        )
        user.tokens.append(token)
        index.save_user(user)
        backends.store.put_json(user_key(user.name), user_document(user))
    return secret, token


def tokens_of(backends: Backends, user: User) -> list[Token]:
    with backends.reading() as index:
        found = index.user(user.name)
    return [t for t in (found.tokens if found else []) if t.revoked is None]


def revoke_token(backends: Backends, user: User, token_id: str) -> Token:
    """Revoke one of the user's own tokens (kept, marked revoked, so that it is refused with
    a reason)."""
    with backends.writing() as index:
        found = index.user(user.name)
        token = next((t for t in found.tokens if t.id == token_id), None) if found else None
        if found is None or token is None or token.revoked is not None:
            raise NotFound(f"you have no token with id {token_id!r}")
        token.revoked = utcnow()
        index.save_user(found)
        backends.store.put_json(user_key(found.name), user_document(found))
    return token


@dataclass(frozen=True)
class Credentials:
    user: User
    token: Token


def authenticate(backends: Backends, token: str, generation: int | None = None) -> Credentials:
    """The user and token a secret names; Unauthenticated saying why when it names none, or
    one that expired or was revoked. With the index's `generation` (read first), what the index
    said of the token is kept for requests at that same generation (a revocation is a write)."""
    kept = kept_credentials(backends, token, generation)
    if kept is not None:
        return kept
    digest = token_digest(token)
    with backends.reading() as index:
        credentials = index.credentials(digest)
    if credentials is not None and generation is not None:
        backends.read_cache.put(("credentials", digest), generation, credentials, 1024)
    return _valid(credentials)


def kept_credentials(backends: Backends, token: str, generation: int | None) -> Credentials | None:
    """`authenticate` from what is kept for this generation alone (no database), or None."""
    if not token.startswith(TOKEN_PREFIX):
        raise Unauthenticated("the API token is not valid (hwrepo tokens start with 'hwr_')")
    if generation is None:
        return None
    kept = backends.read_cache.get(("credentials", token_digest(token)), generation)
    return None if kept is None else _valid(kept)


def _valid(credentials: tuple[User, Token] | None) -> Credentials:
    if credentials is None:
        raise Unauthenticated("the API token is not valid (unknown or deleted)")
    user, found = credentials
    if (problem := found.problem(utcnow())) is not None:
        raise Unauthenticated(problem)
    return Credentials(user, found)


# -- passwords and sessions (the pages) ------------------------------------------------------
def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"a password has at least {MIN_PASSWORD} characters", field="password")
    if len(password) > 1000:
        raise Invalid("a password has at most 1000 characters", field="password")


def set_password(backends: Backends, user_name: str, password: str) -> User:
    """Set a user's password (an argon2 hash, kept with the user in the bucket); signs the user
    out of every browser."""
    _check_password(password)
    with backends.writing() as index:
        user = index.user(user_name)
        if user is None:
            raise NotFound(f"there is no user named {user_name!r}")
        user.password_hash = _hasher.hash(password)
        index.save_user(user)
        index.delete_sessions_of(user.name)
        backends.store.put_json(user_key(user.name), user_document(user))
    return user


def register(backends: Backends, name: str, password: str) -> User:
    """Self-registration (when the site allows it): a new user with a password."""
    _check_password(password)
    create_user(backends, name)
    return set_password(backends, name, password)


def verify_password(backends: Backends, name: str, password: str) -> User:
    """The user when the password is theirs; one message for every failure, so that a wrong
    password does not tell whether the user exists."""
    with backends.reading() as index:
        user = index.user(name)
    wrong = Unauthenticated("the user name or the password is wrong")
    if user is None or not user.password_hash:
        _hasher.hash(password)  # the same work as a real check: no timing difference
        raise wrong
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError) as exc:
        raise wrong from exc
    return user


@dataclass(frozen=True)
class SignedIn:
    user: User
    session: WebSession
    cookie: str = ""  # the secret, only when the session was just made


def start_session(backends: Backends, user: User, *, days: int) -> SignedIn:
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    session = WebSession(
        id=str(uuid.uuid4()),
        sha256=token_digest(secret),
        user=user.name,
        csrf=secrets.token_urlsafe(32),
        created=now,
        expires=now + timedelta(days=days),
    )
    with backends.writing() as index:
        index.add_session(session)
    return SignedIn(user, session, secret)


def session_user(backends: Backends, cookie: str) -> SignedIn | None:
    """The signed-in user a session cookie names, or None (unknown, expired, signed out)."""
    if not cookie or len(cookie) > 200:
        return None
    with backends.reading() as index:
        found = index.session_by_digest(token_digest(cookie))
    if found is None:
        return None
    session, user = found
    return SignedIn(user, session)


def end_session(backends: Backends, cookie: str) -> None:
    with backends.writing() as index:
        index.delete_session(token_digest(cookie))
