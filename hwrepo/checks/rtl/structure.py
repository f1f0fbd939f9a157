"""Check kind `rtl-structure`: the modules, ports, parameters, instances and hierarchy of each RTL
design, read with pyverilog (Verilog-2001) in the sandbox (`inside.structure_check`).

Verdicts: `passed` with the structure; `failed` when a file has a syntax error (pyverilog's or the
preprocessor's), or names a file outside the revision, or when no module is defined; `errored`
when a file is SystemVerilog (pyverilog reads Verilog-2001 only; there is no fallback to another
parser) or a tool failed.
"""

from __future__ import annotations

from typing import Any, ClassVar

from hwrepo.checks.core.compare import CheckSide, Compared, by_name, keyed_changes
from hwrepo.checks.rtl.kind import RtlKind


class RtlStructure(RtlKind):
    name: ClassVar[str] = "rtl-structure"
    description: ClassVar[str] = (
        "Modules, ports, parameters, instances and the hierarchy of each RTL design (pyverilog)."
    )
    inside: ClassVar[str] = "hwrepo.checks.rtl.inside:structure_check"
    tool: ClassVar[str] = "pyverilog"

    def compare(self, a: CheckSide | None, b: CheckSide | None) -> Compared:
        """Modules added and removed; per module, ports and parameters added, removed and
        changed (direction, width, default)."""
        before = by_name((a.details.get("modules") if a else None) or [])
        after = by_name((b.details.get("modules") if b else None) or [])
        changed = []
        for name in sorted(set(before) & set(after)):
            ports = _diff(before[name].get("ports"), after[name].get("ports"), PORT_FIELDS)
            params = _diff(
                before[name].get("parameters"), after[name].get("parameters"), PARAM_FIELDS
            )
            if any(ports.values()) or any(params.values()):
                changed.append({"module": name, "ports": ports, "parameters": params})
        return Compared(
            {
                "modules_added": sorted(set(after) - set(before)),
                "modules_removed": sorted(set(before) - set(after)),
                "modules_changed": changed,
            }
        )


PORT_FIELDS = ("direction", "width", "bits", "signed", "type")
PARAM_FIELDS = ("default", "value", "local")


def _diff(a: Any, b: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    return keyed_changes(by_name(a or []), by_name(b or []), fields)
