"""Saturation: queued small simulations on two worker processes, against what the CPU allows.

Issue 14: "200 queued small simulations on 2 workers, jobs per minute ÷ what the CPU allows
from the bare job's CPU time; target ≥ 0.9". In one run:

1. bare: cocotb's runner build() + test() of designs/rtl-counter on Icarus in a fresh build
   directory, as bench_simulation.py's bare side runs it (the same Python environment the kind
   uses, from the environment cache), `--bare-runs` times (default 5). Each run's CPU time is
   user + system of the process and its children (getrusage(RUSAGE_CHILDREN) before and after).
   What the CPU allows = cores x 60 s ÷ the median bare CPU seconds per job, in jobs per minute.
2. hwrepo: a private stack (the S3 server and a nats-server of common.py, SQLite, the API under
   uvicorn in a process of its own). The jobs are queued first: `--jobs` revisions (default
   200), each a new project, are uploaded as fast as the API takes them while a planner-only
   `hwrepo worker` (taking no kind) plans them; once every simulation job is in the work queue
   the planner is stopped and `--workers` (default 2) `hwrepo worker` processes taking only
   the simulation kind, at `--concurrency` (default 1) each and with cancel_superseded off, are
   started. Throughput = jobs ÷ (last `check.finished` - first `check.started`), both the
   JetStream stored timestamps of the events, in jobs per minute.

CPU per job, over the time from the workers' start to the last job finished: each worker process
is put in a cgroup v1 `cpuacct` group of its own (a job's sandboxed processes are not all reaped
by the worker, so its cutime/cstime miss them), its own utime/stime from /proc; the API, the S3
server, nats-server and this process from /proc; the whole machine from /proc/stat (what is
left is other people's load). Without a cpuacct hierarchy (or not as root) the jobs' CPU is
not measured; the throughput still is.

The workers' model caches are their own; their Python environments are the ones the tests keep
in $HWREPO_TEST_CACHE/simulation/envs (default /tmp/hwrepo-test-cache; `--env-cache`), so pip
installs nothing during the run. When one is missing the benchmark stops and says so.

    .venv/bin/python bench/bench_saturation.py [--jobs 200] [--workers 2] [--concurrency 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import resource
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
from bench_simulation import (
    Bare,
    Revisions,
    add_job_options,
    bare_run,
    ensure_envs,
    env_names,
    link_envs,
    make_revisions,
    resolve_design,
)
from common import (
    ROOT,
    EventClock,
    Stack,
    StoredEvent,
    api_process,
    handle_termination,
    machine_line,
    median,
    print_table,
    run_benchmark,
    seconds,
)

from hwrepo.checks.simulation import environments as simenv
from hwrepo.checks.simulation.kind import SimulationKind
from hwrepo.config import Settings
from hwrepo.entrypoints import embedded
from hwrepo.entrypoints.embedded import Server
from hwrepo.service_layer import bootstrap, users
from hwrepo.service_layer.backends import Backends

DESIGN = "rtl-counter"
SIMULATOR = "icarus"
KIND = "simulation"
TARGET = 0.9
OWNER = "bench"


# -- CPU accounting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cpu:
    """CPU seconds of one process: its own, and its children's that it has waited for."""

    own: float
    children: float

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.own - other.own, self.children - other.children)

    @property
    def total(self) -> float:
        return self.own + self.children


def proc_cpu(pid: int) -> Cpu:
    """utime + stime and cutime + cstime of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return Cpu(
        (int(fields[11]) + int(fields[12])) / ticks, (int(fields[13]) + int(fields[14])) / ticks
    )


def server_cpu(server: Server) -> Cpu:
    assert server.process is not None
    return proc_cpu(server.process.pid)


def self_cpu() -> Cpu:
    """This process (the event consumer, the polling, the uploads' client) and the children it
    has waited for so far."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Cpu(me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime)


PF_KTHREAD = 0x00200000


@dataclass(frozen=True)
class Machine:
    """What every core of the machine has done since boot (/proc/stat), and the CPU seconds of
    every process alive now, by (pid, start time): whether a kernel thread, its name."""

    busy_s: float  # user, nice, system, irq, softirq
    steal_s: float  # wanted to run, the hypervisor ran something else
    processes: dict[tuple[int, int], tuple[bool, str, float]]

    @classmethod
    def now(cls) -> Machine:
        ticks = os.sysconf("SC_CLK_TCK")
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
        processes = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                text = (entry / "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            comm = text[text.index("(") + 1 : text.rindex(")")]
            fields = text.rsplit(")", 1)[1].split()
            kthread = bool(int(fields[6]) & PF_KTHREAD)
            cpu = (int(fields[11]) + int(fields[12])) / ticks
            processes[(int(entry.name), int(fields[19]))] = (kthread, comm, cpu)
        return cls((user + nice + system + irq + softirq) / ticks, steal / ticks, processes)


@dataclass(frozen=True)
class Elsewhere:
    """The machine's CPU over an interval that none of the benchmark's processes used."""

    kernel_threads_s: float
    other_processes_s: float  # processes alive at both ends of the interval, not ours
    top: list[tuple[str, float]]  # their biggest users by name
    steal_s: float


def elsewhere(before: Machine, after: Machine, ours: set[int]) -> Elsewhere:
    kernel = 0.0
    other: Counter[str] = Counter()
    for key, (kthread, comm, cpu) in after.processes.items():
        if key not in before.processes or key[0] in ours:
            continue
        delta = cpu - before.processes[key][2]
        if kthread:
            kernel += delta
        elif delta > 0:
            other[comm] += delta
    return Elsewhere(
        kernel,
        sum(other.values()),
        [(name, cpu) for name, cpu in other.most_common(4) if cpu >= 0.05],
        after.steal_s - before.steal_s,
    )


def cores() -> int:
    return len(os.sched_getaffinity(0))


CPUACCT = Path("/sys/fs/cgroup/cpuacct")


@dataclass
class CpuGroup:
    """A cgroup v1 `cpuacct` group of this benchmark's own: the CPU time of every process in it
    and of every process they start, whoever reaps them. A job's sandbox is not a child the
    worker waits for all the way down (bwrap's processes in their PID namespace are not reaped
    by it), so the worker's cutime/cstime miss it; the sandbox's own cgroups are made in the
    `pids` and `memory` hierarchies only, so a `cpuacct` group holds the whole job."""

    path: Path

    @classmethod
    def make(cls, name: str) -> CpuGroup | None:
        """None where no such group can be made (no cgroup v1 cpuacct, or not root)."""
        path = CPUACCT / name
        try:
            path.mkdir()
        except OSError:
            return None
        return cls(path)

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def usage_s(self) -> float:
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def remove(self) -> None:
        """Once its processes have ended (a stopped worker's last ones may take a moment)."""
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)
        print(f"note: could not remove the cgroup {self.path}", file=sys.stderr)


# -- the bare job --------------------------------------------------------------------------------


@dataclass
class BareRun:
    bare: Bare
    cpu_s: float


def bare_with_cpu(env: simenv.PythonEnv, revisions: Revisions, scratch: Path) -> BareRun:
    """bench_simulation's bare run, with the CPU time of its process and everything it
    started (no other child of this process ends meanwhile)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    bare = bare_run(env, revisions.first, revisions.params, scratch)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if bare.counts.get("failed") or not bare.counts.get("passed"):
        raise RuntimeError(f"the bare run did not pass: {bare.counts}")
    return BareRun(bare, cpu)


def bare_series(
    env: simenv.PythonEnv, revisions: Revisions, scratch: Path, runs: int, label: str
) -> list[BareRun]:
    out = []
    for i in range(runs):
        run = bare_with_cpu(env, revisions, scratch)
        out.append(run)
        print(
            f"  bare {label} #{i + 1}: wall {run.bare.wall_s:.2f} s, CPU {run.cpu_s:.2f} s",
            flush=True,
        )
    return out


def bare_at_once(
    env: simenv.PythonEnv, revisions: Revisions, scratch: Path, jobs: int, slots: int
) -> float:
    """`jobs` bare runs, `slots` at a time: seconds for all of them."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=slots) as pool:
        runs = list(
            pool.map(
                lambda _: bare_run(env, revisions.first, revisions.params, scratch), range(jobs)
            )
        )
    wall = time.perf_counter() - start
    bad = [r.counts for r in runs if r.counts.get("failed") or not r.counts.get("passed")]
    if bad:
        raise RuntimeError(f"bare runs did not pass: {bad[:3]}")
    return wall


@dataclass
class Baseline:
    """The bare job: alone, before and after the hwrepo phase; and `slots` at a time."""

    before: list[BareRun]
    after: list[BareRun] = field(default_factory=list)
    at_once: tuple[int, int, float] | None = None  # (jobs, at a time, seconds)

    @property
    def runs(self) -> list[BareRun]:
        return self.before + self.after

    @property
    def cpu_s(self) -> float:
        return float(statistics.median(r.cpu_s for r in self.runs))

    @property
    def wall_s(self) -> float:
        return float(statistics.median(r.bare.wall_s for r in self.runs))

    @property
    def allowed(self) -> float:
        """Jobs per minute the machine's cores allow at the bare job's CPU time."""
        return cores() * 60.0 / self.cpu_s

    @property
    def at_once_per_minute(self) -> float | None:
        if self.at_once is None:
            return None
        jobs, _, wall = self.at_once
        return jobs * 60.0 / wall


# -- the hwrepo side -----------------------------------------------------------------------------


def worker_env(settings: Settings, cache: Path, **more: str) -> dict[str, str]:
    """A worker process's configuration, as HWREPO_* variables: the stack's settings, no demo
    projects, no cancelling of superseded jobs (every queued job is to run), its own cache."""
    return {
        **settings.as_environment(),
        "HWREPO_SEED_DEMO_PROJECTS": "false",
        "HWREPO_CANCEL_SUPERSEDED": "false",
        "HWREPO_WORKER_CACHE_DIR": str(cache),
        **more,
    }


def worker_server(name: str, directory: Path, env: dict[str, str], argv: list[str]) -> Server:
    return Server(
        name=name,
        argv=[sys.executable, "-m", "hwrepo.entrypoints.cli", "worker", *argv],
        ready_port=0,
        log_path=directory / "worker.log",
        env=env,
        cwd=ROOT,
        drop_env=("HWREPO_",),  # only the configuration given here
    )


def wait_logged(server: Server, text: str, timeout_s: float = 60.0) -> None:
    """Until the server's log holds `text` (a worker says "worker ready")."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(FileNotFoundError):
            if text in server.log_path.read_text(errors="replace"):
                return
        if not server.alive():
            raise RuntimeError(
                f"{server.name} exited while starting:\n{embedded.tail(server.log_path)}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} did not log {text!r} within {timeout_s:.0f} s")
        time.sleep(0.02)


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def upload_files(root: Path) -> list[tuple[str, tuple[str, bytes]]]:
    return [
        ("files", (p.relative_to(root).as_posix(), p.read_bytes()))
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    ]


def queue_revisions(
    url: str, headers: dict[str, str], directory: Path, jobs: int, threads: int
) -> list[tuple[str, int]]:
    """`jobs` projects, each with one revision of `directory`, as fast as the API takes them;
    (project, revision number) of each."""
    files = upload_files(directory)
    local = threading.local()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, headers=headers, timeout=120)
        return local.client  # type: ignore[no-any-return]

    def one(i: int) -> tuple[str, int]:
        name = f"sat-{i:04d}"
        r = client().post(
            "/api/v1/projects",
            json={"name": name, "kind": "hardware", "licence": "CERN-OHL-P-2.0"},
        )
        if r.status_code != 201:
            raise RuntimeError(f"project {name}: {r.status_code} {r.text[:200]}")
        project = f"{OWNER}/{name}"
        r = client().post(f"/api/v1/projects/{project}/revisions", files=files)
        if r.status_code != 201:
            raise RuntimeError(f"upload {i}: {r.status_code} {r.text[:200]}")
        return project, int(r.json()["number"])

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, range(jobs)))


def events_of(clock: EventClock, type_: str, check_ids: set[str]) -> list[StoredEvent]:
    return [
        e for e in list(clock.events) if e.type == type_ and e.data.get("check_id") in check_ids
    ]


def wait_queued(
    clock: EventClock, revisions: list[tuple[str, int]], timeout_s: float
) -> dict[str, tuple[str, int]]:
    """Until every revision is planned; its simulation check's id → (project, number)."""
    deadline = time.monotonic() + timeout_s
    for project, number in revisions:
        left = max(deadline - time.monotonic(), 0.01)
        clock.first("revision.planned", project, number, timeout_s=left)
    ours = set(revisions)
    found: dict[str, tuple[str, int]] = {}
    for e in list(clock.events):
        if e.type == "check.queued" and e.data.get("kind") == KIND:
            key = (e.project or "", e.revision or 0)
            if key in ours:
                found[str(e.data["check_id"])] = key
    per_revision = Counter(found.values())
    odd = [f"{p} r{n}: {per_revision[(p, n)]}" for p, n in revisions if per_revision[(p, n)] != 1]
    if odd:
        raise RuntimeError("expected one simulation check per revision; " + ", ".join(odd[:5]))
    return found


def _epoch(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclass
class Outcome:
    """The hwrepo side, from the stored events and the processes' CPU."""

    jobs: int
    started: list[StoredEvent]
    finished: list[StoredEvent]
    workers_own: float  # the worker processes' own CPU, "worker ready" → the last job finished
    workers_group: float | None  # the same with everything they started (their CpuGroups)
    workers_start_cpu: list[float]  # each worker's own CPU until "worker ready"
    api_cpu: float
    s3_cpu: float
    nats_cpu: float
    bench_cpu: float
    machine_s: float  # every core's busy seconds over the same interval (steal not included)
    elsewhere: Elsewhere
    interval_s: float  # the interval the CPU figures cover
    checks: Recorded | None = None

    @property
    def span_s(self) -> float:
        return max(e.stored for e in self.finished) - min(e.stored for e in self.started)

    @property
    def per_minute(self) -> float:
        return len(self.finished) * 60.0 / self.span_s

    def running_s(self) -> list[float]:
        """Started → finished by the job's own clock (the check.finished data)."""
        out = []
        for e in self.finished:
            start, end = _epoch(e.data.get("started")), _epoch(e.data.get("finished"))
            if start is not None and end is not None:
                out.append(end - start)
        return out

    def slot_busy(self, slots: int) -> float:
        """Share of the span in which the slots held a job (stored check.started → finished)."""
        first_start: dict[str, float] = {}
        for e in self.started:
            cid = str(e.data["check_id"])
            first_start[cid] = min(first_start.get(cid, e.stored), e.stored)
        busy = sum(
            e.stored - first_start[str(e.data["check_id"])]
            for e in self.finished
            if str(e.data["check_id"]) in first_start
        )
        return busy / (self.span_s * slots)

    def gaps_s(self) -> list[float]:
        """Per worker: a job's check.finished → that worker's next check.started."""
        by_worker: dict[str, list[tuple[float, str]]] = {}
        ends = {str(e.data["check_id"]): e.stored for e in self.finished}
        for e in self.started:
            by_worker.setdefault(str(e.data.get("worker")), []).append(
                (e.stored, str(e.data["check_id"]))
            )
        gaps = []
        for starts in by_worker.values():
            starts.sort()
            for (_, cid), (next_start, _) in itertools.pairwise(starts):
                if cid in ends:
                    gaps.append(next_start - ends[cid])
        return gaps


@dataclass
class Recorded:
    """The simulation checks as the API shows them once recorded."""

    states: Counter[str] = field(default_factory=Counter)
    not_passed: list[str] = field(default_factory=list)
    envs_built: int = 0  # jobs whose Python environment was built (not taken from the cache)
    timings: dict[str, list[float]] = field(default_factory=dict)  # the kind's own steps
    sandbox_s: list[float] = field(default_factory=list)


def final_checks(
    url: str, headers: dict[str, str], checks: dict[str, tuple[str, int]], timeout_s: float
) -> Recorded:
    """Each simulation check's state in the API (waiting for the recorder) and what its details
    say about the job: the environment taken from the cache or not, the steps' seconds."""
    final = Recorded()
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for check_id, (project, number) in checks.items():
            while True:
                r = client.get(f"/api/v1/projects/{project}/revisions/{number}/checks")
                r.raise_for_status()
                listed = r.json()["checks"]
                mine = [c for c in listed if c.get("id") == check_id] or [
                    c for c in listed if c["kind"] == KIND
                ]
                state = mine[0]["state"] if mine else "missing"
                if state not in {"queued", "running"} or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            final.states[state] += 1
            if not mine:
                final.not_passed.append(f"{project} r{number}: no simulation check")
                continue
            r = client.get(mine[0]["url"])
            details = (r.json().get("details") or {}) if r.status_code == 200 else {}
            if state != "passed":
                final.not_passed.append(
                    f"{project} r{number}: {state}: {mine[0].get('summary', '')} "
                    f"{details.get('message', '')}".rstrip()
                )
            if (details.get("environment") or {}).get("built"):
                final.envs_built += 1
            for key, value in (details.get("timings") or {}).items():
                final.timings.setdefault(key, []).append(float(value))
            wall = (details.get("sandbox") or {}).get("wall_s")
            if wall is not None:
                final.sandbox_s.append(float(wall))
    return final


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="queued simulations")
    parser.add_argument("--workers", type=int, default=2, help="`hwrepo worker` processes")
    parser.add_argument("--concurrency", type=int, default=1, help="jobs each worker runs at once")
    parser.add_argument(
        "--bare-runs",
        "-n",
        type=int,
        default=5,
        help="bare jobs timed one at a time, before the hwrepo phase and again after it "
        "(the median of all is the denominator; default: %(default)s each)",
    )
    parser.add_argument(
        "--bare-at-once",
        type=int,
        default=20,
        help="bare jobs also run as many at a time as hwrepo has slots, for the throughput the "
        "bare job itself reaches on this machine (0: not; default: %(default)s)",
    )
    add_job_options(parser)
    parser.add_argument(
        "--upload-threads", type=int, default=4, help="clients uploading the revisions at once"
    )
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=None,
        help="how long the workers may take for all jobs (default: 10 times what the bare "
        "wall time says, plus 120 s)",
    )
    args = parser.parse_args(argv)
    if min(args.jobs, args.workers, args.concurrency, args.bare_runs, args.upload_threads) < 1:
        parser.error("--jobs, --workers, --concurrency, --bare-runs, --upload-threads: ≥ 1")
    if args.bare_at_once < 0:
        parser.error("--bare-at-once: ≥ 0")
    handle_termination()
    started = time.monotonic()

    if (reason := SimulationKind().available()) is not None:
        print(f"the simulation kind cannot run here: {reason}", file=sys.stderr)
        return 1
    design = resolve_design(DESIGN)
    version = simenv.simulator_version(SIMULATOR)
    slots = args.workers * args.concurrency
    print(
        machine_line(
            {
                SIMULATOR: version,
                "waves": "on" if args.waves else "off",
                "workers": f"{args.workers} x concurrency {args.concurrency}",
            }
        ),
        flush=True,
    )
    envs_dir = args.env_cache.resolve() / "envs"

    with Stack() as stack:
        assert stack.s3 is not None
        scratch = stack.root / "scratch"
        scratch.mkdir()
        revisions = make_revisions(design, SIMULATOR, args.waves, stack.root / "revisions")
        missing = [n for n in env_names(revisions.params) if not (envs_dir / n).is_dir()]
        if missing:
            print(
                f"Python environment {', '.join(missing)} is not in {envs_dir}: run the "
                "simulation tests once (they build it there), or bench/bench_simulation.py "
                "--designs rtl-counter --simulators icarus --build-envs, or give --env-cache",
                file=sys.stderr,
            )
            return 1
        envs, _ = ensure_envs([revisions], envs_dir, scratch, build=False)
        env = next(iter(envs.values()))

        # 1. the bare job
        bare = Baseline(bare_series(env, revisions, scratch, args.bare_runs, "before"))
        if args.bare_at_once:
            wall = bare_at_once(env, revisions, scratch, args.bare_at_once, slots)
            bare.at_once = (args.bare_at_once, slots, wall)
            print(f"  bare, {slots} at a time: {args.bare_at_once} in {wall:.1f} s", flush=True)
        timeout_s = args.timeout_s or 120 + 10 * args.jobs * bare.wall_s / slots

        # 2. hwrepo: private servers, the API, the jobs queued, then the workers
        (port,) = embedded.free_ports(1)
        nats_url = f"nats://127.0.0.1:{port}"
        nats = embedded.nats_server(stack.root / "nats", port)
        settings = Settings(
            data_dir=stack.root / "api",
            s3_endpoint=f"http://127.0.0.1:{stack.s3.ready_port}",
            s3_access_key=stack.keys["access_key"],
            s3_secret_key=stack.keys["secret_key"],
            s3_bucket="bench-" + uuid.uuid4().hex[:16],
            nats_urls=[nats_url],
            database_url=f"sqlite:///{stack.root / 'index.sqlite3'}",
            seed_demo_projects=False,
            cancel_superseded=False,
        )
        with contextlib.ExitStack() as servers:
            servers.enter_context(running(nats))
            backends = Backends.from_settings(settings)
            servers.callback(backends.close)
            bootstrap.ensure_bucket(backends)
            asyncio.run(bootstrap.ensure_streams(settings))
            users.create_user(backends, OWNER)
            headers = {"Authorization": f"Bearer {users.create_token(backends, OWNER)}"}
            clock = servers.enter_context(EventClock(nats_url))
            api = servers.enter_context(api_process(settings))

            planner_dir = stack.root / "planner"
            planner = worker_server(
                "planner",
                planner_dir,
                worker_env(settings, planner_dir / "cache", HWREPO_WORKER_KINDS="[]"),
                [],
            )
            t0 = time.monotonic()
            with running(planner):
                wait_logged(planner, "worker ready")
                queued = queue_revisions(
                    api.url, headers, revisions.first, args.jobs, args.upload_threads
                )
                uploaded_s = time.monotonic() - t0
                checks = wait_queued(clock, queued, timeout_s=300)
            print(
                f"  {len(queued)} revisions uploaded in {uploaded_s:.1f} s; "
                f"{len(checks)} simulation jobs queued after {time.monotonic() - t0:.1f} s",
                flush=True,
            )

            load_start = machine_line()
            workers: list[Server] = []
            groups: list[CpuGroup] = []
            for i in range(args.workers):
                directory = stack.root / f"worker-{i + 1}"
                cache = directory / "cache"
                link_envs(cache / "kinds" / KIND, envs_dir)
                workers.append(
                    worker_server(
                        f"worker {i + 1}",
                        directory,
                        worker_env(settings, cache),
                        ["--kinds", KIND, "--concurrency", str(args.concurrency)],
                    )
                )
                group = CpuGroup.make(f"hwrepo-bench-{os.getpid()}-worker-{i + 1}")
                if group is not None:
                    servers.callback(group.remove)  # after the worker has stopped
                    groups.append(group)
            base = {
                "api": api.cpu_s(),
                "s3": server_cpu(stack.s3).total,
                "nats": server_cpu(nats).total,
            }
            bench0, machine0, wall0 = self_cpu(), Machine.now(), time.monotonic()
            for i, w in enumerate(workers):
                servers.enter_context(running(w))
                if len(groups) == len(workers):
                    assert w.process is not None
                    groups[i].add(w.process.pid)  # before it has started anything
            ready_cpu = []
            for w in workers:
                wait_logged(w, "worker ready")
                ready_cpu.append(server_cpu(w).own)
            ids = set(checks)
            deadline = time.monotonic() + timeout_s
            last_note = time.monotonic()
            while True:
                done = {str(e.data["check_id"]) for e in events_of(clock, "check.finished", ids)}
                if len(done) >= len(ids):
                    break
                dead = [w.name for w in workers if not w.alive()]
                if dead or time.monotonic() > deadline:
                    why = f"{', '.join(dead)} exited" if dead else f"not done in {timeout_s:.0f} s"
                    print(f"  stopping: {why}; {len(done)} of {len(ids)} jobs finished")
                    for w in workers:
                        print(f"  {w.name}, last lines:\n{embedded.tail(w.log_path)}")
                    break
                if time.monotonic() - last_note > 30:
                    print(f"  {len(done)} of {len(ids)} jobs finished", flush=True)
                    last_note = time.monotonic()
                time.sleep(0.2)
            machine1 = Machine.now()
            ours = {os.getpid(), api.proc.pid}
            ours |= {s.process.pid for s in [*workers, stack.s3, nats] if s.process is not None}
            outcome = Outcome(
                jobs=len(ids),
                started=events_of(clock, "check.started", ids),
                finished=events_of(clock, "check.finished", ids),
                workers_own=sum(server_cpu(w).own for w in workers),
                workers_group=(
                    sum(g.usage_s() for g in groups) if len(groups) == len(workers) else None
                ),
                workers_start_cpu=ready_cpu,
                api_cpu=api.cpu_s() - base["api"],
                s3_cpu=server_cpu(stack.s3).total - base["s3"],
                nats_cpu=server_cpu(nats).total - base["nats"],
                bench_cpu=(self_cpu() - bench0).own,
                machine_s=machine1.busy_s - machine0.busy_s,
                elsewhere=elsewhere(machine0, machine1, ours),
                interval_s=time.monotonic() - wall0,
            )
            load_end = machine_line()
            outcome.checks = final_checks(api.url, headers, checks, 60)
        # the servers stopped (and reaped): the bare job alone again, for the machine's drift
        bare.after = bare_series(env, revisions, scratch, args.bare_runs, "after")

    report(args, bare, outcome, slots)
    print(f"\nworkers started at: {load_start}")
    print(f"at the end: {load_end}\ntotal {time.monotonic() - started:.0f} s")
    return 0


def report(
    args: argparse.Namespace,
    bare: Baseline,
    outcome: Outcome,
    slots: int,
) -> None:
    bare_cpu, bare_wall, allowed = bare.cpu_s, bare.wall_s, bare.allowed
    at_once = bare.at_once_per_minute
    n = max(len(outcome.finished), 1)
    complete = bool(outcome.finished and outcome.started)
    measured = outcome.per_minute if complete else None
    ratio = measured / allowed if measured is not None else None
    span = f"{outcome.span_s:.1f} s" if complete else "nothing finished"
    print_table(
        [
            "jobs",
            "bare CPU s/job",
            "bare wall s/job",
            "CPU allows jobs/min",
            "hwrepo jobs/min",
            "hwrepo ÷ allowed",
            "target",
            "met",
            f"bare {slots} at a time jobs/min",
            "hwrepo ÷ that",
        ],
        [
            [
                f"{len(outcome.finished)}/{outcome.jobs}",
                seconds(bare_cpu),
                seconds(bare_wall),
                f"{allowed:.1f}",
                "—" if measured is None else f"{measured:.1f}",
                "—" if ratio is None else f"{ratio:.2f}",
                f"≥ {TARGET}",
                "yes" if ratio is not None and ratio >= TARGET else "no",
                "—" if at_once is None else f"{at_once:.1f}",
                "—" if at_once is None or measured is None else f"{measured / at_once:.2f}",
            ]
        ],
        title=f"{DESIGN} on {SIMULATOR} (waves {'on' if args.waves else 'off'}); bare: cocotb's "
        f"runner alone, median of {len(bare.runs)}; CPU allows = {cores()} cores x 60 s ÷ "
        "bare CPU s/job; "
        f"hwrepo: {args.workers} worker processes x concurrency {args.concurrency}, first "
        f"check.started → last check.finished ({span})",
    )

    def medians(runs: list[BareRun]) -> str:
        if not runs:
            return "—"
        cpu = statistics.median(r.cpu_s for r in runs)
        wall = statistics.median(r.bare.wall_s for r in runs)
        return f"CPU {cpu:.2f} s, wall {wall:.2f} s"

    print(
        f"bare alone, medians: before the hwrepo phase {medians(bare.before)}; after it "
        f"{medians(bare.after)}"
        + (
            ""
            if bare.at_once is None
            else f"; {bare.at_once[0]} bare jobs {bare.at_once[1]} at a time took "
            f"{bare.at_once[2]:.1f} s"
        )
    )

    group = outcome.workers_group
    workers_jobs = None if group is None else group - outcome.workers_own
    hwrepo_side = [
        outcome.workers_own,
        outcome.api_cpu,
        outcome.s3_cpu,
        outcome.nats_cpu,
        outcome.bench_cpu,
    ]
    ours = None if workers_jobs is None else workers_jobs + sum(hwrepo_side)
    per_job: dict[str, float | None] = {
        "bare job (cocotb's runner, its processes)": bare_cpu * n,
        "hwrepo jobs: everything the workers started (sandbox, cocotb, Icarus)": workers_jobs,
        "the worker processes themselves (hwrepo's Python)": outcome.workers_own,
        "the API process (uvicorn: outbox relay, recorder)": outcome.api_cpu,
        "the S3 server": outcome.s3_cpu,
        "nats-server": outcome.nats_cpu,
        "this benchmark (event consumer, polling)": outcome.bench_cpu,
        "all of the above but the bare job": ours,
        "the machine, every process": outcome.machine_s,
        "others: the machine less the above": None if ours is None else outcome.machine_s - ours,
        "  of which kernel threads": outcome.elsewhere.kernel_threads_s,
        "  of which other processes (running throughout)": outcome.elsewhere.other_processes_s,
        "(stolen by the hypervisor, not in the machine's)": outcome.elsewhere.steal_s,
    }
    rows = [
        [
            label,
            "—" if total is None else f"{total / n:.3f}",
            "—" if total is None else f"{total / n / bare_cpu:.2f}",
        ]
        for label, total in per_job.items()
    ]
    print_table(
        ["CPU per finished job", "s", "÷ bare"],
        rows,
        title=f"CPU seconds per finished job over {outcome.interval_s:.1f} s from the workers' "
        f"start ({cores()} cores: {cores() * outcome.interval_s:.0f} s to give); of the "
        "workers' own, their start-up until ready: "
        + ", ".join(f"{c:.2f} s" for c in outcome.workers_start_cpu)
        + (
            ""
            if group is not None
            else "; the jobs' CPU is not measured here (no cgroup v1 cpuacct group can be made)"
        ),
    )

    if ours is not None and ours > 0:
        bound = cores() * 60.0 * n / ours
        print(
            f"at the CPU hwrepo's side used per job, {cores()} cores alone would give "
            f"{bound:.1f} jobs/min ({bound / allowed:.2f} of what the CPU allows the bare job); "
            f"the machine was busy {outcome.machine_s / (cores() * outcome.interval_s):.0%} "
            "of the time"
        )
    if outcome.elsewhere.top:
        print(
            "other processes using the CPU meanwhile (s): "
            + ", ".join(f"{name} {cpu:.1f}" for name, cpu in outcome.elsewhere.top)
        )

    running = outcome.running_s()
    gaps = outcome.gaps_s()
    attempts = len(outcome.started) - len({e.data["check_id"] for e in outcome.started})
    final = outcome.checks or Recorded()
    steps = ", ".join(
        f"{key.removesuffix('_s')} {seconds(median(values))}"
        for key, values in sorted(final.timings.items())
    )
    print(
        f"\none job, started → finished by the worker's clock: median {seconds(median(running))} "
        f"s (bare wall {seconds(bare_wall)} s), max {seconds(max(running) if running else None)} "
        f"s; the kind's steps (medians, s): {steps or '—'}; sandboxed process "
        f"{seconds(median(final.sandbox_s))} s"
    )
    print(
        f"a worker's job finished → its next started: median {seconds(median(gaps), 3)} s, max "
        f"{seconds(max(gaps) if gaps else None, 3)} s; the {slots} slots held a job "
        f"{outcome.slot_busy(slots) if complete else 0:.0%} of the span"
        + (f"; {attempts} job(s) started more than once" if attempts else "")
        + (
            f"; {final.envs_built} job(s) built their Python environment"
            if final.envs_built
            else "; every job took its Python environment from the cache"
        )
    )
    event_states = Counter(str(e.data.get("state")) for e in outcome.finished)
    print(
        "states (check.finished): "
        + ", ".join(f"{k} {v}" for k, v in sorted(event_states.items()))
        + "; in the API: "
        + ", ".join(f"{k} {v}" for k, v in sorted(final.states.items()))
    )
    if final.not_passed:
        print("not passed:\n  " + "\n  ".join(final.not_passed))


if __name__ == "__main__":
    run_benchmark(main)
