"""The one way to run a program on a revision's files.

Every process that reads revision content runs in the sandbox (`sandbox.py`), and every sandbox
of a check is started from here:

- `Sandbox(ws)` is the sandbox of one job. `run()` runs a program with the job's workspace
  mounted at /job (`src/` the revision's files, `out/` the artifacts, `tmp/` scratch), the kind's
  cache at /cache, the tool installations read-only. `python()` runs one of hwrepo's own
  in-sandbox functions (`"module:function"`, see `inside.py`) there with hwrepo's Python and
  returns what it returned: the function reads the revision, runs the tools, parses their reports
  and writes artifacts, all inside.
- `probe()` asks a tool about itself (its version) in a sandbox holding nothing of any revision.

The worker never starts a tool on its own; `inside.tool()`, which in-sandbox functions use to run
tools, refuses to run anywhere but in the sandbox. Inside, nothing of the host is visible but
the system's installed tools, hwrepo's own installation and what a job mounts read-only (Python
environments, model caches, library directories): no data directory, no secrets, no network.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwrepo.checks.core.kind import Workspace
from hwrepo.checks.run.inside import IN_SANDBOX, REQUEST, RESPONSE
from hwrepo.checks.run.sandbox import (
    SYSTEM_PATH,
    Mount,
    SandboxError,
    SandboxLimits,
    SandboxResult,
    run_sandboxed,
    sandbox_available,
)

JOB_ROOT = Path("/job")
CACHE_ROOT = Path("/cache")
# What a response of an in-sandbox function may weigh (a DRC of a large board lists thousands
# of violations; more than this is a misbehaving process).
RESPONSE_LIMIT = 256 * 1024**2
# Beyond the job's own time limit, which in-sandbox functions enforce themselves on each tool:
# the sandbox's own wall-clock limit is the backstop.
BACKSTOP_S = 30.0


class SandboxUnavailable(RuntimeError):
    pass


@functools.cache
def hwrepo_installation() -> tuple[Path, ...]:
    """hwrepo's Python environment and, for an editable install, the package's directory:
    read-only in every sandbox that runs hwrepo's Python."""
    import hwrepo

    prefix = Path(sys.prefix).resolve()
    package = Path(hwrepo.__file__).resolve().parent
    dirs = [prefix]
    if not package.is_relative_to(prefix):
        dirs.append(package)
    return tuple(dirs)


def _package_root() -> Path:
    """The directory this process imported the hwrepo package from."""
    import hwrepo

    return Path(hwrepo.__file__).resolve().parent.parent


# The in-sandbox entry point, importing hwrepo from the directory the worker imported it from
# (a source checkout on PYTHONPATH, say), not from wherever the environment's own install of
# hwrepo points: the sandbox runs the same code as the worker.
_RUN_INSIDE = (
    "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
    "runpy.run_module('hwrepo.checks.run.inside', run_name='__main__', alter_sys=True)"
)


def python_env(extra_path: list[str] | None = None) -> dict[str, str]:
    """The environment of hwrepo's Python inside a job's sandbox."""
    path = [str(Path(sys.executable).parent), *(extra_path or []), SYSTEM_PATH]
    return {
        "PATH": ":".join(path),
        "HOME": str(JOB_ROOT / "tmp" / "home"),
        "TMPDIR": str(JOB_ROOT / "tmp"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        IN_SANDBOX: "1",
    }


@dataclass
class InsideRun:
    """What an in-sandbox function did: its response (None when it gave none), why not, and the
    sandbox's own account (exit code, limits hit, wall time)."""

    sandbox: SandboxResult
    response: dict[str, Any] | None
    error: str | None = None

    @property
    def timed_out(self) -> bool:
        return self.sandbox.timed_out


@dataclass
class Sandbox:
    """The sandbox of one job (see the module's docstring)."""

    ws: Workspace
    limits: SandboxLimits = field(default_factory=SandboxLimits)

    def _mounts(self, ro: list[Path | Mount], rw: list[Path | Mount]) -> tuple[list, list]:
        read_only: list[Path | Mount] = [Path(p) for p in hwrepo_installation()]
        return [*read_only, *ro], list(rw)

    def run(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        ro: list[Path | Mount] | None = None,
        rw: list[Path | Mount] | None = None,
        limits: SandboxLimits | None = None,
        network: bool = False,
        log: Path | None = None,
        workdir: Path | Mount | None = None,
    ) -> SandboxResult:
        """`argv` in the sandbox, by default in /job with the workspace writable there. Raises
        SandboxUnavailable when no sandbox can be made here."""
        if (reason := sandbox_available()) is not None:
            raise SandboxUnavailable(reason)
        read_only, writable = self._mounts(ro or [], rw or [])
        work = workdir if workdir is not None else Mount(self.ws.root.resolve(), JOB_ROOT)
        try:
            return run_sandboxed(
                argv,
                workdir=work,
                env=env,
                ro_binds=read_only,
                rw_binds=writable,
                limits=limits or self.limits,
                network=network,
                log_path=log,
            )
        except (SandboxError, ValueError, OSError) as exc:
            raise SandboxUnavailable(f"the sandbox could not be started: {exc}") from exc

    def python(
        self,
        entry: str,
        request: dict[str, Any],
        *,
        timeout_s: float,
        ro: list[Path | Mount] | None = None,
        extra_path: list[str] | None = None,
    ) -> InsideRun:
        """Run the in-sandbox function `entry` ("package.module:function") on `request` and
        return its response. The function's own output (a traceback, say) is appended to the
        job's log."""
        self.ws.create()
        (self.ws.tmp / "home").mkdir(parents=True, exist_ok=True)
        request_file = self.ws.tmp / REQUEST
        response_file = self.ws.tmp / RESPONSE
        response_file.unlink(missing_ok=True)
        request_file.write_text(json.dumps(request), encoding="utf-8")
        wall = timeout_s + BACKSTOP_S
        limits = dataclasses.replace(self.limits, wall_s=wall, cpu_s=int(wall) + 1)
        argv = [sys.executable, "-I", "-B", "-c", _RUN_INSIDE, str(_package_root()), entry]
        mounts = list(ro or [])
        if self.ws.cache.is_dir():  # the kind's own cache (parser tables): no project's data
            mounts.append(Mount(self.ws.cache.resolve(), CACHE_ROOT))
        result = self.run(argv, env=python_env(extra_path), ro=mounts, limits=limits)
        if result.output.strip():
            _append(self.ws.log, result.output)
        if result.killed_reason is not None or result.timed_out:
            return InsideRun(result, None, f"the sandbox stopped it: {result.killed_reason}")
        response = read_response(response_file)
        if response is None:
            said = result.last_lines(3) or f"exit {result.exit_code}, no output"
            return InsideRun(result, None, f"it gave no response ({said})")
        if not response.get("ok"):
            return InsideRun(result, None, str(response.get("error") or "it failed"))
        data = response.get("response")
        if not isinstance(data, dict):
            return InsideRun(result, None, "its response is not a JSON object")
        return InsideRun(result, data)


def read_response(path: Path) -> dict[str, Any] | None:
    """A JSON object the sandbox wrote: never through a symlink, never more than
    RESPONSE_LIMIT bytes; None when it is missing or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(RESPONSE_LIMIT + 1)
    if len(data) > RESPONSE_LIMIT:
        return None
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _append(log: Path, text: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as fh:
        fh.write(text if text.endswith("\n") else text + "\n")


@functools.lru_cache(maxsize=64)
def probe(
    argv: tuple[str, ...],
    env: tuple[tuple[str, str], ...] = (("PATH", SYSTEM_PATH),),
    ro: tuple[Path, ...] = (),
    timeout_s: float = 60,
) -> str | None:
    """What a tool prints about itself (`kicad-cli version`, `iverilog -V`), whatever its exit
    code, run in a sandbox of its own holding nothing of any revision (`ro`: installations it
    needs besides the system's); None when it could not run. Cached per process."""
    if sandbox_available() is not None:
        return None
    with tempfile.TemporaryDirectory(prefix="hwrepo-probe-") as tmp:
        root = Path(tmp)
        (root / "home").mkdir()
        environment = {"HOME": str(root / "home"), "LANG": "C.UTF-8", **dict(env)}
        environment["XDG_CONFIG_HOME"] = str(root / "home" / ".config")
        try:
            result = run_sandboxed(
                list(argv),
                workdir=root,
                env=environment,
                ro_binds=[*hwrepo_installation(), *ro],
                limits=SandboxLimits(wall_s=timeout_s, cpu_s=int(timeout_s)),
            )
        except (SandboxError, ValueError, OSError):
            return None
    return None if result.exit_code is None else result.output
