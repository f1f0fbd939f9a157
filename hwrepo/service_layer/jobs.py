"""Running one check job on a worker: inputs from the bucket (through a local blob cache),
the kind's `run()` in a private workspace, outputs and the check record back to the bucket.

Nothing here touches the database; the result travels as a `check.finished` event, and every
run that ends — by running, or without running — leaves its record (`check.json`) in the bucket.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import tempfile
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwrepo.adapters.objectstore import (
    ObjectStore,
    at_once,
    blob_key,
    live_log_prefix,
    result_prefix,
)
from hwrepo.checks.core.kind import Artifact, CheckKind, CheckResult, FinalState, Workspace
from hwrepo.checks.run.runner import Sandbox
from hwrepo.domain import events
from hwrepo.domain.checks import Job
from hwrepo.domain.model import FileEntry, utcnow
from hwrepo.service_layer import livelog

log = logging.getLogger(__name__)
WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"
# Removing a job's workspace right after its sandbox ended takes from a millisecond to over
# 100 ms (the kernel still tearing down the sandbox's mounts of it): one thread of its own
# removes them, after the result is stored, so that neither the check.finished event nor the
# worker's next job waits for it. Its queue is worked off before the process exits.
_REMOVER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="workspace-removal")


@dataclass
class WorkerDirs:
    """Where a worker keeps its blob cache, per-kind caches and job workspaces."""

    root: Path

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    def kind_cache(self, kind: str) -> Path:
        return self.root / "kinds" / kind

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"


def fetch_blob(store: ObjectStore, entry: FileEntry, dirs: WorkerDirs) -> Path:
    """The blob's local copy, downloaded once and verified against its SHA-256."""
    cached = dirs.blobs / entry.sha256[:2] / entry.sha256
    if cached.exists():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in store.stream(blob_key(entry.sha256)):
                digest.update(chunk)
                fh.write(chunk)
        if digest.hexdigest() != entry.sha256:
            raise ValueError(f"{entry.path}: the stored bytes do not match their SHA-256")
        os.replace(tmp, cached)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return cached


def materialise(store: ObjectStore, job: Job, ws: Workspace, dirs: WorkerDirs) -> None:
    for entry in job.inputs:
        target = ws.src / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        # A copy, not a link: the job may write to its inputs without touching the cache.
        shutil.copyfile(fetch_blob(store, entry, dirs), target)


def job_event(job: Job, data: events.EventData, *id_parts: str) -> events.Event:
    """An event about a job's check; its id is derived from (type, check, run, id_parts)."""
    return events.make_event(
        data,
        id=events.event_id(data.TYPE, job.check_id, str(job.run), *id_parts),
        project=job.project,
        project_id=job.project_id,
        revision=job.revision,
    )


def queued_event(job: Job, detected: dict[str, Any]) -> events.Event:
    return job_event(
        job,
        events.CheckQueued(
            check_id=job.check_id,
            run=job.run,
            revision_id=job.revision_id,
            project_id=job.project_id,
            number=job.revision,
            kind=job.kind,
            name=job.name,
            detected=detected,
            job=job.model_dump(mode="json"),
        ),
    )


def finished_event(
    job: Job,
    state: str,
    summary: str,
    *,
    counts: dict[str, Any] | None = None,
    details: str | None = None,
    artifacts: list[dict[str, Any]] | None = None,
    started: Any = None,
    superseded_by: int | None = None,
) -> events.Event:
    return job_event(
        job,
        events.CheckFinished(
            check_id=job.check_id,
            run=job.run,
            revision_id=job.revision_id,
            project_id=job.project_id,
            number=job.revision,
            kind=job.kind,
            name=job.name,
            state=state,
            summary=summary,
            counts=counts or {},
            details=details,
            artifacts=artifacts or [],
            started=started,
            finished=utcnow(),
            superseded_by=superseded_by,
        ),
    )


def started_event(job: Job, attempt: int) -> events.Event:
    return job_event(
        job,
        events.CheckStarted(
            check_id=job.check_id,
            run=job.run,
            revision_id=job.revision_id,
            kind=job.kind,
            worker=WORKER_NAME,
            attempt=attempt,
        ),
        str(attempt),
    )


def _counts(result: CheckResult) -> dict[str, Any]:
    counts = result.details.get("counts")
    return counts if isinstance(counts, dict) else {}


def record_key(job: Job) -> str:
    """Where a run's check record (`hwrepo.check/1`) is kept: what reindex rebuilds checks from."""
    return result_prefix(job.project_id, job.revision, job.check_id, job.run) + "check.json"


def stored_finish(store: ObjectStore, job: Job) -> events.Event | None:
    """The `check.finished` event of this run as recorded in the bucket, if it has ended."""
    record = store.get_json(record_key(job))
    if not isinstance(record, dict) or record.get("schema") != "hwrepo.check/1":
        return None
    return events.Event.model_validate(record["event"])


def store_outcome(
    store: ObjectStore,
    job: Job,
    state: FinalState,
    summary: str,
    *,
    superseded_by: int | None = None,
) -> events.Event:
    """End a run that does not run (cancelled, errored by its planning or by workers that kept
    dying): its record goes to the bucket like any result, so that every final state is where
    reindex reads it. A run already recorded keeps its record (and its event is returned)."""
    done = stored_finish(store, job)
    if done is not None:
        return done
    event = finished_event(
        job, state, summary, details=record_key(job), superseded_by=superseded_by
    )
    _put_record(store, job, event, {})
    return event


def _put_record(store: ObjectStore, job: Job, event: events.Event, details: dict[str, Any]) -> None:
    store.put_json(
        record_key(job),
        {
            "schema": "hwrepo.check/1",
            "event": event.model_dump(mode="json"),
            "job": job.model_dump(mode="json"),
            "details": details,
        },
    )


def store_result(store: ObjectStore, job: Job, result: CheckResult, started: Any) -> events.Event:
    """Upload the artifacts and the check record; return the `check.finished` event."""
    prefix = result_prefix(job.project_id, job.revision, job.check_id, job.run)
    artifacts = []
    for artifact in result.artifacts:
        # What a job left in its workspace may be a link a sandboxed process planted: only
        # regular files reached without a symlink leave the worker.
        if artifact.path.is_symlink() or not artifact.path.is_file():
            continue
        artifacts.append(
            {
                "name": artifact.name,
                "key": prefix + "artifacts/" + artifact.name,
                "media_type": artifact.media_type,
                "size": artifact.path.stat().st_size,
                "description": artifact.description,
                "path": artifact.path,
            }
        )

    def put(item: dict[str, Any]) -> None:
        store.put_file(item["key"], item.pop("path"), item["size"], item["media_type"])

    # The artifacts at once (a job's are a few small files: each put is mostly a round trip),
    # then the record that lists them.
    at_once(put, artifacts)
    event = finished_event(
        job,
        result.state,
        result.summary,
        counts=_counts(result),
        details=record_key(job),
        artifacts=artifacts,
        started=started,
    )
    _put_record(store, job, event, result.details)
    return event


def execute(
    store: ObjectStore, kind: CheckKind, job: Job, dirs: WorkerDirs, attempt: int = 1
) -> events.Event:
    """Run the job to its end and store its outputs. Whatever happens inside the kind, the
    answer is a `check.finished` event (an exception becomes `errored`, never `passed`).
    `attempt`: the delivery of the job; only a later one can find a live log of an earlier."""
    started = utcnow()
    ws = Workspace(
        root=dirs.jobs / f"{job.job_id}-{uuid.uuid4().hex[:8]}", cache=dirs.kind_cache(kind.name)
    ).create()
    live = live_log_prefix(job.project_id, job.revision, job.check_id, job.run)
    copier = livelog.LiveLog(store, live, ws.log, clear=attempt > 1)
    try:
        try:
            materialise(store, job, ws, dirs)
            with copier:
                result = kind.run(job, ws, Sandbox(ws))
        except Exception as exc:
            log.error("job %s (%s) failed:\n%s", job.job_id, job.name, traceback.format_exc())
            ws.log.parent.mkdir(parents=True, exist_ok=True)
            with ws.log.open("a") as fh:
                fh.write(traceback.format_exc())
            result = CheckResult(
                state="errored",
                summary=f"the {kind.name} check could not run: {exc.__class__.__name__}: {exc}",
                artifacts=[Artifact("log.txt", ws.log, "text/plain", "the job's log")],
            )
        finished = store_result(store, job, result, started)
        if copier.wrote or attempt > 1:
            livelog.remove(store, live)  # the whole log is the run's log.txt now
        return finished
    finally:
        _REMOVER.submit(ws.remove)
