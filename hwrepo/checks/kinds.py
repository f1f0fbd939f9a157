"""The check kinds, one module each. Adding a kind: write its module, add its class here."""

from __future__ import annotations

from hwrepo.checks.core.kind import CheckKind
from hwrepo.checks.kicad.drc import DrcKind
from hwrepo.checks.kicad.erc import ErcKind
from hwrepo.checks.kicad.render import RenderKind
from hwrepo.checks.rtl.lint import RtlLint
from hwrepo.checks.rtl.structure import RtlStructure
from hwrepo.checks.simulation.kind import SimulationKind

KINDS: list[type[CheckKind]] = [
    SimulationKind,
    DrcKind,
    ErcKind,
    RenderKind,
    RtlStructure,
    RtlLint,
]
