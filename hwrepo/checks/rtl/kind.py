"""What the RTL kinds (rtl-structure, rtl-lint) share on the worker: one job per RTL design
(`designs.py`), pyverilog's parser tables built once into the kind's cache, and the verdict.
The in-sandbox half is `rtl/inside.py`."""

from __future__ import annotations

import shutil
from typing import Any

from hwrepo.checks.core.findings import FindingsKind
from hwrepo.checks.core.kind import JobError, PlannedJob, RevisionFiles, Workspace
from hwrepo.checks.rtl.designs import plan_rtl_jobs
from hwrepo.checks.rtl.parse import ensure_tables
from hwrepo.domain.checks import Job


class RtlKind(FindingsKind):
    def available(self) -> str | None:
        if shutil.which("iverilog") is None:
            return "iverilog (Icarus Verilog, pyverilog's preprocessor) is not on PATH"
        try:
            import pyverilog  # noqa: F401
        except ImportError:
            return "the Python package pyverilog is not installed"
        return None

    def plan(self, revision: RevisionFiles) -> list[PlannedJob]:
        return plan_rtl_jobs(revision, self.name)

    def request(self, job: Job, ws: Workspace) -> dict[str, Any]:
        try:
            ensure_tables(ws.cache)
        except Exception as exc:  # pyverilog's own failure, before any design is read
            raise JobError(f"pyverilog's parser tables could not be built: {exc}") from exc
        return super().request(job, ws)
