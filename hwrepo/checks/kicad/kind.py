"""What the KiCad kinds (drc, erc, render) share on the worker: planning from the designs of a
revision and the `[kicad]` table of hwrepo.toml, the request their in-sandbox half gets (the
job, kicad-cli's version and KiCad's library directories), and the verdict on the violations
it found.

The in-sandbox half is `kicad/inside.py`: everything that reads the design or runs kicad-cli.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from pathlib import Path
from typing import Any, ClassVar

from hwrepo.checks.core.compare import BOARD_KEYS, Key
from hwrepo.checks.core.findings import FindingsKind
from hwrepo.checks.core.kind import (
    CheckResult,
    JobError,
    PlannedJob,
    RevisionFiles,
    Workspace,
)
from hwrepo.checks.core.manifest import MANIFEST, KicadTable, Manifest, ManifestError
from hwrepo.checks.kicad.designs import Design, find_designs
from hwrepo.checks.run import runner
from hwrepo.domain.checks import Job

KICAD_CLI = "kicad-cli"
DEFAULT_TIMEOUTS_S = {"drc": 1200.0, "erc": 600.0, "render": 1200.0}
SARIF = "application/sarif+json"
DPKG_STATUS = Path("/var/lib/dpkg/status")
PACKAGES = ("kicad", "kicad-symbols", "kicad-footprints", "kicad-packages3d")


def kicad_cli() -> str | None:
    return shutil.which(KICAD_CLI)


def unavailable() -> str | None:
    """None when kicad-cli is installed here, else why not."""
    if kicad_cli() is None:
        return f"{KICAD_CLI} is not on PATH (KiCad 9 is needed: apt-get install kicad)"
    return None


def stock_dir(cli: str) -> Path:
    """KiCad's shared data (templates, symbols, footprints, 3D models) next to kicad-cli."""
    candidate = Path(cli).resolve().parent.parent / "share" / "kicad"
    return candidate if candidate.is_dir() else Path("/usr/share/kicad")


@functools.cache
def kicad_version(cli: str) -> str:
    """`kicad-cli version`, asked once per process (in a sandbox of its own)."""
    said = runner.probe((cli, "version"))
    version = said.strip().splitlines()[-1] if said and said.strip() else ""
    if not re.match(r"^\d+\.\d+", version):
        raise JobError(f"{KICAD_CLI} version failed: {(said or 'no output').strip()[-500:]}")
    return version


@functools.cache
def package_versions() -> dict[str, str]:
    """The installed Debian packages of KiCad and its libraries (from dpkg's database)."""
    try:
        text = DPKG_STATUS.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    versions: dict[str, str] = {}
    for stanza in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        if fields.get("Package") in PACKAGES and fields.get("Status", "").endswith(" installed"):
            versions[fields["Package"]] = fields.get("Version", "")
    return versions


def library_paths(cli: str, version: str) -> dict[str, str]:
    """KICAD<major>_SYMBOL_DIR and friends: KiCad's own, unless the worker's environment names
    a directory elsewhere (a deployment that keeps a library apart says so there)."""
    major = version.split(".")[0]
    stock = stock_dir(cli)
    defaults = {
        "SYMBOL_DIR": stock / "symbols",
        "FOOTPRINT_DIR": stock / "footprints",
        "3DMODEL_DIR": stock / "3dmodels",
        "TEMPLATE_DIR": stock / "template",
    }
    return {
        f"KICAD{major}_{k}": os.environ.get(f"KICAD{major}_{k}") or str(v)
        for k, v in defaults.items()
    }


class KicadConfig:
    """The `[kicad]` table as a kind plans with it: its values, or the errors that concern
    the kind (an invalid table stops only the kinds whose keys are wrong)."""

    KEYS: ClassVar[dict[str, set[str]]] = {
        "drc": {"fail_on", "drc_timeout_s"},
        "erc": {"fail_on", "erc_timeout_s"},
        "render": {"render_timeout_s"},
    }

    def __init__(self, revision: RevisionFiles) -> None:
        present = any(f.path == MANIFEST for f in revision.files)
        manifest = Manifest.parse(MANIFEST, revision.read(MANIFEST) if present else None)
        self.error: ManifestError | None = None
        try:
            self.table: KicadTable = manifest.table("kicad") or KicadTable()
        except ManifestError as exc:
            self.table, self.error = KicadTable(), exc

    def error_for(self, kind: str) -> str | None:
        if self.error is None:
            return None
        messages = self.error.concerning(self.KEYS[kind], set(KicadTable.model_fields))
        return "; ".join(messages) or None

    def timeout_s(self, kind: str) -> float:
        return getattr(self.table, f"{kind}_timeout_s") or DEFAULT_TIMEOUTS_S[kind]


class KicadKind(FindingsKind):
    """A KiCad kind: one job per design that has what the kind needs (`needs`: "board",
    "schematic" or "any"), run by `inside` in the sandbox."""

    needs: ClassVar[str]
    tool: ClassVar[str] = KICAD_CLI
    compare_keys: ClassVar[list[Key]] = BOARD_KEYS
    compare_positional: ClassVar[bool] = True

    def available(self) -> str | None:
        return unavailable()

    # -- planning -------------------------------------------------------------------------

    def job_name(self, design: Design) -> str:
        return design.label

    def params(self, design: Design, config: KicadConfig) -> dict[str, Any]:
        return {"project": design.project, "schematic": design.schematic, "board": design.board}

    def plan(self, revision: RevisionFiles) -> list[PlannedJob]:
        designs = find_designs(revision)
        if self.needs != "any":
            designs = [d for d in designs if getattr(d, self.needs)]
        if not designs:
            return []
        config = KicadConfig(revision)
        return [
            PlannedJob(
                name=self.job_name(design),
                params=self.params(design, config),
                inputs=design.inputs,
                timeout_s=config.timeout_s(self.name),
                detected=design.detected(),
                error=config.error_for(self.name),
            )
            for design in designs
        ]

    # -- running --------------------------------------------------------------------------

    def request(self, job: Job, ws: Workspace) -> dict[str, Any]:
        cli = kicad_cli()
        if cli is None:
            raise JobError(unavailable() or f"{KICAD_CLI} is missing")
        version = kicad_version(cli)
        return {
            **super().request(job, ws),
            "kicad": {"cli": cli, "version": version, "paths": library_paths(cli, version)},
        }

    def mounts(self, job: Job) -> list[Path]:
        """Library directories the worker's environment keeps outside the system's."""
        cli = kicad_cli()
        if cli is None:
            return []
        paths = library_paths(cli, kicad_version(cli)).values()
        return [Path(p) for p in paths if Path(p).is_dir() and not Path(p).is_relative_to("/usr")]

    def failure(self, job: Job, ws: Workspace, state: Any, summary: str) -> CheckResult:
        result = super().failure(job, ws, state, summary)
        result.details = {"tool": KICAD_CLI, **self.subject(job), "kicad_version": None}
        return result

    def subject(self, job: Job) -> dict[str, Any]:
        keys = ("board", "schematic", "project", "fail_on")
        return {k: job.params[k] for k in keys if k in job.params}

    def details(self, job: Job, ws: Workspace, details: dict[str, Any]) -> dict[str, Any]:
        if isinstance(details.get("libraries"), dict):
            details["libraries"]["packages"] = package_versions()
        return details

    def design_file(self, job: Job) -> str | None:
        return job.params.get("board") or job.params.get("schematic")

    def tool_version(self, details: dict[str, Any]) -> str:
        return str(details.get("kicad_version"))
