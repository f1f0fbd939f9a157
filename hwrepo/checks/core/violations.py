"""The violation model shared by DRC, ERC and RTL lint: normalised records, waivers and
severity overrides, counts, and SARIF 2.1.0 output.

Violations are plain dataclasses, so the in-sandbox halves of the kinds make them without a
validation library; what comes back from a sandbox is validated on the worker
(`from_sandbox`)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hwrepo.domain.checks import Waiver


@dataclass
class ViolationItem:
    uuid: str | None = None
    description: str = ""
    x_mm: float | None = None
    y_mm: float | None = None
    sheet: str | None = None


@dataclass
class Violation:
    type: str
    severity: str  # error | warning | info (as the tool says, after overrides)
    description: str
    excluded: bool = False  # excluded in the design's own files (e.g. KiCad project exclusions)
    waived: bool = False
    waiver: str | None = None  # the waiver's reason
    items: list[ViolationItem] = field(default_factory=list)
    # RTL lint findings point at source lines instead of board items:
    file: str | None = None
    line: int | None = None
    column: int | None = None
    rule: str | None = None  # the tool's rule/code when it differs from `type`

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def keys(self) -> set[str]:
        """What a waiver's `items` may name: item uuids, or "file:line" for lint findings."""
        keys = {i.uuid for i in self.items if i.uuid}
        if self.file is not None and self.line is not None:
            keys.add(f"{self.file}:{self.line}")
        return keys


def from_sandbox(raw: Any) -> list[Violation]:
    """Violations as a sandbox reported them (JSON), validated field by field; raises
    ValueError for anything that is not a list of violations."""
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(list[Violation]).validate_python(raw or [])
    except ValidationError as exc:
        raise ValueError(f"the violations reported are malformed: {exc}") from None


def apply_waivers(violations: list[Violation], waivers: list[Waiver], kind: str) -> None:
    for waiver in waivers:
        if waiver.kind not in {"*", kind}:
            continue
        for v in violations:
            if v.type != waiver.type:
                continue
            if waiver.items and not (set(waiver.items) & v.keys()):
                continue
            if waiver.severity:
                v.severity = waiver.severity
            else:
                v.waived = True
                v.waiver = waiver.reason


def counts(violations: list[Violation]) -> dict[str, Any]:
    return {
        "total": len(violations),
        "by_type": dict(sorted(Counter(v.type for v in violations).items())),
        "by_severity": dict(sorted(Counter(v.severity for v in violations).items())),
        "waived": sum(1 for v in violations if v.waived),
        "excluded": sum(1 for v in violations if v.excluded),
    }


def blocking(violations: list[Violation], fail_on: set[str]) -> list[Violation]:
    """The violations that fail the check: of a failing severity, neither waived nor excluded."""
    return [v for v in violations if v.severity in fail_on and not v.waived and not v.excluded]


_SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def to_sarif(
    violations: list[Violation],
    *,
    tool: str,
    version: str,
    uri_base: str | None = None,
    artifact: str | None = None,
) -> dict[str, Any]:
    """SARIF 2.1.0. Board/schematic items become logical locations (uuid) with a region-less
    physical location on the design file; lint findings point at file, line and column."""
    rules = sorted({v.rule or v.type for v in violations})
    results = []
    for v in violations:
        result: dict[str, Any] = {
            "ruleId": v.rule or v.type,
            "level": _SARIF_LEVEL.get(v.severity, "warning"),
            "message": {"text": v.description},
            "properties": {"type": v.type, "severity": v.severity},
        }
        if v.file:
            region: dict[str, int] = {}
            if v.line:
                region["startLine"] = v.line
            if v.column:
                region["startColumn"] = v.column
            location: dict[str, Any] = {"artifactLocation": {"uri": v.file}}
            if region:
                location["region"] = region
            result["locations"] = [{"physicalLocation": location}]
        elif artifact:
            result["locations"] = [
                {
                    "physicalLocation": {"artifactLocation": {"uri": artifact}},
                    "logicalLocations": [
                        {"name": i.description, "fullyQualifiedName": i.uuid or i.description}
                        for i in v.items
                    ],
                }
            ]
        suppressions = []
        if v.excluded:
            suppressions.append({"kind": "inSource", "justification": "excluded in the design"})
        if v.waived:
            suppressions.append({"kind": "external", "justification": v.waiver or "waived"})
        if suppressions:
            result["suppressions"] = suppressions
        if v.items:
            result["properties"]["items"] = [
                {k: x for k, x in dataclasses.asdict(i).items() if x is not None} for i in v.items
            ]
        results.append(result)
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": tool,
                "version": version,
                "rules": [{"id": r} for r in rules],
            }
        },
        "results": results,
    }
    if uri_base:
        run["originalUriBaseIds"] = {"SRCROOT": {"uri": uri_base}}
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [run],
    }
