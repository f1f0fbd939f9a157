"""Server-rendered pages for people: the catalogue, projects, revisions and their files, check
pages per kind, comparisons, review threads and verdicts, the upload page, signing in and API
tokens. Thin like every router: the
service layer decides what is visible; what is interactive talks to /api/v1 from the page."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from hwrepo.adapters.db.index import ProjectQuery
from hwrepo.domain.errors import Forbidden, HwrepoError, Invalid, Unauthenticated
from hwrepo.domain.model import MAX_REVISION, ProjectKind, Role, User, utcnow
from hwrepo.domain.reviews import Anchor
from hwrepo.entrypoints.api.check_pages import comparison_template, page_of, points_check
from hwrepo.entrypoints.api.deps import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    BackendsDep,
    Page,
    RevisionNumber,
    UserDep,
    csrf_ok,
    signed_in,
)
from hwrepo.entrypoints.api.routers.compare import parse_spec
from hwrepo.entrypoints.api.templating import page_context, templates
from hwrepo.service_layer import checks, projects, reviews, users, views

router = APIRouter(include_in_schema=False)

# Pages run only the site's own scripts; designs' files and renders are images or downloads.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; script-src 'self'; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    response = templates.TemplateResponse(
        request, template, page_context(request, **context), status_code=status
    )
    response.headers.update(PAGE_HEADERS)
    return response


def _local(target: str | None) -> str:
    """Where to go after signing in: a path of this site only."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def _form(request: Request, backends: BackendsDep) -> dict[str, str]:
    """A posted form's fields, after its CSRF token was checked."""
    form = await request.form(max_files=0, max_fields=20)
    fields = {k: str(v) for k, v in form.items()}
    if not csrf_ok(request, fields.get("csrf"), await signed_in(request, backends)):
        raise Forbidden("the form is out of date or came from another site: reload it and retry")
    return fields


# -- the catalogue -----------------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
async def catalogue(
    request: Request,
    backends: BackendsDep,
    user: UserDep,
    kind: Literal["hardware", "software", ""] = "",
    topic: Annotated[str, Query(max_length=50)] = "",
    licence: Annotated[str, Query(max_length=200)] = "",
    q: Annotated[str, Query(max_length=200)] = "",
    page: Page = 1,
) -> HTMLResponse:
    query = ProjectQuery(
        viewer=user,
        kind=ProjectKind(kind) if kind else None,
        topic=topic or None,
        licence=licence or None,
        text=q or None,
        page=page,
    )
    cards, total, licences = await run_in_threadpool(views.catalogue, backends, query)
    return render(
        request,
        "catalogue.html",
        cards=cards,
        total=total,
        licences=licences,
        filters={"kind": kind, "topic": topic, "licence": licence, "q": q},
        page=page,
        per_page=query.per_page,
    )


# -- signing in --------------------------------------------------------------------------------
def _secure(request: Request) -> bool:
    url = request.app.state.backends.settings.public_url or ""
    return url.startswith("https://") or request.url.scheme == "https"


def _signed_out_form(request: Request, template: str, status: int = 200, **ctx: Any) -> Response:
    """A form shown to a signed-out browser, with its double-submit CSRF token (a cookie the
    form must echo: another site can send the cookie but cannot read it)."""
    token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = render(request, template, status, csrf=token, **ctx)
    if not request.cookies.get(CSRF_COOKIE):
        response.set_cookie(
            CSRF_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request), path="/"
        )
    return response


def _start_session(request: Request, backends: BackendsDep, user: User, to: str) -> Response:
    days = backends.settings.session_days
    made = users.start_session(backends, user, days=days)
    response = RedirectResponse(_local(to), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        made.cookie,
        max_age=int(timedelta(days=days).total_seconds()),
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path="/",
    )
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, backends: BackendsDep, next: str = "/") -> Response:
    if await signed_in(request, backends):
        return RedirectResponse(_local(next), status_code=303)
    return _signed_out_form(request, "login.html", next=_local(next), error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, backends: BackendsDep) -> Response:
    fields = await _form(request, backends)
    to = _local(fields.get("next"))
    try:
        user = await run_in_threadpool(
            users.verify_password, backends, fields.get("user", ""), fields.get("password", "")
        )
    except Unauthenticated as exc:
        return _signed_out_form(request, "login.html", 401, next=to, error=exc.detail)
    return await run_in_threadpool(_start_session, request, backends, user, to)


@router.get("/register", response_class=HTMLResponse)
async def register_page(request: Request, backends: BackendsDep) -> Response:
    if not backends.settings.registration:
        raise Forbidden("this site does not take registrations: an administrator makes accounts")
    if await signed_in(request, backends):
        return RedirectResponse("/", status_code=303)
    return _signed_out_form(request, "register.html", error=None)


@router.post("/register", response_class=HTMLResponse)
async def register(request: Request, backends: BackendsDep) -> Response:
    if not backends.settings.registration:
        raise Forbidden("this site does not take registrations: an administrator makes accounts")
    fields = await _form(request, backends)
    if fields.get("password") != fields.get("password2"):
        return _signed_out_form(request, "register.html", 422, error="the passwords differ")
    try:
        user = await run_in_threadpool(
            users.register, backends, fields.get("user", ""), fields.get("password", "")
        )
    except HwrepoError as exc:
        return _signed_out_form(request, "register.html", 422, error=exc.detail)
    return await run_in_threadpool(_start_session, request, backends, user, "/")


@router.post("/logout")
async def logout(request: Request, backends: BackendsDep) -> Response:
    await _form(request, backends)
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if cookie:
        await run_in_threadpool(users.end_session, backends, cookie)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def _me(request: Request, backends: BackendsDep) -> User:
    """The signed-in user of a form's post (its CSRF token is checked by `_form`)."""
    session = await signed_in(request, backends)
    if session is None:
        raise Unauthenticated("sign in first")
    return session.user


@router.get("/settings/tokens", response_class=HTMLResponse)
async def tokens_page(request: Request, backends: BackendsDep, user: UserDep) -> Response:
    if user is None:
        return RedirectResponse("/login?next=/settings/tokens", status_code=303)
    mine = await run_in_threadpool(users.tokens_of, backends, user)
    return render(request, "tokens.html", tokens=mine, created=None, now=utcnow())


@router.post("/settings/tokens", response_class=HTMLResponse)
async def create_token(request: Request, backends: BackendsDep) -> Response:
    me = await _me(request, backends)
    fields = await _form(request, backends)
    days = fields.get("expires_in_days", "").strip()
    expires = utcnow() + timedelta(days=int(days)) if days.isdigit() and int(days) > 0 else None
    secret, token = await run_in_threadpool(
        lambda: users.issue_token(
            backends,
            me.name,
            fields.get("name", ""),
            scope=fields.get("scope", "write"),
            expires=expires,
        )
    )
    mine = await run_in_threadpool(users.tokens_of, backends, me)
    return render(request, "tokens.html", 201, tokens=mine, created=(token, secret), now=utcnow())


@router.post("/settings/tokens/{token_id}/revoke")
async def revoke_token(token_id: str, request: Request, backends: BackendsDep) -> Response:
    me = await _me(request, backends)
    await _form(request, backends)
    await run_in_threadpool(users.revoke_token, backends, me, token_id)
    return RedirectResponse("/settings/tokens", status_code=303)


# -- upload ------------------------------------------------------------------------------------
@router.get("/upload", response_class=HTMLResponse)
async def upload_page(
    request: Request,
    backends: BackendsDep,
    user: UserDep,
    project: Annotated[str, Query(max_length=201)] = "",
) -> Response:
    if user is None:
        target = quote(f"/upload?project={project}" if project else "/upload", safe="")
        return RedirectResponse(f"/login?next={target}", status_code=303)
    query = ProjectQuery(viewer=user, page=1, per_page=1000)
    cards, _, _ = await run_in_threadpool(views.catalogue, backends, query)
    mine = [c.project.full_name for c in cards if c.project.has_role(user, Role.MAINTAINER)]
    return render(request, "upload.html", projects=mine, chosen=project)


# -- a project, its revisions, files and checks ------------------------------------------------
@router.get("/{owner}/{name}", response_class=HTMLResponse)
async def project_page(
    request: Request, owner: str, name: str, backends: BackendsDep, user: UserDep, page: Page = 1
) -> HTMLResponse:
    view = await run_in_threadpool(views.project_view, backends, user, owner, name, page)
    can_upload = view.project.has_role(user, Role.MAINTAINER)
    return render(request, "project.html", view=view, project=view.project, can_upload=can_upload)


@router.get("/{owner}/{name}/revisions/{number}", response_class=HTMLResponse)
async def revision_page(
    request: Request,
    owner: str,
    name: str,
    number: RevisionNumber,
    backends: BackendsDep,
    user: UserDep,
) -> HTMLResponse:
    # before anything is read: review events after it are news to this page (live.js)
    loaded = utcnow()
    found = await run_in_threadpool(checks.list_checks, backends, user, owner, name, number)
    threads = await run_in_threadpool(views.threads_of, backends, user, found.project, number)
    return render(
        request,
        "revision.html",
        loaded=loaded.isoformat(),
        threads=threads,
        points_check=points_check(found.checks),
        project=found.project,
        revision=found.revision,
        state=found.state,
        checks_state=found.checks_state,
        review=found.review,
        planned=found.planned,
        plan_errors=found.errors,
        checks=found.checks,
    )


@router.get("/{owner}/{name}/revisions/{number}/files/{path:path}", response_class=HTMLResponse)
async def file_page(
    request: Request,
    owner: str,
    name: str,
    number: RevisionNumber,
    path: str,
    backends: BackendsDep,
    user: UserDep,
) -> HTMLResponse:
    loaded = utcnow()  # before anything is read, as on the revision's page
    view = await run_in_threadpool(views.file_view, backends, user, owner, name, number, path)
    threads = await run_in_threadpool(views.threads_of, backends, user, view.project, number)
    return render(
        request,
        "file.html",
        loaded=loaded.isoformat(),
        view=view,
        project=view.project,
        revision=view.revision,
        threads=threads,
        at_lines=threads.on_lines(view.entry.path),
    )


@router.get("/{owner}/{name}/revisions/{number}/checks/{check_id}", response_class=HTMLResponse)
async def check_page(
    request: Request,
    owner: str,
    name: str,
    number: RevisionNumber,
    check_id: str,
    backends: BackendsDep,
    user: UserDep,
) -> HTMLResponse:
    project, check = await run_in_threadpool(
        checks.get_check, backends, user, owner, name, number, check_id
    )
    details = await run_in_threadpool(checks.check_details, backends, check)
    shown = page_of(check.kind)
    extra = await run_in_threadpool(shown.context, backends, project, check, details)
    threads = await run_in_threadpool(views.threads_of, backends, user, project, number)
    base = f"/api/v1/projects/{project.full_name}/revisions/{number}/checks/{check.id}"
    return render(
        request,
        shown.template,
        project=project,
        number=number,
        check=check,
        details=details,
        api=base,
        server=str(request.base_url).rstrip("/"),
        threads=threads,
        **extra,
    )


# -- comparisons -------------------------------------------------------------------------------
@router.get("/{owner}/{name}/compare", response_class=HTMLResponse)
async def compare_chosen(
    owner: str,
    name: str,
    a: Annotated[int, Query(ge=1, le=MAX_REVISION)],
    b: Annotated[int, Query(ge=1, le=MAX_REVISION)],
    backends: BackendsDep,
    user: UserDep,
) -> Response:
    """The project page's form (two revisions picked): the comparison's own URL (for those who
    may read the project; for others the same 404 as everywhere)."""
    await run_in_threadpool(projects.get_project, backends, user, owner, name)
    return RedirectResponse(f"/{quote(owner)}/{quote(name)}/compare/{a}...{b}", status_code=303)


@router.get("/{owner}/{name}/compare/{spec}", response_class=HTMLResponse)
async def compare_page(
    request: Request,
    owner: str,
    name: str,
    spec: Annotated[str, Path(max_length=30)],
    backends: BackendsDep,
    user: UserDep,
) -> HTMLResponse:
    a, b = parse_spec(spec)
    view = await run_in_threadpool(views.comparison_view, backends, user, owner, name, a, b)
    spec = f"{view.a.number}...{view.b.number}"
    return render(
        request,
        "compare.html",
        view=view,
        project=view.project,
        doc=view.document,
        threads=view.threads,
        spec=spec,
        api=f"/api/v1/projects/{view.project.full_name}/compare/{spec}",
        entry_template=comparison_template,
    )


# -- review threads and verdicts: the pages' forms ---------------------------------------------
ANCHOR_FIELDS = (
    "kind",
    "path",
    "line_start",
    "line_end",
    "check_kind",
    "check_name",
    "identity",
    "test",
    "x_mm",
    "y_mm",
    "layer",
    "sheet",
)


def _anchor(fields: dict[str, str]) -> Anchor:
    try:
        return Anchor.model_validate({k: fields[k] for k in ANCHOR_FIELDS if fields.get(k)})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        at = f"{where}: " if where else ""
        raise Invalid(f"the thread's anchor: {at}{first['msg']}") from exc


ThreadId = Annotated[str, Path(max_length=36)]


async def _posted(request: Request, backends: BackendsDep) -> tuple[User, dict[str, str]]:
    """The signed-in user and the fields of a review form (its CSRF token checked)."""
    me = await _me(request, backends)
    return me, await _form(request, backends)


def _back(fields: dict[str, str], fallback: str) -> RedirectResponse:
    """Back to the page the form was on (a path of this site only)."""
    return RedirectResponse(_local(fields.get("back") or fallback), status_code=303)


@router.post("/{owner}/{name}/revisions/{number}/threads")
async def new_thread(
    request: Request, owner: str, name: str, number: RevisionNumber, backends: BackendsDep
) -> Response:
    me, fields = await _posted(request, backends)
    anchor = _anchor(fields)
    against = fields.get("compare_with", "")
    compare_with = int(against) if against.isdigit() and 0 < int(against) <= MAX_REVISION else None
    thread = await run_in_threadpool(
        lambda: reviews.create_thread(
            backends,
            me,
            owner,
            name,
            number,
            anchor=anchor,
            body=fields.get("body", ""),
            compare_with=compare_with,
        )
    )
    back = _local(fields.get("back") or f"/{owner}/{name}/revisions/{number}")
    if "#" not in back:
        back += f"#thread-{thread.id}"
    return RedirectResponse(back, status_code=303)


@router.post("/{owner}/{name}/threads/{thread_id}/comments")
async def reply(
    request: Request,
    owner: str,
    name: str,
    thread_id: ThreadId,
    backends: BackendsDep,
) -> Response:
    me, fields = await _posted(request, backends)
    await run_in_threadpool(
        reviews.comment, backends, me, owner, name, thread_id, fields.get("body", "")
    )
    return _back(fields, f"/{owner}/{name}")


@router.post("/{owner}/{name}/threads/{thread_id}/comments/{comment_id}")
async def edit_comment(
    request: Request,
    owner: str,
    name: str,
    thread_id: ThreadId,
    comment_id: ThreadId,
    backends: BackendsDep,
) -> Response:
    me, fields = await _posted(request, backends)
    await run_in_threadpool(
        reviews.edit_comment,
        backends,
        me,
        owner,
        name,
        thread_id,
        comment_id,
        fields.get("body", ""),
    )
    return _back(fields, f"/{owner}/{name}")


@router.post("/{owner}/{name}/threads/{thread_id}/resolved")
async def resolve_thread(
    request: Request,
    owner: str,
    name: str,
    thread_id: ThreadId,
    backends: BackendsDep,
) -> Response:
    me, fields = await _posted(request, backends)
    wanted = fields.get("resolved", "")
    if wanted not in ("true", "false"):
        raise Invalid("resolved is true or false", field="resolved")
    await run_in_threadpool(reviews.resolve, backends, me, owner, name, thread_id, wanted == "true")
    return _back(fields, f"/{owner}/{name}")


@router.post("/{owner}/{name}/revisions/{number}/review")
async def verdict(
    request: Request, owner: str, name: str, number: RevisionNumber, backends: BackendsDep
) -> Response:
    me, fields = await _posted(request, backends)
    await run_in_threadpool(
        reviews.give_verdict,
        backends,
        me,
        owner,
        name,
        number,
        fields.get("verdict", ""),
        fields.get("comment", ""),
    )
    return RedirectResponse(f"/{owner}/{name}/revisions/{number}#review-state", status_code=303)
