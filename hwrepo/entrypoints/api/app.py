"""The FastAPI application: thin routers over the service layer, problem+json errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from nats.aio.client import Client

from hwrepo import __version__
from hwrepo.adapters import eventbus
from hwrepo.config import Settings
from hwrepo.domain.errors import ServiceUnavailable
from hwrepo.entrypoints.api import metrics, problems
from hwrepo.entrypoints.api.routers import (
    blobs,
    checks,
    compare,
    events,
    external,
    health,
    pages,
    projects,
    reviews,
    revisions,
    user,
)
from hwrepo.entrypoints.api.templating import STATIC
from hwrepo.entrypoints.recorder import record_events
from hwrepo.service_layer.backends import Backends
from hwrepo.service_layer.outbox import OutboxRelay

log = logging.getLogger(__name__)


async def _connect_and_serve(app: FastAPI, backends: Backends, stop: asyncio.Event) -> None:
    """Connect to NATS (retrying while it is away), make the streams, then run the outbox relay
    and the recorder of check events."""
    settings = backends.settings
    nc: Client | None = None
    while nc is None and not stop.is_set():
        try:
            nc = await eventbus.connect(settings, name="hwrepo-api")
            await eventbus.ensure_streams(nc.jetstream(), settings)
        except ServiceUnavailable as exc:
            log.warning("%s; retrying", exc)
            nc = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=2)
    if nc is None:
        return
    app.state.nats = nc
    relay = OutboxRelay(backends, nc)
    app.state.relay = relay
    try:
        await asyncio.gather(
            relay.run(stop, poll_s=settings.outbox_poll_s),
            record_events(backends, nc, stop),
        )
    finally:
        await nc.close()


def create_app(
    settings: Settings, backends: Backends | None = None, *, relay: bool = True
) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = backends is None
        app.state.backends = backends or Backends.from_settings(settings)
        app.state.nats = None
        stop = asyncio.Event()
        task = (
            asyncio.create_task(_connect_and_serve(app, app.state.backends, stop))
            if relay
            else None
        )
        try:
            yield
        finally:
            stop.set()
            if task is not None:
                # A moment to finish what is in flight, then stop waiting: an unacked event is
                # redelivered and an unmarked outbox row republished, both harmlessly.
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(task, timeout=0.5)
            if own:
                app.state.backends.close()

    app = FastAPI(
        title="hwrepo",
        version=__version__,
        description="An event-driven repository for open hardware designs.",
        lifespan=lifespan,
        # No OpenTelemetry provider is set up here (hwrepo's metrics are Prometheus', /metrics),
        # so FastAPI's own instrumentation would only ask for one on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    problems.install(app)
    metrics.install(app)
    app.include_router(health.router)
    app.include_router(projects.router)
    app.include_router(blobs.router)
    app.include_router(revisions.router)
    app.include_router(external.router)
    app.include_router(checks.router)
    app.include_router(compare.router)
    app.include_router(reviews.router)
    app.include_router(user.router)
    app.include_router(events.router)
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    app.include_router(pages.router)
    return app
