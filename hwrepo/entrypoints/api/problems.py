"""RFC 9457 problem details for every error the API returns."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from hwrepo.adapters.archives import ArchiveRejected
from hwrepo.domain import errors
from hwrepo.domain.paths import UnsafePath
from hwrepo.entrypoints.api.templating import page_context, templates, wants_html

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"

_STATUS: dict[type[errors.HwrepoError], int] = {
    errors.NotFound: 404,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.Conflict: 409,
    errors.Invalid: 422,
    errors.TooLarge: 413,
    errors.ServiceUnavailable: 503,
}


def problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    request: Request | None = None,
    **extra: Any,
) -> Response:
    """The error as problem+json, or as an HTML page for a browser (Accept: text/html)."""
    if request is not None and wants_html(request):
        return error_page(request, status, detail, title or HTTPStatus(status).phrase)
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if request is not None:
        body["instance"] = request.url.path
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = {"WWW-Authenticate": 'Bearer realm="hwrepo"'} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": "5"}
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def error_page(request: Request, status: int, detail: str, title: str) -> Response:
    headers = {"Retry-After": "5"} if status == 503 else None
    return templates.TemplateResponse(
        request,
        "error.html",
        page_context(request, status=status, title=title, detail=detail),
        status_code=status,
        headers=headers,
    )


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if p not in {"body", "query", "path", "header"})


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details: what went wrong, in words for a person",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "field": {"type": "string"},
        "entry": {"type": "string"},
        "archive": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
_PROBLEM_RESPONSE = {
    "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


def document_problems(app: FastAPI) -> None:
    """Say in the OpenAPI document what every error really is: problem+json, for the 422 of
    validation (FastAPI documents its own shape, which this API never sends) and for any other
    status an operation may answer (401, 403, 404, 409, 413, 503...)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = PROBLEM_SCHEMA
        for operations in spec.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if "422" in responses:
                    responses["422"] = {"description": "Invalid request", **_PROBLEM_RESPONSE}
                responses["default"] = {"description": "An error", **_PROBLEM_RESPONSE}
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    document_problems(app)

    @app.exception_handler(errors.HwrepoError)
    async def _domain(request: Request, exc: errors.HwrepoError) -> Response:
        status = next((s for cls, s in _STATUS.items() if isinstance(exc, cls)), 400)
        if status == 503:
            log.warning("%s %s: %s", request.method, request.url.path, exc.detail)
        return problem(status, exc.detail, title=exc.title, request=request, **exc.extra)

    @app.exception_handler(ArchiveRejected)
    async def _archive(request: Request, exc: ArchiveRejected) -> Response:
        return problem(
            422,
            str(exc),
            title="Upload rejected",
            request=request,
            entry=exc.entry,
            archive=exc.archive,
        )

    @app.exception_handler(UnsafePath)
    async def _path(request: Request, exc: UnsafePath) -> Response:
        return problem(
            422, f"{exc.path!r}: {exc.reason}", title="Unsafe path", request=request, entry=exc.path
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            {"field": _location(tuple(e.get("loc", ()))), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        detail = "; ".join(
            f"{p['field']}: {p['message']}" if p["field"] else p["message"] for p in problems
        )
        return problem(422, detail, title="Invalid request", request=request, errors=problems)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # Whatever escaped the handlers above: a problem+json 500 too, never a text/plain page,
        # and the traceback in the log (the text of an unexpected error stays there).
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return problem(
            500,
            "the server failed while answering this request; the error is in its log",
            title="Internal server error",
            request=request,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"there is nothing at {request.url.path}"
        return problem(exc.status_code, detail, request=request)
