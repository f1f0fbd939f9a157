"""The one interface every check kind implements, and the records that cross it.

A kind is a class with a `name`, a `plan()` that turns a revision's file list into jobs (pure:
it may read small files of the revision, never run tools), and a `run()` that executes one job in
a workspace and turns the tool's output into a `CheckResult`. The planner, the worker loop, the
queue, the storage and the API never grow a branch per kind.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from hwrepo.domain.checks import Job, Waiver
from hwrepo.domain.model import FileEntry

FinalState = Literal["passed", "failed", "errored", "timed_out", "cancelled"]


class RevisionFiles(Protocol):
    """What a planner sees of a revision."""

    project: str  # "owner/name"
    project_id: str
    number: int
    revision_id: str
    files: list[FileEntry]

    def read(self, path: str) -> bytes:
        """The bytes of one file of the revision (fetched from the bucket, cached)."""
        ...


@dataclass
class PlannedJob:
    """One job a kind wants run for a revision.

    `name` is unique within the kind for the revision and tells a person which job it is
    (e.g. "tests/test_counter.py · icarus"). `params` is JSON-serialisable and kind-specific.
    `inputs`: the revision paths the job needs (None: all files). `detected`: what the planner
    found and why (shown in the API). A job with `error` set is not run: its check ends `errored`
    with that message at once (e.g. an invalid hwrepo.toml, naming the key and what was expected).
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] | None = None
    timeout_s: float = 900.0
    detected: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def job_for(
    planned: PlannedJob,
    *,
    kind: str,
    check_id: str,
    revision: RevisionFiles,
    waivers: list[Waiver] | None = None,
) -> Job:
    """The job a planner queues for `planned`: its inputs picked from the revision's files,
    with the waivers that apply to its kind."""
    wanted = set(planned.inputs) if planned.inputs is not None else None
    return Job(
        check_id=check_id,
        kind=kind,
        name=planned.name,
        params=planned.params,
        inputs=[f for f in revision.files if wanted is None or f.path in wanted],
        timeout_s=planned.timeout_s,
        project=revision.project,
        project_id=revision.project_id,
        revision=revision.number,
        revision_id=revision.revision_id,
        waivers=[w for w in waivers or [] if w.kind in {"*", kind}],
    )


@dataclass
class Artifact:
    """A file a job produced, stored with the result (`name` is its path under the result)."""

    name: str
    path: Path
    media_type: str
    description: str = ""


@dataclass
class CheckResult:
    state: FinalState
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)


@dataclass
class Workspace:
    """A job's private directories. `src` holds the job's inputs at their revision paths; `out`
    is where artifacts go; `tmp` is scratch; `cache` is shared by all jobs of the kind on this
    worker and survives them (environments, build caches). `log` collects the job's log."""

    root: Path
    cache: Path

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def log(self) -> Path:
        return self.out / "log.txt"

    def create(self) -> Workspace:
        for d in (self.src, self.out, self.tmp, self.cache):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    @classmethod
    def from_directory(
        cls, root: Path, cache: Path, files: dict[str, Path] | None = None
    ) -> Workspace:
        """A workspace whose src is filled from local files (tests, benchmarks)."""
        ws = cls(root=root, cache=cache).create()
        for rel, path in (files or {}).items():
            target = ws.src / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        return ws


class CheckKind(ABC):
    """Subclass, set `name`, implement `plan` and `run`, and add the class to registry.KINDS."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    def available(self) -> str | None:
        """None when this machine can run the kind; else why not (a missing tool). Workers only
        take jobs of available kinds."""
        return None

    @abstractmethod
    def plan(self, revision: RevisionFiles) -> list[PlannedJob]: ...

    @abstractmethod
    def run(self, job: Job, ws: Workspace, heartbeat: Callable[[], None]) -> CheckResult:
        """Run one job. Blocking; called in a worker thread. Call `heartbeat()` at least every
        few seconds during long steps is NOT needed: the worker keeps the job alive on its own;
        `heartbeat` exists for kinds that want to report progress. Never raise for a tool's
        failure: return `errored` with the tool's message. Honour `job.timeout_s` (return
        `timed_out`)."""


@dataclass
class LocalRevision:
    """A revision made from a local directory (tests, benchmarks, a future local CLI run)."""

    root: Path
    project: str = "local/design"
    project_id: str = "local"
    number: int = 1
    revision_id: str = "local-1"
    files: list[FileEntry] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.files:
            import hashlib

            from hwrepo.domain.media import media_type

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
