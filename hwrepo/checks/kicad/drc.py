"""Kind `drc`: KiCad's design rule check, one job per board.

`kicad-cli pcb drc --format json --severity-all [--schematic-parity]` in a clean KiCad
configuration of the job's own, in the sandbox (`inside.drc`). Violations, unconnected items
and schematic parity issues become normalised violations; the design's own exclusions (in the
.kicad_pro) and the project's waivers keep them visible without failing the check; footprint
libraries the project's table places outside the revision are violations of their own.
"""

from __future__ import annotations

from typing import Any, ClassVar

from hwrepo.checks.core.kind import Artifact, CheckResult, Workspace
from hwrepo.checks.core.violations import Violation
from hwrepo.checks.kicad.designs import Design
from hwrepo.checks.kicad.kind import KicadConfig, KicadKind
from hwrepo.domain.checks import Job


class DrcKind(KicadKind):
    name: ClassVar[str] = "drc"
    description: ClassVar[str] = "KiCad design rule check (kicad-cli pcb drc), one job per board"
    inside: ClassVar[str] = "hwrepo.checks.kicad.inside:drc"
    needs: ClassVar[str] = "board"

    def job_name(self, design: Design) -> str:
        assert design.board is not None
        return design.board

    def params(self, design: Design, config: KicadConfig) -> dict[str, Any]:
        return {
            "board": design.board,
            "schematic": design.schematic,
            "project": design.project,
            "fail_on": config.table.fail_on,
        }

    def verdict(
        self,
        job: Job,
        ws: Workspace,
        details: dict[str, Any],
        found: list[Violation],
        artifacts: list[Artifact],
    ) -> CheckResult:
        result = super().verdict(job, ws, details, found, artifacts)
        parity = details.get("schematic_parity")
        if job.params.get("schematic") and isinstance(parity, dict) and not parity.get("checked"):
            result.summary += " (schematic parity not checked)"
        return result
