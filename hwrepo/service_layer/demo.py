"""Demo projects: on the first start of an empty repository, the example designs in designs/
(listed in designs/catalogue.toml) are published as projects of the user `demo`."""

from __future__ import annotations

import logging
import tempfile
import tomllib
from pathlib import Path

from hwrepo.adapters.archives import ArchiveLimits, StagingArea
from hwrepo.adapters.db.index import ProjectQuery
from hwrepo.service_layer import external, projects, revisions, users
from hwrepo.service_layer.backends import Backends

log = logging.getLogger(__name__)
DEMO_USER = "demo"
DESIGNS = Path(__file__).resolve().parents[2] / "designs"


def _is_empty(backends: Backends) -> bool:
    with backends.reading() as index:
        _, total = index.search_projects(ProjectQuery(viewer=None, per_page=1))
        any_user = bool(index.users())
    if total or any_user:
        return False
    return next(iter(backends.store.list_keys("projects/")), None) is None


def seed(backends: Backends, designs: Path = DESIGNS) -> int:
    catalogue = designs / "catalogue.toml"
    if not catalogue.exists() or not _is_empty(backends):
        return 0
    with catalogue.open("rb") as fh:
        entries = tomllib.load(fh).get("project", [])
    demo = users.ensure_user(backends, DEMO_USER)
    count = 0
    for entry in entries:
        folder = designs / entry["path"]
        project = projects.create_project(
            backends,
            demo,
            name=entry["name"],
            kind=entry.get("kind", "hardware"),
            licence=entry["licence"],
            description=entry.get("description", ""),
            topics=entry.get("topics", []),
            links=entry.get("links", []),
        )
        if entry.get("required_checks"):
            projects.update_project(
                backends,
                demo,
                project.owner,
                project.name,
                {"required_checks": entry["required_checks"]},
            )
        with tempfile.TemporaryDirectory(prefix="hwrepo-seed-") as tmp:
            staging = StagingArea(Path(tmp), ArchiveLimits())
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                if "__pycache__" in path.parts or path.suffix == ".pyc":
                    continue
                with path.open("rb") as fh:
                    staging.add_file(path.relative_to(folder).as_posix(), fh)
            outcome = revisions.create_revision(
                backends,
                demo,
                project.owner,
                project.name,
                staging,
                message=f"Example design {entry['path']}",
            )
        if reported := entry.get("external_check"):
            # what the project's own CI would report about this revision
            external.report_check(
                backends,
                demo,
                project.owner,
                project.name,
                outcome.revision.number,
                reported["name"],
                external.Report(
                    reported["state"],
                    reported.get("summary"),
                    reported.get("details_url"),
                ),
            )
        count += 1
    log.info("published %d demo projects", count)
    return count
