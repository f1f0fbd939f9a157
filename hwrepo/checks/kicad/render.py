"""Kind `render`: what a reviewer looks at, one job per KiCad project (or board, or root
schematic without a project).

Outputs: an SVG per schematic sheet, the board's front and back (copper, silkscreen, outline) as
SVG, a 3D view as PNG, the BOM and the netlist as JSON (with KiCad's own CSV and XML), and the
board's statistics, all made in the sandbox (`inside.render`). The 3D model library is
optional: the result lists the footprints' model paths that do not resolve on the machine that
rendered; a library or model path that leaves the revision fails the render, naming it.
"""

from __future__ import annotations

from typing import ClassVar

from hwrepo.checks.core.compare import CheckSide, Compared
from hwrepo.checks.kicad.compare_render import compare_render
from hwrepo.checks.kicad.kind import KicadKind


class RenderKind(KicadKind):
    name: ClassVar[str] = "render"
    description: ClassVar[str] = (
        "Schematic and board SVGs, a 3D view, BOM, netlist and board statistics for reviewers"
    )
    inside: ClassVar[str] = "hwrepo.checks.kicad.inside:render"
    needs: ClassVar[str] = "any"

    def compare(self, a: CheckSide | None, b: CheckSide | None) -> Compared:
        """BOM lines by reference, board statistics side by side, each view paired with a
        picture of the difference (see compare_render)."""
        return compare_render(a, b)
