"""What the benchmarks share: a private hwrepo stack, a timer, medians and a table printer.

The stack is the one the end-to-end tests run (tests/pipeline.py): a SeaweedFS S3 server and a
nats-server on free ports of 127.0.0.1 with their data in a temporary directory, SQLite, the API
in-process through FastAPI's TestClient (which runs the app's lifespan: the outbox relay and the
recorder of check events), and a real worker (planner + job consumers) in a thread. Nothing
listens anywhere but 127.0.0.1, and everything started here is stopped on the way out, also on
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from fastapi.testclient import TestClient
from minio.deleteobjects import DeleteObject

from hwrepo.checks.core.kind import Workspace
from hwrepo.checks.run.runner import Sandbox, python_env
from hwrepo.config import EmbeddedPorts, Settings
from hwrepo.entrypoints import embedded
from hwrepo.entrypoints.api.app import create_app
from hwrepo.entrypoints.worker import Worker
from hwrepo.service_layer import bootstrap, users
from hwrepo.service_layer.backends import Backends

ROOT = Path(__file__).resolve().parents[1]
DESIGNS = ROOT / "designs"
FINAL_STATES = {"passed", "failed", "errored", "timed_out", "cancelled"}

# pyverilog installs a top-level package named `tests` into site-packages: this repository's
# tests/ must be found first.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.pipeline import running_worker, upload_dir  # noqa: E402

__all__ = [
    "DESIGNS",
    "E2E",
    "ROOT",
    "EventClock",
    "Pipeline",
    "Stack",
    "api_process",
    "handle_termination",
    "machine_line",
    "median",
    "percentile",
    "print_table",
    "ratio",
    "run_benchmark",
    "seconds",
    "start_costs",
    "timed",
    "upload_dir",
]


# -- timing --------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(wall seconds, value) of one call."""
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0-100) by linear interpolation, as numpy's default."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    if k == lo or ordered[hi] == ordered[lo]:  # also when both are infinite
        return ordered[lo]
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def seconds(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def ratio(value: float | None, base: float | None) -> str:
    if value is None or base is None or base <= 0:
        return "—"
    return f"{value / base:.2f}x"


# -- output --------------------------------------------------------------------------------------


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, title: str | None = None
) -> None:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    if title:
        print(f"\n{title}")
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    sys.stdout.flush()


def machine_line(extra: dict[str, str] | None = None) -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    facts = {
        "nproc": str(os.cpu_count()),
        "load average": load,
        "python": platform.python_version(),
        **(extra or {}),
    }
    return "machine: " + "; ".join(f"{k} {v}" for k, v in facts.items())


def run_benchmark(main: Callable[[], int]) -> None:
    """A benchmark's entry point: its exit code, 130 when interrupted (servers stopped)."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        sys.exit(130)


def handle_termination() -> None:
    """SIGINT (also where a shell started the benchmark with SIGINT ignored), SIGTERM and SIGHUP
    raise KeyboardInterrupt, so that every `finally` runs and the servers are stopped."""

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


# -- the stack -----------------------------------------------------------------------------------


@dataclass
class E2E:
    """One upload followed until a check was final in the API. Times are seconds from the start
    of the upload request."""

    total_s: float  # until the check was seen final in the API
    upload_s: float  # the upload request itself (201 received)
    queued_s: float  # the planner queued the check (its `created`): outbox relay, planner
    started_s: float  # a worker started the job
    finished_s: float  # the worker stored the result and published check.finished
    state: str
    check: dict[str, Any] = field(default_factory=dict)

    @property
    def waiting_s(self) -> float:
        """Queued → started: the work queue and the worker's fetch."""
        return self.started_s - self.queued_s

    @property
    def running_s(self) -> float:
        """Started → finished: inputs, the kind's run, results stored."""
        return self.finished_s - self.started_s

    @property
    def recording_s(self) -> float:
        """Finished → seen final in the API: recorder and this poll."""
        return self.total_s - self.finished_s


def _epoch(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclass
class Pipeline:
    """A running API + worker on private servers, and a user allowed to upload."""

    settings: Settings
    backends: Backends
    client: TestClient
    worker: Worker
    headers: dict[str, str]
    owner: str
    poll_s: float = 0.05
    # With a clock, a wait first follows the event stream until the wanted checks' check.finished
    # is stored (no requests meanwhile: a poller would take CPU from the job it times), then
    # polls the API every `poll_s` until they are final there.
    clock: EventClock | None = None
    _projects: set[str] = field(default_factory=set)

    def project(self, name: str) -> str:
        """The project `owner/name`, made on first use."""
        full = f"{self.owner}/{name}"
        if full not in self._projects:
            r = self.client.post(
                "/api/v1/projects",
                json={"name": name, "kind": "hardware", "licence": "CERN-OHL-P-2.0"},
                headers=self.headers,
            )
            if r.status_code != 201:
                raise RuntimeError(f"creating project {full}: {r.status_code} {r.text}")
            self._projects.add(full)
        return full

    def checks(self, project: str, number: int) -> dict[str, Any]:
        r = self.client.get(
            f"/api/v1/projects/{project}/revisions/{number}/checks", headers=self.headers
        )
        if r.status_code != 200:
            raise RuntimeError(f"checks of {project} r{number}: {r.status_code} {r.text}")
        body: dict[str, Any] = r.json()
        return body

    def detail(self, url: str) -> dict[str, Any]:
        r = self.client.get(url, headers=self.headers)
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    def upload_and_wait(
        self,
        project: str,
        directory: Path,
        kind: str,
        *,
        name: str | None = None,
        timeout_s: float = 300.0,
        message: str = "",
    ) -> E2E:
        """Upload `directory` as a new revision of `project` and wait until its check of `kind`
        (named `name`, if given) is final in the API."""
        (result,), _ = self.upload_and_wait_all(
            project, directory, [(kind, name)], timeout_s=timeout_s, message=message
        )
        return result

    def upload_and_wait_all(
        self,
        project: str,
        directory: Path,
        wanted: list[tuple[str, str | None]],
        *,
        whole_revision: bool = False,
        timeout_s: float = 300.0,
        message: str = "",
    ) -> tuple[list[E2E], float | None]:
        """Upload `directory` as a new revision of `project`; wait until each wanted check
        (kind, name or None) is final in the API, and with `whole_revision` until every check
        of the revision is. Returns the timelines of the wanted checks and, with
        `whole_revision`, the seconds until the revision's state was final."""
        t0_wall = time.time()
        t0 = time.perf_counter()
        rev = upload_dir(self.client, self.headers, project, directory, message=message)
        upload_s = time.perf_counter() - t0
        deadline = t0 + timeout_s
        if self.clock is not None:
            for kind, name in wanted:

                def finished(e: StoredEvent, kind: str = kind, name: str | None = name) -> bool:
                    return e.data.get("kind") == kind and name in (None, e.data.get("name"))

                left = max(1.0, deadline - time.perf_counter())
                self.clock.first(
                    "check.finished", project, rev["number"], where=finished, timeout_s=left
                )
        seen: dict[int, tuple[float, dict[str, Any]]] = {}
        revision_s: float | None = None
        while True:
            body = self.checks(project, rev["number"])
            now = time.perf_counter() - t0
            for i, (kind, name) in enumerate(wanted):
                if i in seen:
                    continue
                for c in body["checks"]:
                    if c["kind"] == kind and (name is None or c["name"] == name):
                        if c["state"] in FINAL_STATES:
                            seen[i] = (now, c)
                        break
            if whole_revision and revision_s is None and body["state"] != "pending":
                revision_s = now
            if len(seen) == len(wanted) and (revision_s is not None or not whole_revision):
                break
            if time.perf_counter() > deadline:
                raise TimeoutError(
                    f"checks of {project} r{rev['number']} not final after {timeout_s} s: {body}"
                )
            time.sleep(self.poll_s)

        results = []
        for i in range(len(wanted)):
            total, check = seen[i]

            def rel(key: str, check: dict[str, Any] = check) -> float:
                value = _epoch(check.get(key))
                return float("nan") if value is None else value - t0_wall

            results.append(
                E2E(
                    total_s=total,
                    upload_s=upload_s,
                    queued_s=rel("created"),
                    started_s=rel("started"),
                    finished_s=rel("finished"),
                    state=check["state"],
                    check=check,
                )
            )
        return results, revision_s


class Stack:
    """One S3 server for the whole run; `pipeline()` adds a private nats-server, bucket, SQLite
    database, API and worker (so that each phase's work queue holds only its own jobs)."""

    def __init__(self, root: Path | None = None, *, outbox_poll_s: float | None = None) -> None:
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="hwrepo-bench-")) if root is None else root
        self.keys = {
            "access_key": "bench-" + secrets.token_hex(4),
            "secret_key": secrets.token_urlsafe(24),
        }
        self.outbox_poll_s = outbox_poll_s
        self.s3: embedded.Server | None = None
        self._phases = 0

    def __enter__(self) -> Stack:
        names = [n for n in EmbeddedPorts.model_fields if n != "nats"]
        ports = EmbeddedPorts(**dict(zip(names, embedded.free_ports(len(names)), strict=True)))
        self.s3 = embedded.s3_server(
            self.root / "s3", ports, self.keys["access_key"], self.keys["secret_key"]
        )
        try:
            self.s3.start()
        except BaseException:
            self.s3.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.s3 is not None:
            self.s3.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
            # A job still running in a worker thread when the benchmark was interrupted may
            # write there until it ends; the interpreter waits for it before atexit handlers.
            atexit.register(shutil.rmtree, self.root, ignore_errors=True)

    @contextlib.contextmanager
    def pipeline(
        self, kinds: list[str], *, data_dir: Path | None = None, **worker_options: Any
    ) -> Iterator[Pipeline]:
        """API + worker taking `kinds` on a nats-server of their own. `data_dir` (default: a new
        directory) holds the SQLite index and the worker's caches."""
        assert self.s3 is not None, "use the Stack as a context manager"
        self._phases += 1
        phase_dir = self.root / f"phase-{self._phases}"
        (port,) = embedded.free_ports(1)
        nats = embedded.nats_server(phase_dir / "nats", port)
        extra: dict[str, Any] = {}
        if self.outbox_poll_s is not None:
            extra["outbox_poll_s"] = self.outbox_poll_s
        settings = Settings(
            data_dir=data_dir or phase_dir / "data",
            s3_endpoint=f"http://127.0.0.1:{self.s3.ready_port}",
            s3_access_key=self.keys["access_key"],
            s3_secret_key=self.keys["secret_key"],
            s3_bucket="bench-" + uuid.uuid4().hex[:16],
            nats_urls=[f"nats://127.0.0.1:{port}"],
            database_url=f"sqlite:///{phase_dir / 'index.sqlite3'}",
            seed_demo_projects=False,
            **extra,
        )
        with contextlib.ExitStack() as stack:
            nats.start()
            stack.callback(nats.stop)
            backends = Backends.from_settings(settings)
            stack.callback(backends.close)
            stack.callback(_drop_bucket, backends)
            bootstrap.ensure_bucket(backends)
            asyncio.run(bootstrap.ensure_streams(settings))
            client = stack.enter_context(TestClient(create_app(settings, backends)))
            owner = "bench"
            users.create_user(backends, owner)
            token = users.create_token(backends, owner)
            worker = stack.enter_context(running_worker(settings, kinds=kinds, **worker_options))
            missing = sorted(set(kinds) - set(worker.kinds))
            if missing:
                raise RuntimeError(f"this machine cannot run check kind(s) {', '.join(missing)}")
            yield Pipeline(
                settings=settings,
                backends=backends,
                client=client,
                worker=worker,
                headers={"Authorization": f"Bearer {token}"},
                owner=owner,
            )


def _drop_bucket(backends: Backends) -> None:
    """SeaweedFS gives every bucket volumes of its own: remove the phase's bucket again."""
    store = backends.store
    with contextlib.suppress(Exception):
        keys = [DeleteObject(key) for key in store.list_keys("")]
        errors = list(store.client.remove_objects(store.bucket, keys))
        if not errors:
            store.client.remove_bucket(store.bucket)


# -- event times ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredEvent:
    type: str  # "check.queued", ...
    project: str | None
    revision: int | None
    data: dict[str, Any]
    stored: float  # the JetStream stored timestamp, epoch seconds
    seen: float  # when this process received it, epoch seconds


class EventClock:
    """Every domain event of a pipeline as JetStream stored it, with its stored timestamp (the
    server's clock, the same machine's clock as `time.time()` here): an ordered consumer on
    hwrepo.events.> in a thread of its own."""

    def __init__(self, nats_url: str) -> None:
        self.url = nats_url
        self.events: list[StoredEvent] = []
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._error: BaseException | None = None

    def __enter__(self) -> EventClock:
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            raise RuntimeError(f"event consumer did not start: {self._error}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._consume())
        except BaseException as exc:  # reported by __enter__ or first()
            self._error = exc
            self._ready.set()

    async def _consume(self) -> None:
        import nats
        from nats.js.api import ConsumerConfig, DeliverPolicy

        from hwrepo.domain.events import EVENTS_STREAM, EVENTS_SUBJECT_PREFIX

        self._stop = asyncio.Event()
        nc = await nats.connect(self.url)
        try:
            js = nc.jetstream()
            prefix = EVENTS_SUBJECT_PREFIX + "."

            async def on_message(msg: Any) -> None:
                body = json.loads(msg.data)
                event = StoredEvent(
                    type=msg.subject.removeprefix(prefix),
                    project=body.get("project"),
                    revision=body.get("revision"),
                    data=body.get("data") or {},
                    stored=msg.metadata.timestamp.timestamp(),
                    seen=time.time(),
                )
                with self._cond:
                    self.events.append(event)
                    self._cond.notify_all()

            sub = await js.subscribe(
                prefix + ">",
                stream=EVENTS_STREAM,
                ordered_consumer=True,
                cb=on_message,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
            )
            self._ready.set()
            await self._stop.wait()
            await sub.unsubscribe()
        finally:
            await nc.close()

    def first(
        self,
        type_: str,
        project: str,
        revision: int,
        *,
        where: Callable[[StoredEvent], bool] | None = None,
        timeout_s: float = 60.0,
    ) -> StoredEvent:
        """The first stored event of this type for this revision (waiting for it)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for e in self.events:
                    if (
                        e.type == type_
                        and e.project == project
                        and e.revision == revision
                        and (where is None or where(e))
                    ):
                        return e
                left = deadline - time.monotonic()
                if left <= 0 or self._error is not None:
                    raise TimeoutError(
                        f"no {type_} of {project} r{revision} within {timeout_s} s"
                        + (f" ({self._error})" if self._error else "")
                    )
                self._cond.wait(left)


# -- a real HTTP server --------------------------------------------------------------------------

_SERVE = (
    "import sys, uvicorn\n"
    "from hwrepo.config import Settings\n"
    "from hwrepo.entrypoints.api.app import create_app\n"
    "settings = Settings.model_validate_json(sys.stdin.read())\n"
    "uvicorn.run(create_app(settings), host='127.0.0.1', port=int(sys.argv[1]),\n"
    "            log_level='warning', timeout_graceful_shutdown=5)\n"
)


@dataclass
class ApiProcess:
    url: str  # http://127.0.0.1:PORT
    proc: subprocess.Popen[bytes]

    def cpu_s(self) -> float:
        """User + system CPU seconds the API process has used so far (from /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


@contextlib.contextmanager
def api_process(settings: Settings, *, ready_s: float = 60.0) -> Iterator[ApiProcess]:
    """hwrepo's API (FastAPI app, its lifespan: outbox relay and recorder) served by uvicorn in
    a process of its own, as `hwrepo api` runs it, on a free port of 127.0.0.1 and the same
    servers and database as `settings`."""
    import httpx

    (port,) = embedded.free_ports(1)
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE, str(port)],
        stdin=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdin is not None
    proc.stdin.write(settings.model_dump_json().encode())
    proc.stdin.close()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the API process exited {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API at {url} did not answer /healthz in {ready_s} s")
            time.sleep(0.1)
        yield ApiProcess(url, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- what a sandboxed job pays before its tool -----------------------------------------------------


def start_costs(scratch: Path, module: str, repeat: int = 5) -> dict[str, float]:
    """Medians of what a sandboxed job pays before its tool starts: an empty sandbox
    (/bin/true), hwrepo's Python starting in it, and that Python importing `module` (a kind's
    in-sandbox half)."""
    ws = Workspace(root=scratch / "start-costs", cache=scratch / "kind-cache").create()
    steps = {
        "sandbox (/bin/true)": ["/bin/true"],
        "+ python -I -B -c pass": [sys.executable, "-I", "-B", "-c", "pass"],
        f"+ import {module.removeprefix('hwrepo.checks.')}": [
            sys.executable,
            "-I",
            "-B",
            "-c",
            f"import sys; sys.path.insert(0, {str(ROOT)!r}); import {module}",
        ],
    }
    costs: dict[str, float] = {}
    try:
        for label, argv in steps.items():
            walls = []
            for _ in range(repeat):
                wall, done = timed(lambda argv=argv: Sandbox(ws).run(argv, env=python_env()))
                if done.exit_code != 0:
                    raise RuntimeError(f"{label} exited {done.exit_code}: {done.last_lines(5)}")
                walls.append(wall)
            costs[label] = float(median(walls) or 0.0)
    finally:
        ws.remove()
    return costs
