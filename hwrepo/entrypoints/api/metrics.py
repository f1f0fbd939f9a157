"""Request metrics middleware for the API."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from hwrepo.metrics import LATENCY, REQUESTS


def install(app: FastAPI) -> None:
    @app.middleware("http")
    async def _measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        REQUESTS.labels(request.method, name, str(response.status_code)).inc()
        LATENCY.labels(request.method, name).observe(time.perf_counter() - start)
        return response
