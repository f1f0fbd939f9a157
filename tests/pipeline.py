"""Running the planner and workers in-process for end-to-end tests, and waiting for verdicts."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from hwrepo.config import Settings
from hwrepo.entrypoints.worker import Worker, WorkerOptions


@contextmanager
def running_worker(settings: Settings, **options: Any) -> Iterator[Worker]:
    """A real worker (planner + job consumers) on its own event loop in a thread."""
    worker = Worker(settings, WorkerOptions(**options))
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        asyncio.set_event_loop(loop)

        async def go() -> None:
            task = asyncio.create_task(worker.run(stop))
            while worker.nc is None or (not worker.kinds and options.get("kinds") != []):
                if task.done():
                    break
                await asyncio.sleep(0.05)
            ready.set()
            await task

        try:
            loop.run_until_complete(go())
        except BaseException as exc:
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    ready.wait(30)
    if failure:
        raise failure[0]
    try:
        yield worker
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)


def new_project(client: httpx.Client, headers: dict[str, str], name: str, **extra: Any) -> str:
    """Create a hardware project of the token's user; its full name."""
    r = client.post(
        "/api/v1/projects",
        json={"name": name, "kind": "hardware", "licence": "CERN-OHL-P-2.0", **extra},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["full_name"])


def upload_dir(
    client: httpx.Client,
    headers: dict[str, str],
    project: str,
    root: Path,
    *,
    message: str = "",
    directory: str = "",
) -> dict[str, Any]:
    files = [
        ("files", (p.relative_to(root).as_posix(), p.read_bytes()))
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    ]
    data = {"message": message}
    if directory:
        data["directory"] = directory
    r = client.post(
        f"/api/v1/projects/{project}/revisions", files=files, data=data, headers=headers
    )
    assert r.status_code == 201, r.text
    return r.json()


def wait_for_checks(
    client: httpx.Client,
    project: str,
    number: int,
    timeout_s: float = 300,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Poll the checks of a revision until its state is no longer pending."""
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = client.get(f"/api/v1/projects/{project}/revisions/{number}/checks", headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        if body["state"] != "pending":
            return body
        time.sleep(0.3)
    raise AssertionError(f"checks of {project} r{number} still pending after {timeout_s} s: {body}")


@contextmanager
def private_nats(tmp_path: Path) -> Iterator[str]:
    """A nats-server of the test's own: its durable consumers see only this test's events."""
    from hwrepo.entrypoints import embedded

    (port,) = embedded.free_ports(1)
    server = embedded.nats_server(tmp_path / "private-nats", port)
    server.start()
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        server.stop()


@contextmanager
def pipeline_stack(
    settings: Settings, tmp_path: Path
) -> Iterator[tuple[Settings, Any, TestClient]]:
    """The API (with its outbox relay) on a nats-server of the test's own, and its backends."""
    from hwrepo.entrypoints.api.app import create_app
    from hwrepo.service_layer import bootstrap
    from hwrepo.service_layer.backends import Backends

    with private_nats(tmp_path) as url:
        own = settings.model_copy(update={"nats_urls": [url], "data_dir": tmp_path / "data"})
        backends = Backends.from_settings(own)
        bootstrap.ensure_bucket(backends)
        asyncio.run(bootstrap.ensure_streams(own))
        with TestClient(create_app(own, backends)) as client:
            yield own, backends, client
        backends.close()


@contextmanager
def api_process(settings: Settings, data_dir: Path, log: Path, **extra_env: str) -> Iterator[str]:
    """`hwrepo api` as a process of its own (uvicorn) on the servers, bucket and database of
    `settings` (and the HWREPO_* variables in `extra_env`); its base URL once it answers."""
    from hwrepo.entrypoints import embedded
    from tests.integration.helpers import cli_env

    (port,) = embedded.free_ports(1)
    env = cli_env(settings, data_dir)
    env.update(HWREPO_API_PORT=str(port), **extra_env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hwrepo.entrypoints.cli", "api"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not embedded.answers(port):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(20)
