"""A revision made from a local directory: tests, benchmarks, a future local CLI run."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from hwrepo.checks.core.kind import PlannedJob, Workspace, job_for
from hwrepo.domain.checks import Job
from hwrepo.domain.media import media_type
from hwrepo.domain.model import FileEntry


@dataclass
class LocalRevision:
    """A revision of the files under `root`, as the planner and a worker would see it."""

    root: Path
    project: str = "local/design"
    project_id: str = "local"
    number: int = 1
    revision_id: str = "local-1"
    files: list[FileEntry] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.files:
            for path in sorted(p for p in self.root.rglob("*") if p.is_file()):
                rel = path.relative_to(self.root).as_posix()
                if "__pycache__" in rel:
                    continue
                data = path.read_bytes()
                self.files.append(
                    FileEntry(rel, len(data), hashlib.sha256(data).hexdigest(), media_type(rel))
                )

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def job(self, planned: PlannedJob, kind: str, check_id: str = "local-check") -> Job:
        """The Job a planner would queue for `planned`."""
        return job_for(planned, kind=kind, check_id=check_id, revision=self)

    def workspace(self, job: Job, root: Path, cache: Path) -> Workspace:
        """A workspace whose src holds the job's inputs, as a worker would lay it out."""
        return Workspace.from_directory(
            root, cache, {f.path: self.root / f.path for f in job.inputs}
        )
