"""The one interface every check kind implements, and the records that cross it.

A kind is a class with a `name` and

- `plan(revision)`: the jobs of a revision, from its file list and small files read in Python
  (pure: no tool, no subprocess, nothing read outside the revision);
- `run(job, ws, sandbox)`: one job, every process of it started through `sandbox` (the job's
  sandbox, `hwrepo.checks.run.runner.Sandbox`), its output turned into a `CheckResult`.

Most kinds are a `SandboxedKind`: their work is one process of hwrepo's own Python in the
sandbox (`inside`, a function that reads the revision, runs the tools and parses their reports
there) and `result()` on the worker, which turns that function's response into the verdict. The
planner, the worker loop, the queue, the storage and the API never grow a branch per kind.

This module is imported inside the sandbox too: it imports nothing but the standard library.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

if TYPE_CHECKING:
    from hwrepo.checks.core.compare import CheckSide, Compared
    from hwrepo.checks.run.runner import Sandbox
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
    from hwrepo.domain.checks import Job  # not at the top: this module runs in the sandbox too

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


class JobError(Exception):
    """The job cannot start here (a tool that cannot be asked its version, say): the check
    ends `errored` with this message."""


# Artifacts a kind may publish, by suffix: what the pages and the API serve them as.
_ARTIFACT_TYPES = {
    ".txt": "text/plain",
    ".json": "application/json",
    ".sarif": "application/sarif+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".csv": "text/csv",
    ".xml": "application/xml",
    ".fst": "application/x-fst",
    ".vcd": "text/x-vcd",
}


def artifacts_from(ws: Workspace, listed: Any) -> list[Artifact]:
    """The artifacts an in-sandbox function says it made, each checked: a relative name under
    `ws.out` of a known type, a regular file that no symlink leads to (the sandbox wrote
    there; a planted link must not carry a host file out)."""
    found: list[Artifact] = []
    if not isinstance(listed, list):
        return found
    out = ws.out.resolve()
    for item in listed:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        name = item["name"]
        media = _ARTIFACT_TYPES.get(Path(name).suffix.lower())
        parts = Path(name).parts
        if media is None or not parts or Path(name).is_absolute() or ".." in parts:
            continue
        path = out / name
        here = out
        if any((here := here / part).is_symlink() for part in parts):
            continue
        if not path.is_file() or any(a.name == name for a in found):
            continue
        description = str(item.get("description", ""))[:200]
        found.append(Artifact(name, path, media, description))
    return found


class CheckKind(ABC):
    """Subclass, set `name`, implement `plan` and `run`, and add the class to kinds.KINDS."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    def available(self) -> str | None:
        """None when this machine can run the kind; else why not (a missing tool). Workers only
        take jobs of available kinds. Looks at installations only: runs nothing."""
        return None

    @abstractmethod
    def plan(self, revision: RevisionFiles) -> list[PlannedJob]: ...

    def compare(self, a: CheckSide | None, b: CheckSide | None) -> Compared:
        """What changed between two runs of this check (a: the older revision's, None when the
        check is new; b: the newer's, None when it is gone), in the kind's own terms. The
        comparison service adds the states; by default nothing more is said."""
        from hwrepo.checks.core.compare import Compared

        return Compared()

    @abstractmethod
    def run(self, job: Job, ws: Workspace, sandbox: Sandbox) -> CheckResult:
        """Run one job. Blocking; called in a worker thread; every process goes through
        `sandbox`. Never raise for a tool's failure: return `errored` with the tool's message.
        Honour `job.timeout_s` (return `timed_out`)."""


class SandboxedKind(CheckKind):
    """A kind whose job is one process of hwrepo's Python in the sandbox, then a verdict.

    `inside` names the in-sandbox function ("package.module:function"): it gets `request(job)`
    (JSON), reads /job/src, runs the tools, writes artifacts to /job/out and returns a JSON
    object; `result()` turns that object, hostile like everything the sandbox wrote, into the
    check's result on the worker.
    """

    inside: ClassVar[str]

    def request(self, job: Job, ws: Workspace) -> dict[str, Any]:
        return {"name": job.name, "params": job.params, "timeout_s": job.timeout_s}

    def mounts(self, job: Job) -> list[Path]:
        """Host directories the function needs read-only, besides the tool installations."""
        return []

    @abstractmethod
    def result(self, job: Job, ws: Workspace, response: dict[str, Any]) -> CheckResult: ...

    def failure(self, job: Job, ws: Workspace, state: FinalState, summary: str) -> CheckResult:
        """The result when the function gave no response (the sandbox stopped it, it crashed)."""
        log = artifacts_from(ws, [{"name": "log.txt", "description": "the job's log"}])
        return CheckResult(state, summary, {}, log)

    def run(self, job: Job, ws: Workspace, sandbox: Sandbox) -> CheckResult:
        from hwrepo.checks.run.runner import SandboxUnavailable

        try:
            request, mounts = self.request(job, ws), self.mounts(job)
        except JobError as exc:
            return self.failure(job, ws, "errored", str(exc))
        try:
            done = sandbox.python(self.inside, request, timeout_s=job.timeout_s, ro=mounts)
        except SandboxUnavailable as exc:
            return self.failure(job, ws, "errored", f"no sandbox to run {job.name} in: {exc}")
        if done.timed_out:
            return self.failure(
                job, ws, "timed_out", f"{job.name} did not finish within {job.timeout_s:.0f} s"
            )
        if done.response is None:
            return self.failure(
                job, ws, "errored", f"the check of {job.name} failed in its sandbox: {done.error}"
            )
        return self.result(job, ws, done.response)
