"""Server-rendered pages: the catalogue and a project's revisions and files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from hwrepo.adapters.db.index import ProjectQuery
from hwrepo.domain.model import ProjectKind
from hwrepo.entrypoints.api.deps import BackendsDep, Page
from hwrepo.service_layer import checks, projects, revisions

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent.parent / "templates")


@router.get("/", response_class=HTMLResponse)
async def catalogue(
    request: Request,
    backends: BackendsDep,
    kind: Literal["hardware", "software"] | None = None,
    topic: str | None = None,
    q: str | None = None,
    page: Page = 1,
) -> HTMLResponse:
    query = ProjectQuery(
        viewer=None, kind=ProjectKind(kind) if kind else None, topic=topic, text=q, page=page
    )
    items, total = await run_in_threadpool(projects.search_projects, backends, query)
    return templates.TemplateResponse(
        request,
        "catalogue.html",
        {
            "projects": items,
            "total": total,
            "kind": kind,
            "topic": topic,
            "q": q or "",
            "page": page,
        },
    )


@router.get("/{owner}/{name}", response_class=HTMLResponse)
async def project_page(
    request: Request,
    owner: str,
    name: str,
    backends: BackendsDep,
    revision: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    project, items, _ = await run_in_threadpool(
        revisions.list_revisions, backends, None, owner, name, 1, 50
    )
    shown, state, found = None, None, []
    number = revision or (items[0].revision.number if items else None)
    if number is not None:
        listed = await run_in_threadpool(checks.list_checks, backends, None, owner, name, number)
        shown, state, found = listed.revision, listed.state, listed.checks
    return templates.TemplateResponse(
        request,
        "project.html",
        {
            "project": project,
            "revisions": items,
            "shown": shown,
            "state": state,
            "checks": found,
        },
    )
