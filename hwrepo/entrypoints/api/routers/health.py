"""/healthz (the process answers), /readyz (S3, NATS and the database answer), /metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from hwrepo.domain.errors import ServiceUnavailable
from hwrepo.entrypoints.api.deps import BackendsDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _probe(name: str, fn: object) -> tuple[str, str]:
    try:
        await asyncio.wait_for(fn, timeout=5)  # type: ignore[arg-type]
    except ServiceUnavailable as exc:
        return name, exc.detail
    except Exception as exc:
        return name, f"{exc.__class__.__name__}: {exc}"
    return name, "ok"


async def _nats(request: Request) -> None:
    nc = request.app.state.nats
    if nc is None or not nc.is_connected:
        raise ServiceUnavailable("NATS JetStream", "not connected")
    await nc.jetstream().account_info()


@router.get("/readyz")
async def readyz(request: Request, backends: BackendsDep) -> JSONResponse:
    results = dict(
        await asyncio.gather(
            _probe("s3", run_in_threadpool(backends.store.ping)),
            _probe("nats", _nats(request)),
            _probe("database", run_in_threadpool(backends.ping_database)),
        )
    )
    ready = all(v == "ok" for v in results.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": results},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
