"""Kind `erc`: KiCad's electrical rule check, one job per root schematic.

`kicad-cli sch erc --format json --severity-all` on the root of each hierarchy (a sub-sheet run
alone gives different, wrong findings), in a clean KiCad configuration of the job's own, in the
sandbox (`inside.erc`). Item positions are converted to real mm (kicad-cli 9 writes them 100
times too small) and carry the sheet path they were found on.
"""

from __future__ import annotations

from typing import Any, ClassVar

from hwrepo.checks.kicad.designs import Design
from hwrepo.checks.kicad.kind import KicadConfig, KicadKind


class ErcKind(KicadKind):
    name: ClassVar[str] = "erc"
    description: ClassVar[str] = (
        "KiCad electrical rule check (kicad-cli sch erc), one job per root schematic"
    )
    inside: ClassVar[str] = "hwrepo.checks.kicad.inside:erc"
    needs: ClassVar[str] = "schematic"

    def job_name(self, design: Design) -> str:
        assert design.schematic is not None
        return design.schematic

    def params(self, design: Design, config: KicadConfig) -> dict[str, Any]:
        return {
            "schematic": design.schematic,
            "sheets": design.sheets,
            "project": design.project,
            "fail_on": config.table.fail_on,
        }
