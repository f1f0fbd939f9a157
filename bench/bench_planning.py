"""Planning: from the upload's answer to the first `check.queued` of the revision.

Designs without a hwrepo.toml (designs/rtl-counter, rtl-axis-fifo, rtl-lint-findings,
kicad-clean, kicad-violations) are uploaded in turn through the API, one upload at a time, each
to its own project. For each upload:

  answered   the client's clock when the API's 201 arrived (`time.time()`);
  created    the JetStream stored timestamp of its `revision.created` (the outbox relay);
  queued     the JetStream stored timestamp of its first `check.queued` (the planner).

Both timestamps come from an ordered consumer on hwrepo.events.> and are the nats-server's
clock, which is this machine's clock. The worker here runs the planner only (it takes no job
kind), so no check's tool competes with the planner for the CPU; `--with-jobs` adds a worker
taking every kind this machine can run, as `hwrepo up` does.

The bare counterpart: each kind's `plan()` on a LocalRevision of the same directory, in this
process (what planning itself costs, without events, database or S3).

    .venv/bin/python bench/bench_planning.py [--uploads 40]
"""

from __future__ import annotations

import argparse
import time

from common import (
    DESIGNS,
    EventClock,
    Stack,
    handle_termination,
    machine_line,
    median,
    percentile,
    print_table,
    run_benchmark,
    timed,
    upload_dir,
)

from hwrepo.checks.core.local import LocalRevision
from hwrepo.checks.registry import all_kinds

DEFAULT_DESIGNS = ["rtl-counter", "rtl-axis-fifo", "rtl-lint-findings", "kicad-clean"]
TARGET_MS = 100.0


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=40, help="uploads in all (≥ 40)")
    parser.add_argument("--designs", nargs="+", default=DEFAULT_DESIGNS, metavar="NAME")
    parser.add_argument(
        "--with-jobs",
        action="store_true",
        help="a worker that also takes every kind this machine can run (concurrency 1)",
    )
    parser.add_argument(
        "--pause-s", type=float, default=0.2, help="between one upload's check.queued and the next"
    )
    args = parser.parse_args(argv)
    handle_termination()
    started = time.monotonic()
    print(machine_line())
    for name in args.designs:
        if (DESIGNS / name / "hwrepo.toml").exists():
            raise SystemExit(f"{name} has a hwrepo.toml; this benchmark is for designs without")

    kinds = [k for k in all_kinds() if k.available() is None]
    plan_walls: dict[str, list[float]] = {}
    for name in args.designs:
        for _ in range(5):
            revision = LocalRevision(root=DESIGNS / name, project=f"bench/{name}")
            wall, _ = timed(lambda revision=revision: [k.plan(revision) for k in kinds])
            plan_walls.setdefault(name, []).append(wall)

    taken = [k.name for k in kinds] if args.with_jobs else []
    rows: list[tuple[str, float, float, float]] = []  # design, upload, ->created, ->queued
    with (
        Stack() as stack,
        stack.pipeline(taken) as pipe,
        EventClock(pipe.settings.nats_urls[0]) as clock,
    ):
        projects = {name: pipe.project(f"plan-{name}") for name in args.designs}
        for i in range(args.uploads):
            name = args.designs[i % len(args.designs)]
            project = projects[name]
            t0 = time.perf_counter()
            rev = upload_dir(pipe.client, pipe.headers, project, DESIGNS / name)
            answered = time.time()
            upload_s = time.perf_counter() - t0
            number = rev["number"]
            created = clock.first("revision.created", project, number)
            queued = clock.first("check.queued", project, number)
            rows.append((name, upload_s, created.stored - answered, queued.stored - answered))
            time.sleep(args.pause_s)

    print(f"\n{len(rows)} uploads of {', '.join(args.designs)}; at the end: {machine_line()}")
    table = []
    for name in [*args.designs, "all"]:
        picked = [r for r in rows if name in ("all", r[0])]
        queued = [r[3] for r in picked]
        created = [r[2] for r in picked]
        plans = [w for n, ws in plan_walls.items() if name in ("all", n) for w in ws]
        table.append(
            [
                name,
                str(len(picked)),
                ms(median([r[1] for r in picked])),
                ms(median(created)),
                ms(percentile(queued, 50)),
                ms(percentile(queued, 90)),
                ms(max(queued) if queued else None),
                ms(median(plans)),
                "yes" if queued and percentile(queued, 90) <= TARGET_MS / 1000 else "no",  # type: ignore[operator]
            ]
        )
    print_table(
        [
            "design",
            "uploads",
            "upload ms",
            "→created ms",
            "→queued p50",
            "p90",
            "max",
            "plan() ms",
            f"p90 ≤ {TARGET_MS:.0f} ms",
        ],
        table,
        title="Upload answered → stored events (ms). upload: the request itself; →created: "
        "revision.created stored (outbox relay); →queued: first check.queued stored (planner); "
        "plan(): every available kind's plan() of the same directory in this process (median "
        "of 5), the bare counterpart",
    )
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    run_benchmark(main)
