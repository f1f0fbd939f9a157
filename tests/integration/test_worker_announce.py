"""Which kinds live workers run (the API's `waiting_for`): a worker stopping withdraws its own
announcement, never that of another worker of the same process or host name and pid."""

from __future__ import annotations

import asyncio

from hwrepo.adapters import eventbus
from hwrepo.config import Settings
from hwrepo.service_layer.backends import Backends
from tests.pipeline import running_worker


async def _live(settings: Settings) -> set[str]:
    nc = await eventbus.connect(settings, name="test-announce")
    try:
        return await eventbus.live_worker_kinds(nc.jetstream())
    finally:
        await nc.close()


def test_a_worker_stopping_leaves_the_other_workers_announcement(
    settings: Settings, backends: Backends
) -> None:
    with running_worker(settings, kinds=["rtl-lint"], plan=False):
        with running_worker(settings, kinds=["rtl-structure"], plan=False):
            assert {"rtl-lint", "rtl-structure"} <= asyncio.run(_live(settings))
        # the second worker has stopped and withdrawn its announcement; the first still runs
        live = asyncio.run(_live(settings))
        assert "rtl-lint" in live and "rtl-structure" not in live
