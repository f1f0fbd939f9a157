"""Rebuild the metadata index from the bucket: users, projects (tombstones skipped), revisions."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hwrepo.domain.documents import (
    project_from_document,
    revision_from_manifest,
    user_from_document,
)
from hwrepo.service_layer.backends import Backends

log = logging.getLogger(__name__)


@dataclass
class ReindexReport:
    users: int = 0
    projects: int = 0
    revisions: int = 0
    skipped: int = 0


def reindex(backends: Backends) -> ReindexReport:
    """Replace the index with what the bucket holds, in one transaction: readers see either the
    old index or the new one. Unpublished outbox events are kept."""
    store = backends.store
    report = ReindexReport()
    users = [user_from_document(store.get_json(k)) for k in store.list_keys("users/")]
    projects = []
    manifests: dict[str, list[str]] = {}
    for key in store.list_keys("projects/"):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == "project.json":
            projects.append(project_from_document(store.get_json(key)))
        elif len(parts) == 4 and parts[2] == "revisions" and parts[3].endswith(".json"):
            manifests.setdefault(parts[1], []).append(key)

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
    return report
