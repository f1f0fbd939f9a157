"""/api/v1/projects: the catalogue and one project's metadata and members."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from hwrepo.adapters.db.index import ProjectQuery
from hwrepo.domain.model import ProjectKind
from hwrepo.entrypoints.api.deps import BackendsDep, KeptReadDep, Page, UserDep
from hwrepo.entrypoints.api.schemas import (
    LinkOut,
    MemberIn,
    ProjectIn,
    ProjectOut,
    ProjectPage,
    ProjectPatch,
    WaiverIn,
)
from hwrepo.service_layer import projects

router = APIRouter(prefix="/api/v1/projects", tags=["projects"])


@router.post("", status_code=201, response_model=ProjectOut)
async def create_project(
    body: ProjectIn, backends: BackendsDep, user: UserDep, response: Response
) -> ProjectOut:
    project = await run_in_threadpool(
        lambda: projects.create_project(
            backends,
            user,
            **body.model_dump(exclude={"links"}),
            links=[link.model_dump() for link in body.links],
        )
    )
    response.headers["Location"] = f"/api/v1/projects/{project.full_name}"
    return ProjectOut.of(project)


@router.get("", response_model=ProjectPage)
async def list_projects(
    backends: BackendsDep,
    user: UserDep,
    read: KeptReadDep,
    kind: Literal["hardware", "software"] | None = None,
    topic: str | None = None,
    owner: str | None = None,
    q: Annotated[
        str | None, Query(max_length=200, description="text in name or description")
    ] = None,
    page: Page = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    if (kept := await read.kept()) is not None:
        return kept
    query = ProjectQuery(
        viewer=user,
        kind=ProjectKind(kind) if kind else None,
        topic=topic,
        owner=owner,
        text=q,
        page=page,
        per_page=per_page,
    )
    items, total = await run_in_threadpool(projects.search_projects, backends, query)
    return read.keep(
        ProjectPage(
            items=[ProjectOut.of(p) for p in items], page=page, per_page=per_page, total=total
        )
    )


@router.get("/{owner}/{name}", response_model=ProjectOut)
async def get_project(
    owner: str, name: str, backends: BackendsDep, user: UserDep, read: KeptReadDep
) -> Response:
    if (kept := await read.kept()) is not None:
        return kept
    project = await run_in_threadpool(projects.get_project, backends, user, owner, name)
    out = ProjectOut.of(project)
    links = await run_in_threadpool(projects.linked_from, backends, user, project)
    out.linked_from = [LinkOut(project=ln.project, relation=ln.relation) for ln in links]
    return read.keep(out)


@router.patch("/{owner}/{name}", response_model=ProjectOut)
async def update_project(
    owner: str, name: str, body: ProjectPatch, backends: BackendsDep, user: UserDep
) -> ProjectOut:
    changes = body.model_dump(exclude_unset=True)
    if "links" in changes and body.links is not None:
        changes["links"] = [link.model_dump() for link in body.links]
    changes = {k: v for k, v in changes.items() if v is not None}
    project = await run_in_threadpool(projects.update_project, backends, user, owner, name, changes)
    return ProjectOut.of(project)


@router.delete("/{owner}/{name}", status_code=204)
async def delete_project(owner: str, name: str, backends: BackendsDep, user: UserDep) -> Response:
    await run_in_threadpool(projects.delete_project, backends, user, owner, name)
    return Response(status_code=204)


@router.put("/{owner}/{name}/members/{member}", response_model=ProjectOut)
async def set_member(
    owner: str, name: str, member: str, body: MemberIn, backends: BackendsDep, user: UserDep
) -> ProjectOut:
    project = await run_in_threadpool(
        projects.set_member, backends, user, owner, name, member, body.role
    )
    return ProjectOut.of(project)


@router.delete("/{owner}/{name}/members/{member}", response_model=ProjectOut)
async def remove_member(
    owner: str, name: str, member: str, backends: BackendsDep, user: UserDep
) -> ProjectOut:
    project = await run_in_threadpool(projects.remove_member, backends, user, owner, name, member)
    return ProjectOut.of(project)


@router.get("/{owner}/{name}/waivers")
async def list_waivers(
    owner: str, name: str, backends: BackendsDep, user: UserDep
) -> list[dict[str, Any]]:
    project = await run_in_threadpool(projects.get_project, backends, user, owner, name)
    return project.waivers


@router.post("/{owner}/{name}/waivers", status_code=201)
async def add_waiver(
    owner: str, name: str, body: WaiverIn, backends: BackendsDep, user: UserDep
) -> dict[str, Any]:
    return await run_in_threadpool(
        lambda: projects.add_waiver(backends, user, owner, name, **body.model_dump())
    )


@router.delete("/{owner}/{name}/waivers/{waiver_id}", status_code=204)
async def remove_waiver(
    owner: str, name: str, waiver_id: str, backends: BackendsDep, user: UserDep
) -> Response:
    await run_in_threadpool(projects.remove_waiver, backends, user, owner, name, waiver_id)
    return Response(status_code=204)
