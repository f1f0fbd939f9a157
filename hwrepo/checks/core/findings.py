"""Kinds whose in-sandbox half reports findings: DRC, ERC, renders, RTL structure and lint.

Their in-sandbox function answers with one shape:

    {"outcome": {"state", "summary"} | None,  # set when the job ends without a verdict on
                                              # violations (a tool failed, the time ran out),
                                              # or when the kind judges inside (renders)
     "details": {...},                        # the kind's record of what it found
     "violations": [Violation as JSON, ...],  # judged here when there is no outcome
     "artifacts": [{"name", "description"}]}  # files it left in /job/out

and the worker judges the violations the same way for all of them: the project's waivers,
severities that fail the check (`fail_on`), counts, SARIF 2.1.0.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from hwrepo.checks.core import violations as v
from hwrepo.checks.core.compare import SOURCE_KEYS, CheckSide, Compared, Key, compare_violations
from hwrepo.checks.core.kind import Artifact, CheckResult, SandboxedKind, Workspace, artifacts_from
from hwrepo.domain.checks import Job

SARIF = "application/sarif+json"
SUMMARY_LIMIT = 2000
STATES = {"passed", "failed", "errored", "timed_out"}


class FindingsKind(SandboxedKind):
    tool: ClassVar[str]  # the tool named in SARIF
    # how a violation is recognised in another revision (see core/compare.py)
    compare_keys: ClassVar[list[Key]] = SOURCE_KEYS
    compare_positional: ClassVar[bool] = False

    def compare(self, a: CheckSide | None, b: CheckSide | None) -> Compared:
        return compare_violations(a, b, self.compare_keys, positional=self.compare_positional)

    def details(self, job: Job, ws: Workspace, details: dict[str, Any]) -> dict[str, Any]:
        """What the worker adds to the in-sandbox function's details."""
        return details

    def result(self, job: Job, ws: Workspace, response: dict[str, Any]) -> CheckResult:
        details = response.get("details")
        if not isinstance(details, dict):
            return self.failure(job, ws, "errored", "the check's report is not readable")
        details = self.details(job, ws, details)
        artifacts = artifacts_from(ws, response.get("artifacts"))
        outcome = response.get("outcome")
        if isinstance(outcome, dict):
            state = outcome.get("state")
            summary = str(outcome.get("summary", ""))[:SUMMARY_LIMIT]
            return CheckResult(state if state in STATES else "errored", summary, details, artifacts)
        try:
            found = v.from_sandbox(response.get("violations"))
        except ValueError as exc:
            return CheckResult("errored", str(exc)[:SUMMARY_LIMIT], details, artifacts)
        return self.verdict(job, ws, details, found, artifacts)

    # -- the verdict on violations --------------------------------------------------------

    def design_file(self, job: Job) -> str | None:
        """The file SARIF locates board items in (lint findings carry their own)."""
        return None

    def tool_version(self, details: dict[str, Any]) -> str:
        return "unknown"

    def summarise(
        self, found: list[v.Violation], failing: list[v.Violation], fail_on: list[str]
    ) -> str:
        return summarise(found, failing)

    def verdict(
        self,
        job: Job,
        ws: Workspace,
        details: dict[str, Any],
        found: list[v.Violation],
        artifacts: list[Artifact],
    ) -> CheckResult:
        """Waivers applied, SARIF written; failing when a violation of a failing severity is
        neither waived nor excluded."""
        fail_on = list(job.params.get("fail_on") or ["error"])
        v.apply_waivers(found, job.waivers, self.name)
        failing = v.blocking(found, set(fail_on))
        sarif = ws.out / "result.sarif"
        document = v.to_sarif(
            found,
            tool=self.tool,
            version=self.tool_version(details),
            artifact=self.design_file(job),
        )
        sarif.write_text(json.dumps(document, indent=1))
        details.update(
            counts=v.counts(found),
            blocking=len(failing),
            fail_on=fail_on,
            violations=[x.to_dict() for x in found],
        )
        sarif_artifact = Artifact("result.sarif", sarif, SARIF, "the findings in SARIF 2.1.0")
        state = "failed" if failing else "passed"
        summary = self.summarise(found, failing, fail_on)
        return CheckResult(state, summary, details, [sarif_artifact, *artifacts])


def summarise(found: list[v.Violation], failing: list[v.Violation]) -> str:
    """ "2 errors, 1 warning (1 waived, 1 excluded); 1 blocking"."""
    c = v.counts(found)
    by = c["by_severity"]
    parts = [f"{by.get('error', 0)} error" + ("" if by.get("error", 0) == 1 else "s")]
    parts.append(f"{by.get('warning', 0)} warning" + ("" if by.get("warning", 0) == 1 else "s"))
    parts += [f"{n} {sev}" for sev, n in by.items() if sev not in {"error", "warning"}]
    text = ", ".join(parts)
    extra = [f"{c[k]} {k}" for k in ("waived", "excluded") if c[k]]
    if extra:
        text += f" ({', '.join(extra)})"
    if failing:
        text += f"; {len(failing)} blocking"
    return text
