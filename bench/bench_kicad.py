"""KiCad DRC and ERC: the bare kicad-cli, the check kind alone, and hwrepo end to end.

For each board, in the same run and interleaved round by round (so that a busy machine slows all
three alike):

  bare   `kicad-cli pcb drc --format json --severity-all --schematic-parity` or
         `kicad-cli sch erc --format json --severity-all`, in the project's directory, with a
         fresh HOME each time holding KiCad's stock library tables in its KiCad configuration
         (what hwrepo gives each job; the ratios are against this), and once more in the first
         round with an empty HOME, for comparison: there kicad-cli's DRC has no footprint
         library table and its ERC no symbol library table (it copies only the footprint
         table), so on boards that use KiCad's standard libraries they report
         `lib_footprint_issues` / `lib_symbol_issues` that the other two do not;
  kind   `DrcKind().run` / `ErcKind().run` on a job planned from a LocalRevision of the same
         directory, in a fresh workspace (only `run()` is timed);
  e2e    the directory uploaded through the API as a new revision, until the check is final in
         the API (upload → outbox relay → planner → work queue → worker → results stored →
         check.finished → recorder → API).

The end-to-end phase of each check kind runs on its own work queue with a worker taking only that
kind, so a DRC is never waiting behind an ERC of the same upload. With --default-worker, each
board is then uploaded once more to a single worker taking every kind this machine can run, at
concurrency 1 (what `hwrepo up` starts); that phase is outside --budget-s (about a minute more).

    .venv/bin/python bench/bench_kicad.py [--repeat 3] [--boards kicad-clean "sonde xilinx"]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    DESIGNS,
    E2E,
    Pipeline,
    Stack,
    handle_termination,
    machine_line,
    median,
    print_table,
    ratio,
    run_benchmark,
    seconds,
    start_costs,
    timed,
)

from hwrepo.checks.core.kind import CheckKind, Workspace
from hwrepo.checks.core.local import LocalRevision
from hwrepo.checks.kicad import designs as kicad_designs
from hwrepo.checks.kicad import kind as kicad
from hwrepo.checks.kicad.drc import DrcKind
from hwrepo.checks.kicad.erc import ErcKind
from hwrepo.checks.registry import all_kinds
from hwrepo.checks.run.runner import JOB_ROOT, Sandbox, python_env

DEMOS = Path("/usr/share/kicad/demos")
# Demo boards whose DRC takes 0.5-5 s here; vme-wren (a 70 MB board, DRC > 2 min) is left out.
DEFAULT_BOARDS = [
    "kicad-clean",
    "kicad-violations",
    "pic_programmer",
    "complex_hierarchy",
    "sonde xilinx",
    "kit-dev-coldfire-xilinx_5213",
]
TOO_SLOW = {"vme-wren"}
CHECKS = ("drc", "erc")
TOOL_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Board:
    label: str
    source: Path  # the project's directory
    stem: str  # the project's name: <stem>.kicad_pro, .kicad_sch, .kicad_pcb

    @property
    def project_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.label).strip("-.") or "board"

    def file(self, check: str) -> str:
        return self.stem + (".kicad_pcb" if check == "drc" else ".kicad_sch")


def resolve_board(name: str) -> Board:
    """A directory of designs/ or of KiCad's demos, or a path to a project directory."""
    if name in TOO_SLOW:
        raise SystemExit(f"{name}: its DRC takes minutes; it is not part of this benchmark")
    for candidate in (DESIGNS / name, DEMOS / name, Path(name)):
        if candidate.is_dir():
            directory = candidate.resolve()
            break
    else:
        raise SystemExit(f"{name}: no such directory in {DESIGNS}, {DEMOS} or here")
    projects = sorted(directory.glob("*.kicad_pro"))
    with_both = [
        p
        for p in projects
        if p.with_suffix(".kicad_pcb").is_file() and p.with_suffix(".kicad_sch").is_file()
    ]
    if not with_both:
        raise SystemExit(f"{directory}: no project with both a board and a schematic")
    chosen = next((p for p in with_both if p.stem == directory.name), with_both[0])
    return Board(
        label=name if not Path(name).is_absolute() else directory.name,
        source=directory,
        stem=chosen.stem,
    )


@dataclass(frozen=True)
class KicadSetup:
    cli: str
    version: str  # "9.0.8"
    templates: Path  # KiCad's stock sym-lib-table and fp-lib-table

    @property
    def series(self) -> str:
        return ".".join(self.version.split(".")[:2])


@dataclass
class Row:
    board: Board
    check: str
    bare: list[float] = field(default_factory=list)  # fresh HOME with the stock tables
    bare_empty: list[float] = field(default_factory=list)  # fresh empty HOME
    sandboxed: list[float] = field(default_factory=list)  # the bare command in a job's sandbox
    kind: list[float] = field(default_factory=list)
    kind_tool: list[float] = field(default_factory=list)  # kicad-cli's wall inside the kind
    e2e: list[E2E] = field(default_factory=list)
    e2e_tool: list[float] = field(default_factory=list)  # kicad-cli's wall inside the worker
    findings: dict[str, set[int]] = field(default_factory=dict)  # per variant
    plan_s: float | None = None

    def found(self, variant: str, count: int) -> None:
        self.findings.setdefault(variant, set()).add(count)

    def findings_text(self, variant: str) -> str:
        return "/".join(str(n) for n in sorted(self.findings.get(variant, set()))) or "n/a"


# -- the three measurements ----------------------------------------------------------------------


def findings(report: Path, check: str) -> int:
    """How many entries a kicad-cli JSON report holds (excluded ones too)."""
    data = json.loads(report.read_text())
    if check == "drc":
        sections = ("violations", "unconnected_items", "schematic_parity")
        return sum(len(data.get(k) or []) for k in sections)
    return sum(len(sheet.get("violations") or []) for sheet in data.get("sheets") or [])


def bare_run(
    setup: KicadSetup, board: Path, check: str, stem: str, scratch: Path, *, libs: bool
) -> tuple[float, int]:
    """One kicad-cli run as a person would type it, with a fresh HOME: empty, or (`libs`) with
    KiCad's stock library tables in its configuration; (wall, findings)."""
    home = Path(tempfile.mkdtemp(prefix="home-", dir=scratch))
    if libs:
        config = home / ".config" / "kicad" / setup.series
        config.mkdir(parents=True)
        for table in kicad_designs.LIBRARY_TABLES:
            shutil.copyfile(setup.templates / table, config / table)
    report = scratch / f"bare-{check}.json"
    report.unlink(missing_ok=True)
    args = kicad_args(check, stem, str(report))
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    try:
        wall, done = timed(
            lambda: subprocess.run(
                [setup.cli, *args],
                cwd=board,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=TOOL_TIMEOUT_S,
                check=False,
            )
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if done.returncode != 0 or not report.is_file():
        tail = done.stdout.decode(errors="replace")[-500:]
        raise RuntimeError(f"kicad-cli {' '.join(args)} exited {done.returncode}: {tail}")
    return float(wall), findings(report, check)


def kicad_args(check: str, stem: str, report: str, directory: str = "") -> list[str]:
    prefix = f"{directory}/" if directory else ""
    if check == "drc":
        args = ["pcb", "drc", "--format", "json", "--severity-all", "--schematic-parity"]
        return [*args, "-o", report, prefix + stem + ".kicad_pcb"]
    args = ["sch", "erc", "--format", "json", "--severity-all"]
    return [*args, "-o", report, prefix + stem + ".kicad_sch"]


def sandboxed_run(
    setup: KicadSetup, board: Board, copy: Path, check: str, scratch: Path, n: int
) -> tuple[float, int]:
    """The bare kicad-cli command started in a job's sandbox (the board's files at /job/src,
    a HOME of its own holding the stock library tables, as the kind gives it), without
    hwrepo's Python around it; (wall of Sandbox.run, findings)."""
    ws = Workspace.from_directory(
        scratch / f"sbx-{check}-{n}",
        scratch / "kind-cache",
        {p.relative_to(copy).as_posix(): p for p in copy.rglob("*") if p.is_file()},
    )
    try:
        config = ws.tmp / "home" / ".config" / "kicad" / setup.series
        config.mkdir(parents=True)
        for table in kicad_designs.LIBRARY_TABLES:
            shutil.copyfile(setup.templates / table, config / table)
        env = {**python_env(), "HOME": str(JOB_ROOT / "tmp" / "home")}
        report = JOB_ROOT / "out" / "report.json"
        argv = [setup.cli, *kicad_args(check, board.stem, str(report), str(JOB_ROOT / "src"))]
        wall, done = timed(lambda: Sandbox(ws).run(argv, env=env))
        if done.exit_code != 0 or not (ws.out / "report.json").is_file():
            raise RuntimeError(f"sandboxed kicad-cli exited {done.exit_code}: {done.last_lines(5)}")
        return float(wall), findings(ws.out / "report.json", check)
    finally:
        ws.remove()


def make_kind(check: str) -> CheckKind:
    return DrcKind() if check == "drc" else ErcKind()


def kind_run(
    board: Board, copy: Path, check: str, scratch: Path, n: int
) -> tuple[float, float, int]:
    """The kind's run() on the job its plan() makes for this board, in a fresh workspace;
    (wall, kicad-cli's wall inside it, findings)."""
    kind = make_kind(check)
    revision = LocalRevision(root=copy, project="bench/kicad")
    planned = [j for j in kind.plan(revision) if j.name == board.file(check)]
    if len(planned) != 1:
        raise RuntimeError(f"{check} planned no job named {board.file(check)} for {board.label}")
    job = revision.job(planned[0], kind.name)
    ws = revision.workspace(job, scratch / f"ws-{check}-{n}", scratch / "kind-cache")
    try:
        wall, result = timed(lambda: kind.run(job, ws, Sandbox(ws)))
        count = findings(ws.out / "report.json", check) if result.state != "errored" else -1
    finally:
        ws.remove()
    if result.state not in {"passed", "failed"}:
        raise RuntimeError(f"{check} of {board.label} ended {result.state}: {result.summary}")
    return float(wall), float(result.details.get("wall_s") or 0.0), count


def plan_seconds(copy: Path, check: str) -> float:
    kind = make_kind(check)
    wall, _ = timed(lambda: kind.plan(LocalRevision(root=copy, project="bench/kicad")))
    return float(wall)


def e2e_run(pipe: Pipeline, board: Board, copy: Path, check: str, n: int) -> tuple[E2E, float]:
    """Upload the directory as a new revision; (timeline, kicad-cli's wall inside the job)."""
    project = pipe.project(board.project_name)
    result = pipe.upload_and_wait(
        project,
        copy,
        check,
        name=board.file(check),
        timeout_s=TOOL_TIMEOUT_S + 60,
        message=f"bench {check} {n}",
    )
    if result.state not in {"passed", "failed"}:
        raise RuntimeError(
            f"{check} of {board.label} ended {result.state}: {result.check.get('summary')}"
        )
    detail = pipe.detail(result.check["url"])
    return result, float(detail.get("details", {}).get("wall_s") or 0.0)


def measure_round(
    setup: KicadSetup, pipe: Pipeline, row: Row, copy: Path, scratch: Path, n: int
) -> None:
    board, check = row.board, row.check
    if row.plan_s is None:
        row.plan_s = plan_seconds(copy, check)
    wall, count = bare_run(setup, copy, check, board.stem, scratch, libs=True)
    row.bare.append(wall)
    row.found("bare", count)
    if n == 0:  # for the comparison of the two configurations only: once is enough
        wall, count = bare_run(setup, copy, check, board.stem, scratch, libs=False)
        row.bare_empty.append(wall)
        row.found("empty", count)
    wall, count = sandboxed_run(setup, board, copy, check, scratch, n)
    row.sandboxed.append(wall)
    row.found("sandboxed", count)
    wall, tool, count = kind_run(board, copy, check, scratch, n)
    row.kind.append(wall)
    row.kind_tool.append(tool)
    row.found("kind", count)
    e2e, tool = e2e_run(pipe, board, copy, check, n)
    row.e2e.append(e2e)
    row.e2e_tool.append(tool)
    print(
        f"  {check} {board.label} #{n + 1}: bare {row.bare[-1]:.2f} s, "
        f"sandboxed {row.sandboxed[-1]:.2f} s, kind {row.kind[-1]:.2f} s, "
        f"end-to-end {e2e.total_s:.2f} s ({e2e.state})",
        flush=True,
    )


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", "-n", type=int, default=3, help="runs of each (median)")
    parser.add_argument(
        "--boards",
        nargs="+",
        default=DEFAULT_BOARDS,
        metavar="NAME",
        help="directories of designs/ or /usr/share/kicad/demos (quote names with spaces), or "
        "paths to project directories (default: %(default)s)",
    )
    parser.add_argument("--checks", nargs="+", choices=CHECKS, default=list(CHECKS))
    parser.add_argument(
        "--budget-s",
        type=float,
        default=165.0,
        help="start no new round of measurements that would end after this many seconds (judged "
        "by the previous round); the first round always runs (default: %(default)s)",
    )
    parser.add_argument(
        "--outbox-poll-s",
        type=float,
        default=None,
        help="the API's outbox poll interval (default: hwrepo's own default)",
    )
    parser.add_argument(
        "--poll-s", type=float, default=0.05, help="how often the API is polled for the verdict"
    )
    parser.add_argument(
        "--default-worker",
        action="store_true",
        help="also upload each board once to a single worker taking every kind this machine can "
        "run, at concurrency 1 (what `hwrepo up` starts), and wait for the whole revision",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    handle_termination()
    started = time.monotonic()

    cli = kicad.kicad_cli()
    if cli is None:
        print("kicad-cli is not on PATH", file=sys.stderr)
        return 1
    # kicad_version() is cached per process, as in a worker: asked once here, before any timing.
    setup = KicadSetup(cli, kicad.kicad_version(cli), kicad.stock_dir(cli) / "template")
    boards = [resolve_board(name) for name in args.boards]
    print(machine_line({"kicad-cli": setup.version}))
    print(f"boards: {', '.join(b.label for b in boards)}; up to {args.repeat} run(s) each")

    rows = {(b.label, c): Row(b, c) for b in boards for c in args.checks}
    skipped = 0
    shared: list[tuple[Board, dict[str, E2E], float | None]] = []
    with Stack(outbox_poll_s=args.outbox_poll_s) as stack:
        scratch = stack.root / "scratch"
        scratch.mkdir()
        copies: dict[str, Path] = {}
        for board in boards:
            copy = stack.root / "boards" / board.project_name
            shutil.copytree(board.source, copy)
            copies[board.label] = copy
        # One pipeline (nats-server, bucket, database, API, worker) per check kind, all running
        # for the whole benchmark: each kind has a work queue of its own, so an end-to-end DRC
        # never waits behind the ERC of the same upload, and the rounds interleave all kinds.
        costs = start_costs(scratch, "hwrepo.checks.kicad.inside")
        with contextlib.ExitStack() as pipelines:
            pipes = {c: pipelines.enter_context(stack.pipeline([c])) for c in args.checks}
            for pipe in pipes.values():
                pipe.poll_s = args.poll_s
            last_round = 0.0
            for n in range(args.repeat):
                elapsed = time.monotonic() - started
                if n > 0 and elapsed + last_round > args.budget_s:
                    skipped = args.repeat - n
                    break
                round_start = time.monotonic()
                for board in boards:
                    for check in args.checks:
                        row = rows[(board.label, check)]
                        measure_round(setup, pipes[check], row, copies[board.label], scratch, n)
                last_round = time.monotonic() - round_start

        if args.default_worker:
            kinds = [k.name for k in all_kinds() if k.available() is None]
            print(f"one worker taking {', '.join(kinds)}:", flush=True)
            with stack.pipeline(kinds) as pipe:
                pipe.poll_s = args.poll_s
                for board in boards:
                    wanted: list[tuple[str, str | None]] = [(c, board.file(c)) for c in CHECKS]
                    found, revision_s = pipe.upload_and_wait_all(
                        pipe.project(board.project_name),
                        copies[board.label],
                        wanted,
                        whole_revision=True,
                        timeout_s=3 * TOOL_TIMEOUT_S,
                    )
                    shared.append((board, dict(zip(CHECKS, found, strict=True)), revision_s))
                    print(
                        f"  {board.label}: "
                        + ", ".join(
                            f"{c} {e.total_s:.2f} s" for c, e in zip(CHECKS, found, strict=True)
                        )
                        + f", whole revision {revision_s or 0:.2f} s",
                        flush=True,
                    )

    report(list(rows.values()), args.repeat)
    print_table(
        ["step", "wall s (median of 5)"],
        [[label, f"{value:.3f}"] for label, value in costs.items()],
        title="What a sandboxed job pays before its tool starts (each line includes the ones "
        "above it)",
    )
    if shared:
        report_shared(shared, rows)
    print(f"\ntotal {time.monotonic() - started:.0f} s", end="")
    if skipped:
        print(f"; {skipped} round(s) left out to stay within --budget-s {args.budget_s:.0f}")
    else:
        print()
    return 0


def report(rows: list[Row], repeat: int) -> None:
    table = []
    for row in rows:
        bare, kind = median(row.bare), median(row.kind)
        sandboxed = median(row.sandboxed)
        e2e = median([e.total_s for e in row.e2e])
        table.append(
            [
                row.board.label,
                row.check,
                str(len(row.bare)),
                seconds(bare),
                seconds(sandboxed),
                ratio(sandboxed, bare),
                seconds(kind),
                ratio(kind, bare),
                ratio(kind, sandboxed),
                seconds(e2e),
                ratio(e2e, bare),
            ]
        )
    print_table(
        [
            "board",
            "check",
            "runs",
            "bare s",
            "sandboxed s",
            "sbx/bare",
            "kind s",
            "kind/bare",
            "kind/sbx",
            "end-to-end s",
            "e2e/bare",
        ],
        table,
        title=f"Medians of up to {repeat} runs; bare = kicad-cli with a fresh HOME holding "
        "KiCad's stock library tables (as hwrepo sets up each job); sandboxed = the same "
        "command in a job's sandbox; kind = the check kind's run() (sandbox, hwrepo's Python, "
        "kicad-cli, report read)",
    )

    variants = []
    for row in rows:
        bare, empty = median(row.bare), median(row.bare_empty)
        same = row.findings.get("bare") == row.findings.get("kind")
        variants.append(
            [
                row.board.label,
                row.check,
                seconds(bare),
                row.findings_text("bare"),
                row.findings_text("kind") + ("" if same else " (!)"),
                seconds(empty),
                row.findings_text("empty"),
                ratio(empty, bare),
            ]
        )
    print_table(
        [
            "board",
            "check",
            "bare s",
            "findings",
            "kind's findings",
            "empty HOME s (1 run)",
            "findings",
            "empty/bare",
        ],
        variants,
        title="bare kicad-cli: HOME with the stock library tables vs an empty HOME "
        "(findings: entries in kicad-cli's JSON report, excluded ones included)",
    )

    def part(row: Row, pick: Callable[[E2E], float]) -> str:
        return seconds(median([pick(e) for e in row.e2e]))

    breakdown = []
    for row in rows:
        running = median([e.running_s for e in row.e2e])
        tool = median(row.e2e_tool)
        rest = None if running is None or tool is None else running - tool
        breakdown.append(
            [
                row.board.label,
                row.check,
                part(row, lambda e: e.total_s),
                part(row, lambda e: e.upload_s),
                part(row, lambda e: e.queued_s),
                seconds(row.plan_s),
                part(row, lambda e: e.waiting_s),
                seconds(running),
                seconds(tool),
                seconds(rest),
                part(row, lambda e: e.recording_s),
                seconds(median([k - t for k, t in zip(row.kind, row.kind_tool, strict=True)])),
            ]
        )
    print_table(
        [
            "board",
            "check",
            "total",
            "(upload)",
            "queued",
            "(plan)",
            "+started",
            "+finished",
            "(kicad-cli)",
            "(rest)",
            "+in API",
            "kind w/o kicad-cli",
        ],
        breakdown,
        title="Where the end-to-end seconds go (medians, s). queued: from the upload request to "
        "the planner's check.queued; (upload): the request alone; (plan): this kind's plan() "
        "alone; +started: the work queue and the worker's fetch; +finished: the job (inputs "
        "fetched, kicad-cli, report parsed, results stored); +in API: the recorder and this "
        "benchmark's polling; kind w/o kicad-cli: the kind's run() less kicad-cli's wall",
    )


def report_shared(
    shared: list[tuple[Board, dict[str, E2E], float | None]], rows: dict[tuple[str, str], Row]
) -> None:
    table = []
    for board, found, revision_s in shared:
        cells = [board.label]
        for check in CHECKS:
            e2e = found[check]
            row = rows.get((board.label, check))
            bare = median(row.bare) if row else None
            cells += [seconds(e2e.total_s), seconds(e2e.waiting_s), ratio(e2e.total_s, bare)]
        cells.append(seconds(revision_s))
        table.append(cells)
    print_table(
        [
            "board",
            "drc e2e",
            "(queue)",
            "drc/bare",
            "erc e2e",
            "(queue)",
            "erc/bare",
            "revision final",
        ],
        table,
        title="One upload to a single worker taking every available kind at concurrency 1 (as "
        "`hwrepo up` runs it); (queue): check.queued to check.started; revision final: every "
        "check of the upload (render included) final",
    )


if __name__ == "__main__":
    run_benchmark(main)
