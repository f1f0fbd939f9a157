"""Getting a data directory ready: bucket, streams, schema, demo projects."""

from __future__ import annotations

import asyncio
import logging

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from hwrepo.adapters import eventbus
from hwrepo.config import Settings
from hwrepo.domain.errors import ServiceUnavailable
from hwrepo.service_layer import demo
from hwrepo.service_layer.backends import Backends

log = logging.getLogger(__name__)


@retry(
    retry=retry_if_exception_type(ServiceUnavailable),
    stop=stop_after_delay(60),
    wait=wait_fixed(0.5),
    reraise=True,
)
def ensure_bucket(backends: Backends) -> None:
    """Make the bucket, and see the store list it. A freshly started S3 server accepts
    connections, then answers with errors, before it serves requests: retried for up to 60 s
    while the store is unreachable or answers with errors; then its last error is raised."""
    backends.store.ensure_bucket()
    backends.store.serves()


async def ensure_streams(settings: Settings) -> None:
    nc = await eventbus.connect(settings, name="hwrepo-setup")
    try:
        await eventbus.ensure_streams(nc.jetstream(), settings)
    finally:
        await nc.close()


def prepare(settings: Settings, *, seed: bool) -> int:
    """Make the bucket, the streams and the schema; publish the demo projects into an empty
    repository. Returns the number of demo projects published."""
    backends = Backends.from_settings(settings)
    try:
        ensure_bucket(backends)
        asyncio.run(ensure_streams(settings))
        return demo.seed(backends) if seed else 0
    finally:
        backends.close()
