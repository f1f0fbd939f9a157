"""The check kinds, one module each. Adding a kind: write its module, add its class here."""

from __future__ import annotations

from hwrepo.checks.base import CheckKind
from hwrepo.checks.drc import DrcKind
from hwrepo.checks.erc import ErcKind
from hwrepo.checks.render import RenderKind
from hwrepo.checks.rtl_lint import RtlLint
from hwrepo.checks.rtl_structure import RtlStructure
from hwrepo.checks.simulation import SimulationKind

KINDS: list[type[CheckKind]] = [
    SimulationKind,
    DrcKind,
    ErcKind,
    RenderKind,
    RtlStructure,
    RtlLint,
]
