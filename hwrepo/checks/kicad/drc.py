"""Kind `drc`: KiCad's design rule check, one job per board.

`kicad-cli pcb drc --format json --severity-all [--schematic-parity]` in a clean KiCad
configuration of the job's own. Violations, unconnected items and schematic parity issues become
normalised violations; the design's own exclusions (in the .kicad_pro) and the project's waivers
keep them visible without failing the check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from hwrepo.checks.core.kind import (
    CheckKind,
    CheckResult,
    Job,
    PlannedJob,
    RevisionFiles,
    Workspace,
)
from hwrepo.checks.kicad import common as kicad

# kicad-cli's words when --schematic-parity found no usable schematic (it still exits 0).
PARITY_NOT_RUN = "Failed to fetch schematic netlist"


class DrcKind(CheckKind):
    name: ClassVar[str] = "drc"
    description: ClassVar[str] = "KiCad design rule check (kicad-cli pcb drc), one job per board"

    def available(self) -> str | None:
        return kicad.unavailable()

    def plan(self, revision: RevisionFiles) -> list[PlannedJob]:
        jobs = []
        for design, config in kicad.plan_for(revision, "board"):
            assert design.board is not None
            params: dict[str, Any] = {
                "board": design.board,
                "schematic": design.schematic,
                "project": design.project,
                "fail_on": config.fail_on,
            }
            jobs.append(kicad.planned(self.name, design.board, design, config, params))
        return jobs

    def run(self, job: Job, ws: Workspace, heartbeat: Callable[[], None]) -> CheckResult:
        board_rel: str = job.params["board"]
        schematic_rel: str | None = job.params.get("schematic")
        subject: dict[str, Any] = {
            "board": board_rel,
            "schematic": schematic_rel,
            "project": job.params.get("project"),
            "fail_on": list(job.params.get("fail_on") or kicad.DEFAULT_FAIL_ON),
        }
        board = ws.src / board_rel
        started = kicad.begin(job, ws, subject, board_rel)
        if isinstance(started, CheckResult):
            return started
        kenv, details = started
        parity_off: str | None = None
        if not schematic_rel:
            parity_off = "no schematic of the board's name"
        elif problems := kicad.read_hierarchy(ws.src, schematic_rel).problems:
            parity_off = "the schematic cannot be read whole: " + "; ".join(problems)
        parity = parity_off is None
        report = ws.out / "report.json"
        report.unlink(missing_ok=True)
        args = ["pcb", "drc", "--format", "json", "--severity-all"]
        if parity:
            args.append("--schematic-parity")
        args += ["-o", str(report), board.name]
        run = kenv.run(args, cwd=board.parent, timeout_s=job.timeout_s, log=ws.log)
        details["wall_s"] = round(run.wall_s, 3)
        if run.timed_out:
            return CheckResult(
                "timed_out",
                f"DRC of {board_rel} did not finish within {job.timeout_s:.0f} s",
                details,
                kicad.log_artifact(ws),
            )
        if run.exit_code != 0:
            return kicad.errored(kicad.describe_exit(run), details, ws)
        try:
            data = kicad.read_report(report)
            found, sections, raw = kicad.drc_violations(data)
        except kicad.ReportError as exc:
            said = run.last_lines(10)
            return kicad.errored(
                f"{exc}" + (f"; kicad-cli said: {said}" if said else ""), details, ws
            )

        if parity_off is not None:
            details["schematic_parity"] = {"checked": False, "reason": parity_off}
        elif PARITY_NOT_RUN in run.output:
            lines = [ln for ln in run.output.splitlines() if ln.strip() and "parity" in ln.lower()]
            details["schematic_parity"] = {"checked": False, "reason": " ".join(lines)}
        else:
            details["schematic_parity"] = {"checked": True, "schematic": schematic_rel}
        details["sections"] = sections
        details["exclusions"] = kicad.exclusion_comments(raw)
        details["report_kicad_version"] = data.get("kicad_version")
        result = kicad.violation_result(
            kind=self.name,
            job=job,
            ws=ws,
            kenv=kenv,
            details=details,
            report_path=report,
            found=found,
            design_file=board_rel,
        )
        if schematic_rel and not details["schematic_parity"]["checked"]:
            result.summary += " (schematic parity not checked)"
        return result
