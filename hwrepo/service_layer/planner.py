"""Planning: from a `revision.created` event to the checks of that revision.

Every registered check kind plans jobs from the revision's manifest (reading small files of the
revision from the bucket). Check ids are derived from (revision, kind, job name), so planning the
same revision again yields the same ids and JetStream drops the duplicates. The planner needs only
the bucket and NATS — never the database.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from typing import Any

from hwrepo.adapters.objectstore import ObjectStore, blob_key, plan_key, project_key
from hwrepo.checks.core.kind import CheckKind, PlannedJob, job_for
from hwrepo.domain import events
from hwrepo.domain.checks import Job, Waiver
from hwrepo.domain.documents import revision_from_manifest
from hwrepo.domain.model import FileEntry
from hwrepo.service_layer import jobs

log = logging.getLogger(__name__)


class BucketRevision:
    """A revision as the planner sees it: its file list, and its files' bytes on demand."""

    def __init__(self, store: ObjectStore, manifest: dict[str, Any]) -> None:
        revision = revision_from_manifest(manifest)
        self.store = store
        self.project = manifest["project"]
        self.project_id = revision.project_id
        self.number = revision.number
        self.revision_id = revision.id
        self.files: list[FileEntry] = revision.files
        self._by_path = {f.path: f for f in revision.files}
        self._cache: dict[str, bytes] = {}

    def read(self, path: str) -> bytes:
        if path not in self._cache:
            entry = self._by_path.get(path)
            if entry is None:
                raise FileNotFoundError(path)
            data = self.store.get_bytes(blob_key(entry.sha256))
            if data is None:
                raise FileNotFoundError(f"{path}: blob {entry.sha256} is missing")
            self._cache[path] = data
        return self._cache[path]


@dataclass
class PlannedCheck:
    job: Job
    planned: PlannedJob
    finished: events.Event | None = None  # a planning error ends the check at once

    def queued_event(self) -> events.Event:
        return jobs.queued_event(self.job, self.planned.detected)


@dataclass
class RevisionPlan:
    project: str
    project_id: str
    revision_id: str
    number: int
    checks: list[PlannedCheck] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        """What the planner keeps in the bucket (reindex rebuilds the checks from it)."""
        return {
            "schema": "hwrepo.plan/1",
            "planned": self.planned_event().model_dump(mode="json"),
            "queued": [c.queued_event().model_dump(mode="json") for c in self.checks],
        }

    def planned_event(self) -> events.Event:
        return events.make_event(
            events.RevisionPlanned(
                project_id=self.project_id,
                revision_id=self.revision_id,
                number=self.number,
                checks=len(self.checks),
                errors=self.errors,
            ),
            id=events.event_id("revision.planned", self.revision_id),
            project=self.project,
            project_id=self.project_id,
            revision=self.number,
        )


def check_id(revision_id: str, kind: str, name: str) -> str:
    return events.event_id("check", revision_id, kind, name)


def project_waivers(store: ObjectStore, project_id: str) -> list[Waiver]:
    doc = store.get_json(project_key(project_id)) or {}
    return [Waiver.model_validate(w) for w in doc.get("waivers", [])]


def plan_revision(store: ObjectStore, kinds: list[CheckKind], manifest_key: str) -> RevisionPlan:
    manifest = store.get_json(manifest_key)
    if manifest is None:
        raise LookupError(f"manifest {manifest_key} is not in the bucket")
    revision = BucketRevision(store, manifest)
    waivers = project_waivers(store, revision.project_id)
    plan = RevisionPlan(
        project=revision.project,
        project_id=revision.project_id,
        revision_id=revision.revision_id,
        number=revision.number,
    )
    for kind in kinds:
        try:
            planned_jobs = kind.plan(revision)
        except Exception as exc:  # a kind's bug must not hide the other kinds' checks
            log.error("planning %s failed:\n%s", kind.name, traceback.format_exc())
            planned_jobs = [
                PlannedJob(name="planning", error=f"planning {kind.name} checks failed: {exc}")
            ]
        seen: set[str] = set()
        for planned in planned_jobs:
            if planned.name in seen:
                plan.errors.append(f"{kind.name}: two jobs named {planned.name!r}; kept the first")
                continue
            seen.add(planned.name)
            if planned.error is not None:
                plan.errors.append(f"{kind.name} {planned.name}: {planned.error}")
            job = job_for(
                planned,
                kind=kind.name,
                check_id=check_id(revision.revision_id, kind.name, planned.name),
                revision=revision,
                waivers=waivers,
            )
            check = PlannedCheck(job, planned)
            if planned.error is not None:  # recorded like any final state, for reindex
                check.finished = jobs.store_outcome(store, job, "errored", planned.error)
            plan.checks.append(check)
    store.put_json(plan_key(plan.project_id, plan.number), plan.document())
    return plan
