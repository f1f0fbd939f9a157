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
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
from common import (
    DESIGNS,
    EventClock,
    Stack,
    api_process,
    handle_termination,
    machine_line,
    percentile,
    print_table,
)

from hwrepo.config import default_concurrency

DESIGN = "rtl-lint-findings"
TARGET_START_MS = 100.0
TARGET_READ_MS = 50.0
TARGET_CPU = 3.0


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.0f}"


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
    for u in uploads:
        u.queued = clock.first("check.queued", u.project, u.number, timeout_s=120).stored
        u.started = clock.first("check.started", u.project, u.number, timeout_s=600).stored
    return uploads, sent_s


async def read_load(
    url: str, headers: dict[str, str], path: str, clients: int, reads: int
) -> tuple[list[float], int, float]:
    """`reads` GETs of `path` by `clients` concurrent clients; (latencies, errors, wall)."""
    latencies: list[float] = []
    errors = 0
    left = reads
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=30, limits=limits
    ) as client:

        async def worker() -> None:
            nonlocal left, errors
            while left > 0:
                left -= 1
                t0 = time.perf_counter()
                try:
                    r = await client.get(path)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                errors += not ok

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
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
    parser.add_argument("--reads", type=int, default=1000, help="requests per endpoint")
    parser.add_argument("--skip-events", action="store_true", help="only the API reads")
    args = parser.parse_args(argv)
    handle_termination()
    started = time.monotonic()
    concurrency = args.concurrency or default_concurrency()
    print(machine_line({"worker concurrency": str(concurrency)}))
    uploads: list[Upload] = []
    sent_s = 0.0
    reads: dict[str, tuple[list[float], int, float, float]] = {}
    with (
        Stack() as stack,
        stack.pipeline(args.kinds, concurrency=concurrency) as pipe,
        EventClock(pipe.settings.nats_urls[0]) as clock,
        api_process(pipe.settings) as api,
    ):
        if not args.skip_events:
            uploads, sent_s = event_latency(
                api.url, pipe.headers, pipe.owner, clock, args.revisions, args.rate
            )
            print(f"  {len(uploads)} uploads sent in {sent_s:.1f} s", flush=True)
            # the worker must be idle before the reads: wait for every check to be final
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                finished = sum(e.type == "check.finished" for e in clock.events)
                queued = sum(e.type == "check.queued" for e in clock.events)
                if finished >= queued:
                    break
                time.sleep(0.5)
        else:
            project = pipe.project("reads")
            r = pipe.client.post(
                f"/api/v1/projects/{project}/revisions",
                files=upload_files(DESIGNS / DESIGN),
                headers=pipe.headers,
            )
            r.raise_for_status()
            uploads = [Upload(project, int(r.json()["number"]), 0.0, 0.0)]
        some = uploads[len(uploads) // 2]
        paths = {
            "/healthz": "/healthz",
            "project list": "/api/v1/projects",
            "a revision": f"/api/v1/projects/{some.project}/revisions/{some.number}",
            "its checks": f"/api/v1/projects/{some.project}/revisions/{some.number}/checks",
        }
        read_headers = {"Authorization": pipe.headers["Authorization"]}
        for label, path in paths.items():
            asyncio.run(read_load(api.url, read_headers, path, 5, 50))  # warm up
            cpu0 = api.cpu_s()
            latencies, errors, wall = asyncio.run(
                read_load(api.url, read_headers, path, args.clients, args.reads)
            )
            cpu = (api.cpu_s() - cpu0) / max(len(latencies), 1)
            reads[label] = (latencies, errors, wall, cpu)
            print(
                f"  {label}: p50 {ms(percentile(latencies, 50))} ms, "
                f"p99 {ms(percentile(latencies, 99))} ms, {errors} errors",
                flush=True,
            )
        load_after = machine_line()

    if uploads and not args.skip_events:
        to_queued = [u.queued - u.answered for u in uploads if u.queued is not None]
        to_started = [u.started - u.answered for u in uploads if u.started is not None]
        late = [u.answered - u.scheduled for u in uploads]
        rows = []
        for label, values in (
            ("upload answered → first check.queued", to_queued),
            ("upload answered → first check.started", to_started),
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
        print_table(
            ["", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"],
            rows,
            title=f"{len(uploads)} revisions at {args.rate:g}/s (sent in {sent_s:.1f} s), "
            f"worker taking {', '.join(args.kinds)} at concurrency {concurrency}; target: "
            f"p99 to the first job started ≤ {TARGET_START_MS:.0f} ms",
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

    health_cpu = reads["/healthz"][3] if "/healthz" in reads else None
    rows = []
    for label, (latencies, errors, wall, cpu) in reads.items():
        p99 = percentile(latencies, 99)
        cpu_ratio = cpu / health_cpu if health_cpu else None
        met = (
            p99 is not None
            and p99 <= TARGET_READ_MS / 1000
            and errors == 0
            and (cpu_ratio is None or cpu_ratio <= TARGET_CPU)
        )
        rows.append(
            [
                label,
                str(len(latencies)),
                str(errors),
                f"{len(latencies) / wall:.0f}",
                ms(percentile(latencies, 50)),
                ms(p99),
                f"{cpu * 1000:.1f}",
                "—" if cpu_ratio is None else f"{cpu_ratio:.1f}x",
                "yes" if met else "no",
            ]
        )
    print_table(
        [
            "endpoint",
            "requests",
            "errors",
            "req/s",
            "p50 ms",
            "p99 ms",
            "API CPU ms/req",
            "CPU/healthz",
            "targets met",
        ],
        rows,
        title=f"API reads, {args.clients} concurrent clients; targets: p99 ≤ "
        f"{TARGET_READ_MS:.0f} ms, 0 errors, CPU per request ≤ {TARGET_CPU:g}x /healthz",
    )
    print(f"\nat the end: {load_after}\ntotal {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        sys.exit(130)
