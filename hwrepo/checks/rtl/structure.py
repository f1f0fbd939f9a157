"""Check kind `rtl-structure`: the modules, ports, parameters, instances and hierarchy of each RTL
design, read with pyverilog (Verilog-2001) in the sandbox (`inside.structure_check`).

Verdicts: `passed` with the structure; `failed` when a file has a syntax error (pyverilog's or the
preprocessor's), or names a file outside the revision, or when no module is defined; `errored`
when a file is SystemVerilog (pyverilog reads Verilog-2001 only; there is no fallback to another
parser) or a tool failed.
"""

from __future__ import annotations

from typing import ClassVar

from hwrepo.checks.rtl.kind import RtlKind


class RtlStructure(RtlKind):
    name: ClassVar[str] = "rtl-structure"
    description: ClassVar[str] = (
        "Modules, ports, parameters, instances and the hierarchy of each RTL design (pyverilog)."
    )
    inside: ClassVar[str] = "hwrepo.checks.rtl.inside:structure_check"
    tool: ClassVar[str] = "pyverilog"
