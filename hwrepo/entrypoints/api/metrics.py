"""Request metrics middleware for the API (plain ASGI: a request pays two counter updates)."""

from __future__ import annotations

import time

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hwrepo.metrics import LATENCY, REQUESTS


class RequestMetrics:
    """Counts each HTTP request by method, route and status, and observes the time until its
    response starts (a stream's first byte, not its end)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        recorded = False

        def record(status: int) -> None:
            nonlocal recorded
            recorded = True
            name = getattr(scope.get("route"), "path", "unmatched")
            REQUESTS.labels(scope["method"], name, str(status)).inc()
            LATENCY.labels(scope["method"], name).observe(time.perf_counter() - start)

        async def send_measured(message: Message) -> None:
            if message["type"] == "http.response.start" and not recorded:
                record(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_measured)
        finally:
            if not recorded:
                record(500)


def install(app: FastAPI) -> None:
    app.add_middleware(RequestMetrics)
