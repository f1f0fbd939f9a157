"""Rebuild the metadata index from the bucket: users, projects (tombstones skipped), revisions."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from hwrepo.adapters.db.index import Index
from hwrepo.domain.documents import (
    project_from_document,
    revision_from_manifest,
    user_from_document,
)
from hwrepo.domain.events import Event
from hwrepo.domain.reviews import THREAD_SCHEMA, VERDICT_SCHEMA, Thread, Verdict
from hwrepo.service_layer.backends import Backends
from hwrepo.service_layer.checks import record_in

log = logging.getLogger(__name__)


@dataclass
class ReindexReport:
    users: int = 0
    projects: int = 0
    revisions: int = 0
    checks: int = 0
    threads: int = 0
    verdicts: int = 0
    skipped: int = 0


def reindex(backends: Backends) -> ReindexReport:
    """Replace the index with what the bucket holds, in one transaction: readers see either the
    old index or the new one. Unpublished outbox events are kept."""
    store = backends.store
    report = ReindexReport()
    users = [user_from_document(store.get_json(k)) for k in store.list_keys("users/")]
    projects = []
    manifests: dict[str, list[str]] = {}
    reviews: dict[str, list[str]] = {}
    results = sorted(
        (k for k in store.list_keys("results/") if k.endswith(("/plan.json", "/check.json"))),
        key=_result_order,
    )
    for key in store.list_keys("projects/"):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == "project.json":
            projects.append(project_from_document(store.get_json(key)))
        elif len(parts) == 4 and parts[2] == "revisions" and parts[3].endswith(".json"):
            manifests.setdefault(parts[1], []).append(key)
        elif len(parts) >= 5 and parts[2] == "reviews" and parts[-1].endswith(".json"):
            reviews.setdefault(parts[1], []).append(key)

    with backends.writing() as index:
        index.clear()
        for user in users:
            index.save_user(user)
            report.users += 1
        known_users = {u.name for u in users}
        for project in projects:
            if project.deleted:
                report.skipped += 1
                continue
            if project.owner not in known_users:
                log.warning("skipping %s: its owner has no user document", project.full_name)
                report.skipped += 1
                continue
            project.members = {n: r for n, r in project.members.items() if n in known_users}
            index.save_project(project)
            report.projects += 1
            highest = 0
            for key in sorted(manifests.get(project.id, [])):
                revision = revision_from_manifest(store.get_json(key))
                index.add_revision(revision)
                highest = max(highest, revision.number)
                report.revisions += 1
            index.set_revision_counter(project.id, highest)
            for key in sorted(reviews.get(project.id, [])):
                _replay_review(index, store.get_json(key) or {}, report)
        for key in results:
            report.checks += _replay_results(index, store.get_json(key) or {})
    return report


def _replay_review(index: Index, doc: dict[str, Any], report: ReindexReport) -> None:
    if doc.get("schema") == THREAD_SCHEMA:
        index.save_thread(Thread.model_validate(doc))
        report.threads += 1
    elif doc.get("schema") == VERDICT_SCHEMA:
        index.save_verdict(Verdict.model_validate(doc))
        report.verdicts += 1


def _result_order(key: str) -> tuple[str, int, str]:
    """plan.json of a revision first, then its check runs in run order."""
    parts = key.split("/")
    if parts[-1] == "plan.json":
        return ("/".join(parts[:3]), 0, "")
    run = int(parts[4]) if len(parts) > 4 and parts[4].isdigit() else 0
    return ("/".join(parts[:3]), 1 + run, key)


def _replay_results(index: Index, doc: dict[str, Any]) -> int:
    """Fold a stored plan or check record into the index, as the recorder did from events."""
    found = 0
    if doc.get("schema") == "hwrepo.plan/1":
        for raw in doc.get("queued", []):
            found += record_in(index, Event.model_validate(raw))
        record_in(index, Event.model_validate(doc["planned"]))
    elif doc.get("schema") == "hwrepo.check/1" and doc.get("events"):
        # an external check: every event of its run, as it was reported
        for raw in doc["events"]:
            found += record_in(index, Event.model_validate(raw)) and raw.get("type") == (
                "check.queued"
            )
    elif doc.get("schema") == "hwrepo.check/1":
        record_in(index, Event.model_validate(doc["event"]))
    return found
