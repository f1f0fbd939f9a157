"""What runs inside a job's sandbox: hwrepo's in-sandbox functions, and the tools they start.

    python -I -B -m hwrepo.checks.run.inside PACKAGE.MODULE:FUNCTION

started by `runner.Sandbox.python()` in /job: reads the request from /job/tmp/request.json,
calls FUNCTION(request), writes {"ok": true, "response": ...} (or {"ok": false, "error": ...})
to /job/tmp/response.json. The functions import only what they need (no web framework, no
database, no validation library): a check pays for little more than its tools.

`tool()` runs a tool there: a fresh process group, a wall-clock timeout that kills the whole
group, output captured into the job's log (bounded). It refuses to run outside the sandbox, so
no code path can start a tool on revision files any other way by accident.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IN_SANDBOX = "HWREPO_IN_SANDBOX"
SANDBOX_UID = 65534  # as in sandbox.py, which this module does not import (it runs inside)
REQUEST = "request.json"
RESPONSE = "response.json"
WORKDIR = Path("/job")

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


class NotInSandbox(RuntimeError):
    pass


def in_sandbox() -> bool:
    return os.environ.get(IN_SANDBOX) == "1" and os.getuid() == SANDBOX_UID


def tool(
    argv: list[str],
    *,
    cwd: Path,
    timeout_s: float,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> ToolRun:
    """Run argv inside the sandbox; never raises for the tool's own failure (a missing binary
    raises OSError). Raises NotInSandbox anywhere else."""
    if not in_sandbox():
        raise NotInSandbox(
            f"{argv[0]} would read revision files outside the sandbox: tools run only inside "
            "it (hwrepo.checks.run.runner)"
        )
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


def main(argv: list[str]) -> int:
    entry = argv[1]
    module, _, function = entry.partition(":")
    response = WORKDIR / "tmp" / RESPONSE
    try:
        if not in_sandbox():
            raise NotInSandbox("hwrepo.checks.run.inside runs only inside a job's sandbox")
        request = json.loads((WORKDIR / "tmp" / REQUEST).read_text(encoding="utf-8"))
        func = getattr(importlib.import_module(module), function)
        outcome: dict[str, Any] = {"ok": True, "response": func(request)}
    except Exception as exc:
        traceback.print_exc()
        outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    tmp = response.with_suffix(".part")
    tmp.write_text(json.dumps(outcome), encoding="utf-8")
    tmp.replace(response)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
