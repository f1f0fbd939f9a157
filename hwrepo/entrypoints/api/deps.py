"""Request dependencies: the backends of this process and the calling user."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from hwrepo.domain.errors import Forbidden, Unauthenticated
from hwrepo.domain.model import MAX_OFFSET, MAX_PAGE, User
from hwrepo.service_layer import readcache, users
from hwrepo.service_layer.backends import Backends


def get_backends(request: Request) -> Backends:
    return request.app.state.backends  # type: ignore[no-any-return]


async def index_generation(request: Request, backends: Backends) -> int:
    """The index's generation as this request first saw it (read once, before its data)."""
    if "generation" not in request.state._state:
        if backends.database.local:  # a file read of microseconds: cheaper than a thread hop
            request.state.generation = readcache.generation(backends)
        else:
            request.state.generation = await run_in_threadpool(readcache.generation, backends)
    return request.state.generation  # type: ignore[no-any-return]


SESSION_COOKIE = "hwrepo_session"
CSRF_COOKIE = "hwrepo_csrf"  # signed-out forms (sign in, register): a double-submit token
CSRF_HEADER = "x-csrf-token"


async def signed_in(request: Request, backends: Backends) -> users.SignedIn | None:
    """The browser's session (its cookie), looked up once per request."""
    if "signed_in" not in request.state._state:
        cookie = request.cookies.get(SESSION_COOKIE, "")
        found = await run_in_threadpool(users.session_user, backends, cookie) if cookie else None
        request.state.signed_in = found
    return request.state.signed_in  # type: ignore[no-any-return]


def csrf_ok(request: Request, sent: str | None, session: users.SignedIn | None) -> bool:
    """Whether a change a browser asks for carries this browser's CSRF token."""
    expected = session.session.csrf if session else request.cookies.get(CSRF_COOKIE, "")
    return bool(sent and expected) and secrets.compare_digest(str(sent), expected)


async def current_user(
    request: Request, backends: Annotated[Backends, Depends(get_backends)]
) -> User | None:
    """The token's user, else the signed-in browser's (a change then needs the session's CSRF
    token in `X-CSRF-Token`), or None for an anonymous request. A token that is sent but wrong
    is an error, never silently anonymous."""
    header = request.headers.get("authorization")
    if not header:
        session = await signed_in(request, backends)
        if session is None:
            return None
        if request.method not in SAFE_METHODS and not csrf_ok(
            request, request.headers.get(CSRF_HEADER), session
        ):
            raise Forbidden(
                "a change asked for with a session cookie needs the page's CSRF token "
                "(X-CSRF-Token); API clients send an API token instead"
            )
        return session.user
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer TOKEN'")
    generation = await index_generation(request, backends)
    credentials = users.kept_credentials(backends, token.strip(), generation)
    if credentials is None:
        credentials = await run_in_threadpool(
            users.authenticate, backends, token.strip(), generation
        )
    request.state.token = credentials.token
    scope = credentials.token.scope
    if request.method not in SAFE_METHODS:
        if scope == "read":
            raise Forbidden(
                f"the API token {credentials.token.name!r} is read-only: it cannot change "
                "anything; make a token with scope 'write'"
            )
        if scope == "checks" and "/checks/external" not in request.url.path:
            raise Forbidden(
                f"the API token {credentials.token.name!r} may only report external checks"
            )
    return credentials.user


SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


BackendsDep = Annotated[Backends, Depends(get_backends)]
UserDep = Annotated[User | None, Depends(current_user)]


class KeptRead:
    """A GET whose JSON answer depends only on the index, the caller and the URL: given again
    from the backends' ReadCache while the index's generation is the one this request read
    before anything else (see service_layer/readcache.py).

        if (kept := await read.kept()) is not None:
            return kept
        ... compute `out` ...
        return read.keep(out)
    """

    def __init__(self, request: Request, backends: BackendsDep, user: UserDep) -> None:
        self.request = request
        self.backends = backends
        viewer = user.id if user else None
        self.key = ("answer", request.url.path, request.url.query, viewer)
        self.generation: int | None = None

    async def kept(self) -> Response | None:
        self.generation = await index_generation(self.request, self.backends)
        body = self.backends.read_cache.get(self.key, self.generation)
        return None if body is None else Response(body, media_type="application/json")

    def keep(self, answer: BaseModel) -> Response:
        body = answer.model_dump_json(by_alias=True).encode()
        if self.generation is not None:
            self.backends.read_cache.put(self.key, self.generation, body, len(body))
        return Response(body, media_type="application/json")

    @staticmethod
    def answer(answer: BaseModel) -> Response:
        """The same answer, not kept (it depends on more than the index)."""
        return Response(
            answer.model_dump_json(by_alias=True).encode(), media_type="application/json"
        )


KeptReadDep = Annotated[KeptRead, Depends()]

# Every number of a path or query string is bounded here, so that none reaches the index (or a
# slice) out of range: what is out of range is a 422; a revision number beyond any that can exist
# is a 404 of the service layer.
RevisionNumber = Annotated[int, Path(ge=1, description="the revision's number (1, 2, ...)")]
Page = Annotated[int, Query(ge=1, le=MAX_PAGE)]
ByteOffset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


# Headers for bytes that come from a design (uploaded files, tool outputs such as SVG renders):
# a browser may show them, but never runs their scripts with this site's origin.
UNTRUSTED_CONTENT = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "sandbox",
}


def download(
    media_type: str, description: str, *, redirects: bool = False, revalidates: bool = False
) -> dict[str, Any]:
    """Route arguments documenting a download: its bytes and media type (`*/*`: the stored
    file's own), a 307 to a presigned S3 URL (`?via=presigned`), a 304 for a matching ETag."""
    responses: dict[int | str, dict[str, Any]] = {
        200: {
            "description": description,
            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
        }
    }
    if redirects:
        responses[307] = {"description": "with ?via=presigned: to a short-lived S3 URL"}
    if revalidates:
        responses[304] = {"description": "If-None-Match named the file's ETag"}
    return {"response_class": Response, "response_model": None, "responses": responses}
