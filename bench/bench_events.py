"""Events and API reads under load, on hwrepo's API served by uvicorn in a process of its own.

1. Event latency. `--revisions` uploads (default 200) at `--rate` revisions per second (default
   10), each a new project holding designs/rtl-lint-findings (two small Verilog files: one
   rtl-lint and one rtl-structure job; no other kind plans anything for it), sent on schedule by
   a pool of client threads whatever the previous ones are doing. A worker in this process takes
   `--kinds` (default both RTL kinds) at `--concurrency` jobs at once (default: hwrepo's default
   for this machine). For each upload: upload answered (the client's clock at the 201) → the
   JetStream stored timestamp of its first `check.queued` and of its first `check.started`
   (an ordered consumer on hwrepo.events.>). Target (issue 14): p99 ≤ 100 ms to the first job
   started. The work the jobs need is also printed against what two cores can do: when jobs
   arrive faster than the worker finishes them, the wait is the queue's, not the events'.
2. API reads under `--clients` concurrent clients (default 50, httpx on one event loop in this
   process, keep-alive connections): the project list, one revision, its checks and /healthz,
   each for `--reads` requests (default 1000) after the worker has nothing left to do. Per
   endpoint: p50/p99 latency, errors, requests per second, and the API process's CPU seconds per
   request (from /proc) against /healthz's. Targets (issue 14): p99 ≤ 50 ms, no errors, CPU per
   request ≤ 3 times /healthz's.

The load generator runs on the same two cores as the API and takes CPU of its own.

    .venv/bin/python bench/bench_events.py [--revisions 200] [--rate 10] [--reads 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
import httpx
from common import (
    DESIGNS,
    ApiProcess,
    EventClock,
    Stack,
    api_process,
    handle_termination,
    machine_line,
    percentile,
    print_table,
    run_benchmark,
)

from hwrepo.config import default_concurrency

DESIGN = "rtl-lint-findings"
TARGET_START_MS = 100.0
TARGET_READ_MS = 50.0
TARGET_CPU = 3.0


def ms(value: float | None) -> str:
    if value is None:
        return "—"
    return "inf" if value == float("inf") else f"{value * 1000:.0f}"


@dataclass
class Upload:
    project: str
    number: int
    scheduled: float  # epoch
    answered: float  # epoch
    queued: float | None = None  # stored timestamps, epoch
    started: float | None = None


def _seconds(start: str | None, end: str | None) -> float:
    if not start or not end:
        return 0.0
    parse = datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def upload_files(root: Path) -> list[tuple[str, tuple[str, bytes]]]:
    return [
        ("files", (p.relative_to(root).as_posix(), p.read_bytes()))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    ]


def event_latency(
    url: str,
    headers: dict[str, str],
    owner: str,
    clock: EventClock,
    revisions: int,
    rate: float,
    wait_s: float,
) -> tuple[list[Upload], float]:
    files = upload_files(DESIGNS / DESIGN)
    local = threading.local()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, headers=headers, timeout=60)
        return local.client  # type: ignore[no-any-return]

    names = [f"ev-{i:03d}" for i in range(revisions)]
    with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
        for name in names:
            r = c.post(
                "/api/v1/projects",
                json={"name": name, "kind": "hardware", "licence": "CERN-OHL-P-2.0"},
            )
            r.raise_for_status()

    def one(i: int, at: float) -> Upload:
        delay = at - time.time()
        if delay > 0:
            time.sleep(delay)
        project = f"{owner}/{names[i]}"
        r = client().post(f"/api/v1/projects/{project}/revisions", files=files)
        answered = time.time()
        if r.status_code != 201:
            raise RuntimeError(f"upload {i}: {r.status_code} {r.text[:200]}")
        return Upload(project, int(r.json()["number"]), at, answered)

    start = time.time() + 0.5
    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(one, i, start + i / rate) for i in range(revisions)]
        uploads = [f.result() for f in futures]
    sent_s = max(u.answered for u in uploads) - start
    deadline = time.monotonic() + wait_s
    for u in uploads:
        with contextlib.suppress(TimeoutError):
            left = max(deadline - time.monotonic(), 0.01)
            u.queued = clock.first("check.queued", u.project, u.number, timeout_s=left).stored
            left = max(deadline - time.monotonic(), 0.01)
            u.started = clock.first("check.started", u.project, u.number, timeout_s=left).stored
    return uploads, sent_s


def seed(
    url: str, headers: dict[str, str], owner: str, clock: EventClock, count: int
) -> list[Upload]:
    """`count` projects with one revision each, their checks final: what the reads read."""
    files = upload_files(DESIGNS / DESIGN)
    uploads = []
    with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
        for i in range(count):
            name = f"read-{i:03d}"
            c.post(
                "/api/v1/projects",
                json={"name": name, "kind": "hardware", "licence": "CERN-OHL-P-2.0"},
            ).raise_for_status()
            r = c.post(f"/api/v1/projects/{owner}/{name}/revisions", files=files)
            r.raise_for_status()
            uploads.append(Upload(f"{owner}/{name}", int(r.json()["number"]), 0.0, time.time()))
    for u in uploads:
        queued = sum(
            1
            for e in [clock.first("revision.planned", u.project, u.number, timeout_s=120)]
            for _ in range(int(e.data.get("checks") or 0))
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            done = [
                e
                for e in clock.events
                if e.type == "check.finished" and e.project == u.project and e.revision == u.number
            ]
            if len(done) >= queued:
                break
            time.sleep(0.2)
    return uploads


@dataclass
class ReadRun:
    latencies: list[float]
    errors: list[str]
    wall: float
    cpu: float  # API CPU seconds per request
    client_cpu: float  # the load generator's
    alone: float | None  # p50 of one client alone


def run_reads(
    url: str,
    headers: dict[str, str],
    path: str,
    clients: int,
    reads: int,
    rate: float | None = None,
) -> tuple[list[float], list[str], float, float]:
    """read_load in a process of its own (the load generator's CPU is not the benchmark's);
    also the CPU seconds the generator used."""
    cpu0 = time.process_time()
    latencies, errors, wall = asyncio.run(read_load(url, headers, path, clients, reads, rate))
    return latencies, errors, wall, time.process_time() - cpu0


def start_profile(
    api: ApiProcess, directory: Path | None, label: str
) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the API process while one endpoint is read (`--profile DIR`)."""
    if directory is None:
        return None
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / (re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") + ".txt")
    proc = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(api.proc.pid),
            "--format",
            "raw",
            "--rate",
            "200",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # py-spy attaches
    return proc


IDLE = ("threading.py", "queue.py", "selectors.py", "base_events.py:1")
PACKAGES = ("sqlalchemy", "pydantic", "fastapi", "starlette", "uvicorn", "anyio", "json")


def profile_summary(path: Path, top: int = 12) -> list[tuple[str, float]]:
    """From py-spy's raw (collapsed) stacks, leaving out threads waiting (a leaf in threading,
    queue or the event loop's select): the share of busy samples in which each package, and each
    of hwrepo's functions, appears (inclusive)."""
    counts: dict[str, int] = {}
    busy = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")
        if any(idle in frames[-1] for idle in IDLE):
            continue
        busy += int(n)
        seen: set[str] = set()
        for frame in frames:
            for package in PACKAGES:
                if f"({package}/" in frame or f"/{package}/" in frame:
                    seen.add(f"[{package}]")
            if "(hwrepo/" in frame:
                seen.add(re.sub(r":\d+\)$", ")", frame))
        for name in seen:
            counts[name] = counts.get(name, 0) + int(n)
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    return [(name, k / busy) for name, k in ranked[:top]] if busy else []


def stop_profile(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def read_load(
    url: str, headers: dict[str, str], path: str, clients: int, reads: int, rate: float | None
) -> tuple[list[float], list[str], float]:
    """`reads` GETs of `path` by `clients` concurrent keep-alive clients; (latencies, what each
    failed request got, wall). Without a `rate` each client asks again as soon as it has its
    answer (closed loop: the latency is then the queue that many clients make); with one, the
    requests are sent at `rate` per second in all, each at its scheduled time by whichever
    client is free, and a latency counts from that time (open loop: a slow answer cannot hold
    back the requests after it). aiohttp, for a generator that needs little CPU per request."""
    latencies: list[float] = []
    errors: list[str] = []
    sent = 0
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        base_url=url, headers=headers, connector=connector, timeout=timeout
    ) as session:
        t0 = time.perf_counter()

        async def client() -> None:
            nonlocal sent
            while sent < reads:
                scheduled = None
                if rate:
                    scheduled = t0 + sent / rate
                    sent += 1
                    await asyncio.sleep(max(scheduled - time.perf_counter(), 0))
                else:
                    sent += 1
                start = scheduled if scheduled is not None else time.perf_counter()
                failure = None
                try:
                    async with session.get(path) as r:
                        await r.read()
                        if r.status != 200:
                            failure = f"HTTP {r.status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    failure = type(exc).__name__
                latencies.append(time.perf_counter() - start)
                if failure is not None:
                    errors.append(failure)

        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - t0
    return latencies, errors, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--revisions", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="revisions per second")
    parser.add_argument("--kinds", nargs="+", default=["rtl-lint", "rtl-structure"])
    parser.add_argument(
        "--concurrency", type=int, default=None, help="jobs at once (default: hwrepo's)"
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument(
        "--reads", type=int, default=1000, help="requests per endpoint and load pattern"
    )
    parser.add_argument(
        "--read-cache-mib",
        type=float,
        default=None,
        help="the API's read_cache_mib setting (0: every read computed afresh; default hwrepo's)",
    )
    parser.add_argument(
        "--read-rate",
        type=float,
        default=100.0,
        help="requests per second in all, for the fixed-rate (open loop) reads",
    )
    parser.add_argument("--skip-events", action="store_true", help="only the API reads")
    parser.add_argument("--skip-reads", action="store_true", help="only the event latency")
    parser.add_argument(
        "--wait-s",
        type=float,
        default=90.0,
        help="after the last upload, how long to wait for first jobs to start (a revision "
        "whose job has not started by then counts as not started)",
    )
    parser.add_argument(
        "--seed", type=int, default=10, help="projects with a revision, read by the reads"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="sample the API process with py-spy during each endpoint's reads, into DIR",
    )
    args = parser.parse_args(argv)
    handle_termination()
    started = time.monotonic()
    concurrency = args.concurrency or default_concurrency()
    print(machine_line({"worker concurrency": str(concurrency)}))
    uploads: list[Upload] = []
    load_events = ""
    sent_s = 0.0
    reads: dict[tuple[str, str], ReadRun] = {}
    with (
        Stack() as stack,
        stack.pipeline(args.kinds, concurrency=concurrency) as pipe,
        EventClock(pipe.settings.nats_urls[0]) as clock,
        api_process(
            pipe.settings
            if args.read_cache_mib is None
            else pipe.settings.model_copy(update={"read_cache_mib": args.read_cache_mib})
        ) as api,
    ):
        # The reads first, while the worker is idle: a few revisions to read, checks final
        # (not seeded for the events alone: their checks may be of kinds not taken).
        paths: dict[str, str] = {}
        if not args.skip_reads:
            seeded = seed(api.url, pipe.headers, pipe.owner, clock, args.seed)
            some = seeded[len(seeded) // 2]
            at = f"/api/v1/projects/{some.project}/revisions/{some.number}"
            paths = {
                "/healthz": "/healthz",
                "project list": "/api/v1/projects",
                "a revision": at,
                "its checks": f"{at}/checks",
            }
        read_headers = {"Authorization": pipe.headers["Authorization"]}
        load_reads = machine_line()
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as generator:
            for label, path in paths.items():
                alone = generator.submit(run_reads, api.url, read_headers, path, 1, 50).result()
                for loop, rate in (("closed", None), ("open", args.read_rate)):
                    profiler = start_profile(api, args.profile, label) if loop == "open" else None
                    cpu0 = api.cpu_s()
                    latencies, errors, wall, client_cpu = generator.submit(
                        run_reads, api.url, read_headers, path, args.clients, args.reads, rate
                    ).result()
                    cpu = (api.cpu_s() - cpu0) / max(len(latencies), 1)
                    stop_profile(profiler)
                    reads[(label, loop)] = ReadRun(
                        latencies,
                        errors,
                        wall,
                        cpu,
                        client_cpu / max(len(latencies), 1),
                        percentile(alone[0], 50),
                    )
                    print(
                        f"  {label}, {loop} loop: p50 {ms(percentile(latencies, 50))} ms, "
                        f"p99 {ms(percentile(latencies, 99))} ms, {len(errors)} errors"
                        + (f" ({', '.join(sorted(set(errors)))})" if errors else ""),
                        flush=True,
                    )
        if not args.skip_events:
            load_events = machine_line()
            uploads, sent_s = event_latency(
                api.url, pipe.headers, pipe.owner, clock, args.revisions, args.rate, args.wait_s
            )
            print(f"  {len(uploads)} uploads sent in {sent_s:.1f} s", flush=True)
        load_after = machine_line()
    if uploads and not args.skip_events:
        to_queued = [u.queued - u.answered for u in uploads if u.queued is not None]
        to_started = [u.started - u.answered for u in uploads if u.started is not None]
        never = len(uploads) - len(to_started)
        # a revision whose first job never started within --wait-s counts as infinitely late
        with_never = to_started + [float("inf")] * never
        late = [u.answered - u.scheduled for u in uploads]
        rows = []
        for label, values in (
            ("upload answered → first check.queued", to_queued),
            ("upload answered → first check.started", with_never),
            ("(upload answered minus its scheduled time)", late),
        ):
            rows.append(
                [
                    label,
                    str(len(values)),
                    ms(percentile(values, 50)),
                    ms(percentile(values, 90)),
                    ms(percentile(values, 99)),
                    ms(max(values) if values else None),
                ]
            )
        print(f"\nevents phase started at: {load_events}")
        print_table(
            ["", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"],
            rows,
            title=f"{len(uploads)} revisions at {args.rate:g}/s (sent in {sent_s:.1f} s), "
            f"worker taking {', '.join(args.kinds)} at concurrency {concurrency}; target: "
            f"p99 to the first job started ≤ {TARGET_START_MS:.0f} ms"
            + (
                f"; {never} revision(s) had no job started within {args.wait_s:g} s (inf)"
                if never
                else ""
            ),
        )
        finished = [e for e in clock.events if e.type == "check.finished"]
        work = [_seconds(e.data.get("started"), e.data.get("finished")) for e in finished]
        if finished:
            span = max(e.stored for e in finished) - min(u.answered for u in uploads)
            print(
                f"jobs: {len(finished)} finished in {span:.1f} s after the first upload "
                f"({len(finished) / span:.1f}/s); jobs arrived at "
                f"{len(finished) / max(sent_s, 0.1):.1f}/s"
                + (f"; job time summed {sum(work):.1f} s" if any(work) else "")
            )

    rows = []
    for (label, loop), run in reads.items():
        p99 = percentile(run.latencies, 99)
        health = reads.get(("/healthz", loop))  # /healthz under the same load pattern
        cpu_ratio = run.cpu / health.cpu if health else None
        met = (
            p99 is not None
            and p99 <= TARGET_READ_MS / 1000
            and not run.errors
            and (cpu_ratio is None or cpu_ratio <= TARGET_CPU)
        )
        rows.append(
            [
                label,
                "closed" if loop == "closed" else f"{args.read_rate:g}/s",
                str(len(run.latencies)),
                str(len(run.errors)),
                f"{len(run.latencies) / run.wall:.0f}",
                ms(run.alone),
                ms(percentile(run.latencies, 50)),
                ms(p99),
                f"{run.cpu * 1000:.2f}",
                "—" if cpu_ratio is None else f"{cpu_ratio:.1f}x",
                f"{run.client_cpu * 1000:.2f}",
                ("yes" if met else "no") if loop == "open" else "(capacity)",
            ]
        )
    if rows:
        print_table(
            [
                "endpoint",
                "load",
                "requests",
                "errors",
                "req/s",
                "1 client p50",
                "p50 ms",
                "p99 ms",
                "API CPU ms/req",
                "CPU/healthz (same load)",
                "client CPU ms/req",
                "targets met",
            ],
            rows,
            title=f"API reads, {args.clients} concurrent keep-alive clients; closed: each asks "
            f"again at once; {args.read_rate:g}/s: requests sent at that rate in all; targets "
            f"(at the fixed rate): p99 ≤ {TARGET_READ_MS:.0f} ms, 0 errors, CPU per request ≤ "
            f"{TARGET_CPU:g}x /healthz's",
        )
        print(f"reads started at: {load_reads}")
    if args.profile is not None:
        for path in sorted(args.profile.glob("*.txt")):
            print_table(
                ["function (file:line)", "share of samples"],
                [[name[:110], f"{share:.0%}"] for name, share in profile_summary(path)],
                title=f"py-spy, API process, {path.stem}: share of busy samples (inclusive; "
                "[package]: any frame of that package)",
            )
    print(f"\nat the end: {load_after}\ntotal {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    run_benchmark(main)
