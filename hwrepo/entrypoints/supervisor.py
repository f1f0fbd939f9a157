"""`hwrepo up`: start the embedded servers (when no external ones are configured), prepare the
bucket, the streams and the index, seed the demo projects, then run the API and keep every
child alive until Ctrl-C, which stops them all in reverse order. The URL is printed once the
API's /readyz answers 200, that is when it reaches S3, NATS and the database."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from hwrepo.config import Settings
from hwrepo.entrypoints import embedded
from hwrepo.entrypoints.embedded import Server
from hwrepo.service_layer import bootstrap

log = logging.getLogger("hwrepo.up")


def _api_server(settings: Settings) -> Server:
    return Server(
        name="API",
        argv=[sys.executable, "-m", "hwrepo.entrypoints.cli", "api"],
        ready_port=settings.api_port,
        log_path=settings.data_dir / "logs" / "api.log",
        # The child reads the same configuration; what came from the command line goes by env.
        env={
            "HWREPO_DATA_DIR": str(Path(settings.data_dir).resolve()),
            "HWREPO_API_PORT": str(settings.api_port),
            "HWREPO_API_HOST": settings.api_host,
        },
    )


def _worker(settings: Settings, number: int) -> Server:
    return Server(
        name=f"worker {number}",
        argv=[sys.executable, "-m", "hwrepo.entrypoints.cli", "worker"],
        ready_port=0,
        log_path=settings.data_dir / "logs" / f"worker-{number}.log",
        env={"HWREPO_DATA_DIR": str(Path(settings.data_dir).resolve())},
    )


def _local_url(settings: Settings) -> str:
    """Where this machine reaches the API it starts (base_url may be a public name)."""
    host = settings.api_host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.api_port}"


def _not_ready(body: bytes) -> str:
    """What a 503 of /readyz names: "nats (NATS JetStream is unreachable: not connected)"."""
    try:
        checks = json.loads(body)["checks"]
        return ", ".join(f"{name} ({state})" for name, state in checks.items() if state != "ok")
    except (ValueError, KeyError, TypeError, AttributeError):
        return body.decode(errors="replace")[:300]


def wait_ready(
    url: str,
    timeout_s: float,
    *,
    alive: Callable[[], bool],
    stopping: threading.Event,
    log_path: Path,
) -> bool:
    """Poll `url` (/readyz) until it answers 200: True; False when stopping was asked for
    meanwhile. StartFailed, naming what is not ready, when that takes longer than `timeout_s`
    or the API exits."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    deadline = time.monotonic() + timeout_s
    last = "the API did not answer"
    while not stopping.is_set():
        if not alive():
            raise embedded.StartFailed(
                f"the API exited while starting ({last}); last lines of {log_path}:\n"
                f"{embedded.tail(log_path)}"
            )
        try:
            with opener.open(url, timeout=5) as response:
                if response.status == 200:
                    return True
                last = f"{url} answered {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"not ready: {_not_ready(exc.read())}"
        except (OSError, ValueError) as exc:
            last = f"{url} did not answer: {exc}"
        if time.monotonic() >= deadline:
            raise embedded.StartFailed(
                f"hwrepo was not ready after {timeout_s:g} s: {last}. See {log_path}"
            )
        stopping.wait(0.2)
    return False


def _stop_together(servers: list[Server]) -> None:
    """Stop these processes at once, and wait for all of them."""
    running = [s for s in servers if s.alive()]
    for server in running:
        print(f"stopping {server.name}", flush=True)
    stoppers = [
        threading.Thread(target=server.stop, name=f"stop {server.name}") for server in servers
    ]
    for thread in stoppers:
        thread.start()
    for thread in stoppers:
        thread.join()


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # in the order they stop: the workers, the API, the embedded servers (see `stop`)
        self.workers: list[Server] = []
        self.apis: list[Server] = []
        self.embedded: list[Server] = []
        self.stopping = threading.Event()

    @property
    def servers(self) -> list[Server]:
        return [*self.embedded, *self.apis, *self.workers]

    def _handle_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping.set()

    def run(self) -> int:
        settings = self.settings
        ports = {"API": settings.api_port, **embedded.embedded_ports(settings)}
        signal.signal(signal.SIGINT, self._handle_signal)
        signal.signal(signal.SIGTERM, self._handle_signal)
        try:
            embedded.check_ports(
                ports,
                "choose other ports: --port for the API, HWREPO_EMBEDDED__<NAME>=PORT for the "
                "embedded servers (see the README)",
            )
            for server in embedded.embedded_servers(settings):
                print(f"starting {server.name} (log: {server.log_path})", flush=True)
                server.start()
                self.embedded.append(server)
            print("preparing the bucket, the event streams and the index", flush=True)
            seeded = bootstrap.prepare(settings, seed=settings.seed_demo_projects)
            if seeded:
                print(f"published {seeded} demo project(s) from designs/", flush=True)
            api = _api_server(settings)
            api.start()
            self.apis.append(api)
            for number in range(1, settings.workers + 1):
                worker = _worker(settings, number)
                worker.start()
                self.workers.append(worker)
            ready = wait_ready(
                f"{_local_url(settings)}/readyz",
                settings.ready_timeout_s,
                alive=api.alive,
                stopping=self.stopping,
                log_path=api.log_path,
            )
            if not ready:  # Ctrl-C while waiting
                return 0
            print(f"hwrepo is running: {settings.base_url}/  (API docs: {settings.base_url}/docs)")
            print(f"data: {Path(settings.data_dir).resolve()}   logs: {settings.data_dir}/logs")
            print("press Ctrl-C to stop", flush=True)
            self._watch()
        except (embedded.StartFailed, embedded.PortInUse) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            self.stop()
        return 0

    def _watch(self) -> None:
        restarts: dict[str, list[float]] = {}
        while not self.stopping.wait(0.5):
            for server in self.servers:
                if server.alive():
                    continue
                recent = [t for t in restarts.get(server.name, []) if time.monotonic() - t < 60]
                if len(recent) >= 5:
                    raise embedded.StartFailed(
                        f"{server.name} keeps exiting; see {server.log_path}:\n"
                        f"{embedded.tail(server.log_path)}"
                    )
                code = server.process.returncode if server.process else None
                print(f"{server.name} exited (code {code}); restarting", file=sys.stderr)
                recent.append(time.monotonic())
                restarts[server.name] = recent
                server.start()

    def stop(self) -> None:
        """The workers, then the API (each may still hand an event or a result to the servers),
        then the embedded servers, all of them at once (each takes a second or two to flush
        and close)."""
        for stage in (self.workers, self.apis, self.embedded):
            _stop_together(stage)
            stage.clear()
