"""Users and API tokens. Tokens are random 256-bit secrets, kept only as SHA-256 digests."""

from __future__ import annotations

import hashlib
import secrets
import uuid

from hwrepo.adapters.objectstore import user_key
from hwrepo.domain.documents import user_document
from hwrepo.domain.errors import Conflict, NotFound
from hwrepo.domain.model import Token, User, check_name, utcnow
from hwrepo.service_layer.backends import Backends

TOKEN_PREFIX = "hwr_"


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


def create_token(backends: Backends, user_name: str, token_name: str = "default") -> str:
    """Make a new API token for a user and return it; it is shown once and stored hashed."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with backends.writing() as index:
        user = index.user(user_name)
        if user is None:
            raise NotFound(f"there is no user named {user_name!r}")
        user.tokens.append(
            Token(
                id=str(uuid.uuid4()),
                name=token_name,
                sha256=token_digest(secret),
                created=utcnow(),
            )
        )
        index.save_user(user)
        backends.store.put_json(user_key(user.name), user_document(user))
    return secret


def authenticate(backends: Backends, token: str) -> User | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    with backends.reading() as index:
        return index.user_by_token(token_digest(token))
