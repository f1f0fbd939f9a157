"""Kind `erc`: KiCad's electrical rule check, one job per root schematic.

`kicad-cli sch erc --format json --severity-all` on the root of each hierarchy (a sub-sheet run
alone gives different, wrong findings), in a clean KiCad configuration of the job's own. Item
positions are converted to real mm (kicad-cli 9 writes them 100 times too small) and carry the
sheet path they were found on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from hwrepo.checks.core.kind import (
    Artifact,
    CheckKind,
    CheckResult,
    Job,
    PlannedJob,
    RevisionFiles,
    Workspace,
)
from hwrepo.checks.kicad import common as kicad


class ErcKind(CheckKind):
    name: ClassVar[str] = "erc"
    description: ClassVar[str] = (
        "KiCad electrical rule check (kicad-cli sch erc), one job per root schematic"
    )

    def available(self) -> str | None:
        return kicad.unavailable()

    def plan(self, revision: RevisionFiles) -> list[PlannedJob]:
        jobs = []
        for design, config in kicad.plan_for(revision, "schematic"):
            assert design.schematic is not None
            params: dict[str, Any] = {
                "schematic": design.schematic,
                "sheets": design.sheets,
                "project": design.project,
                "fail_on": config.fail_on,
            }
            jobs.append(kicad.planned(self.name, design.schematic, design, config, params))
        return jobs

    def run(self, job: Job, ws: Workspace, heartbeat: Callable[[], None]) -> CheckResult:
        schematic_rel: str = job.params["schematic"]
        subject: dict[str, Any] = {
            "schematic": schematic_rel,
            "project": job.params.get("project"),
            "fail_on": list(job.params.get("fail_on") or kicad.DEFAULT_FAIL_ON),
        }
        schematic = ws.src / schematic_rel
        started = kicad.begin(job, ws, subject, schematic_rel)
        if isinstance(started, CheckResult):
            return started
        kenv, details = started

        report = ws.out / "report.json"
        report.unlink(missing_ok=True)
        args = ["sch", "erc", "--format", "json", "--severity-all", "-o", str(report)]
        run = kenv.run(
            [*args, schematic.name], cwd=schematic.parent, timeout_s=job.timeout_s, log=ws.log
        )
        details["wall_s"] = round(run.wall_s, 3)
        if run.timed_out:
            return CheckResult(
                "timed_out",
                f"ERC of {schematic_rel} did not finish within {job.timeout_s:.0f} s",
                details,
                kicad.log_artifact(ws),
            )
        if run.exit_code != 0:
            return kicad.errored(kicad.describe_exit(run), details, ws)
        hierarchy = kicad.read_hierarchy(ws.src, schematic_rel)
        details["hierarchy"] = [f.relative_to(ws.src).as_posix() for f in hierarchy.files]
        if hierarchy.problems:
            report_artifact = [Artifact("report.json", report, kicad.JSON, "ERC report")]
            summary = "part of the schematic was not checked (kicad-cli skips it silently): "
            return kicad.errored(
                summary + "; ".join(hierarchy.problems),
                details,
                ws,
                *(report_artifact if report.is_file() else []),
            )
        try:
            data = kicad.read_report(report)
            entries = kicad.erc_entries(data)
            scale = kicad.erc_position_scale(data, hierarchy.files, kenv.version)
            found = kicad.erc_violations(data, scale["scale"])
        except kicad.ReportError as exc:
            said = run.last_lines(10)
            return kicad.errored(
                f"{exc}" + (f"; kicad-cli said: {said}" if said else ""), details, ws
            )

        details["sheets"] = [
            {
                "path": sheet.get("path"),
                "uuid_path": sheet.get("uuid_path"),
                "violations": len(sheet.get("violations") or []),
            }
            for sheet in data.get("sheets", [])
            if isinstance(sheet, dict)
        ]
        details["positions"] = scale
        details["exclusions"] = kicad.exclusion_comments([e for _s, e in entries])
        details["report_kicad_version"] = data.get("kicad_version")
        return kicad.violation_result(
            kind=self.name,
            job=job,
            ws=ws,
            kenv=kenv,
            details=details,
            report_path=report,
            found=found,
            design_file=schematic_rel,
        )
