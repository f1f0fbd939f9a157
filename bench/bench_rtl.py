"""RTL checks: the bare tools, the same command in a job's sandbox, and the check kinds.

For each design, in the same run and interleaved round by round:

  verilator   `verilator --lint-only -Wall` on the sources, include directories, defines and
              top module that rtl-lint's plan() gives the job, in the design's directory;
  pyverilog   a bare pyverilog parse of the same files (`VerilogCodeParser(...).parse()`, which
              runs Icarus' preprocessor), in a fresh Python process, with parser tables built
              beforehand (as the kinds have them in their cache);
  sandboxed   the verilator command above started in a job's sandbox (no hwrepo Python);
  rtl-lint    RtlLint().run on the planned job in a fresh workspace: the sandbox, hwrepo's
              Python, verilator, the SARIF read, and hwrepo's design rules (a pyverilog parse);
  rtl-structure  RtlStructure().run likewise: the sandbox, hwrepo's Python, the preprocessor and
              the pyverilog parse, the structure written.

Designs: designs/rtl-counter, rtl-axis-fifo, rtl-lint-findings and, when the benchmark's
optional packages are installed (`pip install -e '.[bench]'`), PicoRV32 (`picorv32.v`) and SERV
(`rtl/*.v`) from the `pythondata-cpu-picorv32` and `pythondata-cpu-serv` wheels: their sources
are copied from the installed packages at run time; none is part of this repository.

    .venv/bin/python bench/bench_rtl.py [--repeat 3] [--designs rtl-counter picorv32]
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    DESIGNS,
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
from hwrepo.checks.rtl.job import DesignParams
from hwrepo.checks.rtl.lint import RtlLint
from hwrepo.checks.rtl.parse import ensure_tables, pyverilog_version
from hwrepo.checks.rtl.structure import RtlStructure
from hwrepo.checks.run.installed import verilator_env, verilator_version
from hwrepo.checks.run.runner import JOB_ROOT, Sandbox, python_env

LOCAL = ["rtl-counter", "rtl-axis-fifo", "rtl-lint-findings"]
# name: (package, files under its data_location to copy into rtl/)
WHEELS = {
    "picorv32": ("pythondata_cpu_picorv32", ["picorv32.v"]),
    "serv": ("pythondata_cpu_serv", ["rtl/*.v"]),
}
TIMEOUT_S = 300.0

# PLY looks for prebuilt tables as the module pyverilog.vparser.parsetab: they are loaded from
# the tables' directory under that name, or every parse rebuilds them (`--rebuild-tables`).
BARE_PARSE = """
import importlib.util, os, sys
tables, files, includes, defines = sys.argv[1], sys.argv[2].split(","), sys.argv[3], sys.argv[4]
table = os.path.join(tables, "parsetab.py")
if os.path.isfile(table):
    spec = importlib.util.spec_from_file_location("pyverilog.vparser.parsetab", table)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["pyverilog.vparser.parsetab"] = module
from pyverilog.vparser.parser import VerilogCodeParser
VerilogCodeParser(
    files,
    outputdir=tables,
    preprocess_include=[i for i in includes.split(",") if i],
    preprocess_define=[d for d in defines.split(",") if d],
    debug=False,
).parse()
"""


@dataclass
class Row:
    name: str
    directory: Path
    params: DesignParams
    files: int
    lines: int
    times: dict[str, list[float]] = field(default_factory=dict)
    states: dict[str, set[str]] = field(default_factory=dict)

    def add(self, what: str, wall: float, state: str = "ok") -> None:
        self.times.setdefault(what, []).append(wall)
        self.states.setdefault(what, set()).add(state)

    def med(self, what: str) -> float | None:
        return median(self.times.get(what, []))


def wheel_design(name: str, into: Path) -> Path | None:
    package, patterns = WHEELS[name]
    try:
        module = importlib.import_module(package)
    except ImportError:
        return None
    source = Path(module.data_location)
    target = into / name
    (target / "rtl").mkdir(parents=True)
    for pattern in patterns:
        for path in sorted(source.glob(pattern)):
            shutil.copyfile(path, target / "rtl" / path.name)
    return target


def planned(directory: Path, kind: CheckKind) -> tuple[LocalRevision, list]:
    revision = LocalRevision(root=directory, project=f"bench/{directory.name}")
    return revision, kind.plan(revision)


def verilator_argv(params: DesignParams, mdir: Path) -> list[str]:
    argv = ["verilator", "--lint-only", "-Wall", "--Mdir", str(mdir)]
    argv += [f"-I{d or '.'}" for d in params.include_dirs]
    argv += [f"-D{n}" if v is None else f"-D{n}={v}" for n, v in params.defines.items()]
    if params.top:
        argv += ["--top-module", params.top]
    return argv + params.sources


def bare_verilator(row: Row, scratch: Path) -> float:
    mdir = scratch / "verilator-obj"
    shutil.rmtree(mdir, ignore_errors=True)
    argv = verilator_argv(row.params, mdir)
    wall, done = timed(
        lambda: subprocess.run(
            argv,
            cwd=row.directory,
            env=verilator_env(),
            capture_output=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    )
    row.add("verilator", wall, f"exit {done.returncode}")
    return float(wall)


def bare_pyverilog(row: Row, tables: Path) -> float:
    """A fresh Python parsing the design with pyverilog; `tables` holds prebuilt parser tables
    (or nothing, and PLY builds them)."""
    p = row.params
    argv = [
        sys.executable,
        "-c",
        BARE_PARSE,
        str(tables),
        ",".join(p.sources),
        ",".join(d or "." for d in p.include_dirs),
        ",".join(n if v is None else f"{n}={v}" for n, v in p.defines.items()),
    ]
    wall, done = timed(
        lambda: subprocess.run(
            argv, cwd=row.directory, capture_output=True, timeout=TIMEOUT_S, check=False
        )
    )
    row.add("pyverilog", wall, "ok" if done.returncode == 0 else "parse error")
    return float(wall)


def sandboxed_verilator(row: Row, scratch: Path, n: int) -> float:
    files = {p.relative_to(row.directory).as_posix(): p for p in row.directory.rglob("*")}
    ws = Workspace.from_directory(
        scratch / f"sbx-{n}", scratch / "cache", {k: v for k, v in files.items() if v.is_file()}
    )
    try:
        argv = verilator_argv(row.params, JOB_ROOT / "tmp" / "verilator-obj")
        env = verilator_env(python_env())
        # verilator runs in the design's directory, as bare: /job/src (a shell's cd, ~1 ms)
        shell = ["/bin/sh", "-c", 'cd src && exec "$@"', "sh", *argv]
        wall, done = timed(lambda: Sandbox(ws).run(shell, env=env))
        row.add("sandboxed", wall, f"exit {done.exit_code}")
    finally:
        ws.remove()
    return float(wall)


def kind_run(row: Row, kind: CheckKind, scratch: Path, cache: Path, n: int) -> float:
    revision, jobs = planned(row.directory, kind)
    job = revision.job(jobs[0], kind.name)
    ws = revision.workspace(job, scratch / f"ws-{kind.name}-{n}", cache)
    try:
        wall, result = timed(lambda: kind.run(job, ws, Sandbox(ws)))
    finally:
        ws.remove()
    row.add(kind.name, wall, result.state)
    return float(wall)


def count_lines(directory: Path, sources: list[str]) -> int:
    return sum(len((directory / s).read_bytes().splitlines()) for s in sources)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", "-n", type=int, default=3, help="runs of each (median)")
    parser.add_argument(
        "--designs", nargs="+", default=[*LOCAL, *WHEELS], metavar="NAME", help="%(default)s"
    )
    parser.add_argument(
        "--rebuild-tables",
        action="store_true",
        help="the bare pyverilog parse without prebuilt parser tables (PLY builds them each time)",
    )
    args = parser.parse_args(argv)
    handle_termination()
    started = time.monotonic()
    print(machine_line({"verilator": verilator_version(), "pyverilog": pyverilog_version()}))
    lint, structure = RtlLint(), RtlStructure()
    with Stack() as stack:  # only for its temporary directory and clean-up
        scratch = stack.root / "scratch"
        scratch.mkdir()
        cache = scratch / "kind-cache"
        cache.mkdir()
        tables = ensure_tables(cache)
        costs = start_costs(scratch, "hwrepo.checks.rtl.inside")
        if args.rebuild_tables:
            tables = scratch / "no-tables"
            tables.mkdir()
        rows: list[Row] = []
        for name in args.designs:
            if name in WHEELS:
                directory = wheel_design(name, stack.root / "wheels")
                if directory is None:
                    print(f"{name}: {WHEELS[name][0]} is not installed (pip install -e '.[bench]')")
                    continue
            else:
                directory = stack.root / "designs" / name
                shutil.copytree(DESIGNS / name, directory)
            _, jobs = planned(directory, lint)
            if not jobs:
                print(f"{name}: rtl-lint planned no job")
                continue
            params = DesignParams.from_params(jobs[0].params)
            root = directory / params.root if params.root else directory  # sources' base
            rows.append(
                Row(name, root, params, len(params.sources), count_lines(root, params.sources))
            )
        for n in range(args.repeat):
            for row in rows:
                bare_verilator(row, scratch)
                bare_pyverilog(row, tables)
                sandboxed_verilator(row, scratch, n)
                kind_run(row, lint, scratch, cache, n)
                kind_run(row, structure, scratch, cache, n)
                print(
                    f"  {row.name} #{n + 1}: "
                    + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in row.times.items()),
                    flush=True,
                )

    table = []
    for row in rows:
        v, p, s = row.med("verilator"), row.med("pyverilog"), row.med("sandboxed")
        lint_s, struct_s = row.med("rtl-lint"), row.med("rtl-structure")
        both = None if v is None or p is None else v + p
        table.append(
            [
                row.name,
                f"{row.files}/{row.lines}",
                seconds(v),
                seconds(p),
                seconds(s),
                ratio(s, v),
                seconds(lint_s),
                ratio(lint_s, v),
                ratio(lint_s, both),
                seconds(struct_s),
                ratio(struct_s, p),
            ]
        )
    print_table(
        [
            "design",
            "files/lines",
            "verilator s",
            "pyverilog s",
            "sandboxed s",
            "sbx/verilator",
            "rtl-lint s",
            "lint/verilator",
            "lint/(v+p)",
            "rtl-structure s",
            "structure/pyverilog",
        ],
        table,
        title=f"Medians of {args.repeat} runs. lint/(v+p): rtl-lint against bare verilator plus "
        "a bare pyverilog parse (rtl-lint runs both: Verilator, then hwrepo's rules on "
        "pyverilog's AST)",
    )
    states = [
        [row.name, *("/".join(sorted(row.states.get(k, set()))) for k in KEYS)] for row in rows
    ]
    print_table(["design", *KEYS], states, title="Outcomes (bare exit codes, check states)")
    print_table(
        ["step", "wall s (median of 5)"],
        [[label, f"{value:.3f}"] for label, value in costs.items()],
        title="What a sandboxed job pays before its tool starts (each line includes the ones "
        "above it)",
    )
    print(f"\n{machine_line()}\ntotal {time.monotonic() - started:.0f} s")
    return 0


KEYS = ["verilator", "pyverilog", "sandboxed", "rtl-lint", "rtl-structure"]


if __name__ == "__main__":
    run_benchmark(main)
