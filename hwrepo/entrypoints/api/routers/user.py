"""/api/v1/user: who the token belongs to, and the user's own API tokens."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from hwrepo.domain.errors import Unauthenticated
from hwrepo.domain.model import Token, User, utcnow
from hwrepo.entrypoints.api.deps import BackendsDep, UserDep
from hwrepo.service_layer import users

router = APIRouter(prefix="/api/v1/user", tags=["user"])


class UserOut(BaseModel):
    name: str
    admin: bool
    created: datetime


class TokenOut(BaseModel):
    id: str
    name: str
    scope: str
    created: datetime
    expires: datetime | None

    @classmethod
    def of(cls, t: Token) -> TokenOut:
        return cls(id=t.id, name=t.name, scope=t.scope, created=t.created, expires=t.expires)


class NewToken(TokenOut):
    token: str = Field(description="the secret: shown this once, stored only as its digest")


class TokenIn(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    scope: Literal["read", "write", "checks"] = "write"
    expires_in_days: Annotated[int | None, Field(ge=1, le=3650)] = None


def _signed_in(user: User | None) -> User:
    if user is None:
        raise Unauthenticated("sign in: this needs an API token (Authorization: Bearer TOKEN)")
    return user


@router.get("", response_model=UserOut)
async def who_am_i(user: UserDep) -> UserOut:
    me = _signed_in(user)
    return UserOut(name=me.name, admin=me.admin, created=me.created)


@router.get("/tokens", response_model=list[TokenOut])
async def list_tokens(backends: BackendsDep, user: UserDep) -> list[TokenOut]:
    mine = await run_in_threadpool(users.tokens_of, backends, _signed_in(user))
    return [TokenOut.of(t) for t in mine]


@router.post("/tokens", status_code=201, response_model=NewToken)
async def create_token(body: TokenIn, backends: BackendsDep, user: UserDep) -> NewToken:
    me = _signed_in(user)
    expires = utcnow() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    secret, token = await run_in_threadpool(
        lambda: users.issue_token(backends, me.name, body.name, scope=body.scope, expires=expires)
    )
    return NewToken(**TokenOut.of(token).model_dump(), token=secret)


@router.delete("/tokens/{token_id}", status_code=204)
async def revoke_token(token_id: str, backends: BackendsDep, user: UserDep) -> Response:
    await run_in_threadpool(users.revoke_token, backends, _signed_in(user), token_id)
    return Response(status_code=204)
