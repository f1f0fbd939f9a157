"""Comparing two revisions in the checks' own terms.

A comparison pairs the two revisions' checks by (kind, name) and lets each kind say what changed
(`CheckKind.compare`: new and resolved violations, newly failing tests, changed ports, BOM
lines…); this module never looks inside a kind's entry. Files are compared by SHA-256; a unified
diff of one changed text file is made on request.

Comparisons are computed from the checks' stored records and cached in the bucket
(`comparisons/<project-id>/<a>...<b>/comparison.json`, with the pictures kinds made beside it under
`artifacts/`). A cached comparison is used while its `basis` — the runs and states of both
revisions' checks — is what the index says now; a re-run or a late check makes a new one. When
the last check of a revision ends, the recorder computes the comparison with its parent and
announces `comparison.ready` through the outbox, so a reviewer opening it waits for nothing.

The API process reads revision bytes here only to copy them (images into a difference picture)
and to split two text files into lines for a diff (bounded by DIFF_LIMIT; nothing a file says
makes this code open anything else).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
from typing import Any

from hwrepo.adapters.objectstore import ObjectStore, comparison_prefix
from hwrepo.checks.core.compare import CheckSide, Compared
from hwrepo.checks.registry import kinds_table
from hwrepo.domain import events, media
from hwrepo.domain.checks import Check
from hwrepo.domain.errors import Invalid, NotFound, TooLarge
from hwrepo.domain.model import FileEntry, Project, Revision, User, utcnow
from hwrepo.service_layer.backends import Backends
from hwrepo.service_layer.checks import revision_checks
from hwrepo.service_layer.revisions import get_revision

log = logging.getLogger(__name__)

SCHEMA = "hwrepo.comparison/2"  # a document of another schema is computed again
# An artifact a kind reads to compare (a BOM, a view) is read whole; larger ones are left out.
ARTIFACT_LIMIT = 32 * 1024 * 1024
# A text diff is made of files up to this size (each side).
DIFF_LIMIT = 2 * 1024 * 1024
DIFF_CONTEXT = 3


# -- what is compared ------------------------------------------------------------------------
def pair_checks(
    before: list[Check], after: list[Check]
) -> list[tuple[str, str, Check | None, Check | None]]:
    """(kind, name, check in a, check in b), matched by kind and name, in a stable order."""
    a = {(c.kind, c.name): c for c in before}
    b = {(c.kind, c.name): c for c in after}
    return [(k, n, a.get((k, n)), b.get((k, n))) for k, n in sorted(set(a) | set(b))]


def basis(before: list[Check], after: list[Check]) -> list[list[Any]]:
    """What a comparison was computed from: every check's id, run and state on both sides."""
    return [
        sorted([c.id, c.run, c.state.value] for c in before),
        sorted([c.id, c.run, c.state.value] for c in after),
    ]


def basis_digest(value: list[list[Any]]) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:16]


def pair_slug(kind: str, name: str) -> str:
    return hashlib.sha256(f"{kind}\0{name}".encode()).hexdigest()[:16]


def file_changes(before: list[FileEntry], after: list[FileEntry]) -> dict[str, list[Any]]:
    a = {f.path: f for f in before}
    b = {f.path: f for f in after}

    def brief(f: FileEntry) -> dict[str, Any]:
        return {"path": f.path, "size": f.size, "sha256": f.sha256, "media_type": f.media_type}

    return {
        "added": [brief(b[p]) for p in sorted(set(b) - set(a))],
        "removed": [brief(a[p]) for p in sorted(set(a) - set(b))],
        "changed": [
            {
                "path": p,
                "text": is_text(b[p]) and is_text(a[p]),
                "a": {"size": a[p].size, "sha256": a[p].sha256},
                "b": {"size": b[p].size, "sha256": b[p].sha256},
            }
            for p in sorted(set(a) & set(b))
            if a[p].sha256 != b[p].sha256
        ],
    }


def is_text(entry: FileEntry) -> bool:
    return media.is_text(entry.media_type)


def headline(entry: dict[str, Any]) -> str:
    """A line for people from whatever lists a kind's entry holds ("1 new, 2 resolved")."""
    parts = []
    for key, value in entry.items():
        if isinstance(value, list) and value and key != "views":
            words = key.split("_")
            if len(value) == 1 and words[0].endswith("s"):
                words[0] = words[0][:-1]  # "1 picture changed"
            parts.append(f"{len(value)} {' '.join(words)}")
        elif isinstance(value, dict):
            for sub, inner in value.items():
                if isinstance(inner, list) and inner:
                    parts.append(f"{key} {sub.replace('_', ' ')}: {len(inner)}")
                elif isinstance(inner, dict) and sub == "changed" and inner:
                    parts.append(f"{key.replace('_', ' ')} changed: {', '.join(sorted(inner))}")
    return ", ".join(parts) or "no change"


def _side(store: ObjectStore, check: Check | None) -> CheckSide | None:
    if check is None:
        return None
    details: dict[str, Any] = {}
    if check.state.final and check.details_key:
        record = store.get_json(check.details_key) or {}
        found = record.get("details") if isinstance(record, dict) else None
        details = found if isinstance(found, dict) else {}
    keys = {a.get("name"): a for a in check.artifacts if isinstance(a, dict)}

    def artifact(name: str) -> bytes | None:
        item = keys.get(name)
        if not item or not item.get("key") or int(item.get("size") or 0) > ARTIFACT_LIMIT:
            return None
        return store.get_bytes(str(item["key"]))

    return CheckSide(
        state=check.state.value,
        summary=check.summary,
        details=details,
        artifact_names=[str(n) for n in keys if n],
        artifact=artifact,
    )


def _brief(check: Check | None) -> dict[str, Any] | None:
    if check is None:
        return None
    return {
        "check_id": check.id,
        "run": check.run,
        "state": check.state.value,
        "summary": check.summary,
    }


def compute(
    store: ObjectStore,
    project: Project,
    a: Revision,
    b: Revision,
    checks_a: list[Check],
    checks_b: list[Check],
    states: tuple[str, str],
) -> dict[str, Any]:
    """The comparison document of revisions a and b (and the pictures kinds made, stored)."""
    prefix = comparison_prefix(project.id, a.number, b.number)
    table = kinds_table()
    entries = []
    for kind, name, ca, cb in pair_checks(checks_a, checks_b):
        cls = table.get(kind)
        side_a, side_b = _side(store, ca), _side(store, cb)
        complete = all(c is None or c.state.final for c in (ca, cb))
        compared = cls().compare(side_a, side_b) if cls is not None and complete else Compared()
        slug = pair_slug(kind, name)
        artifacts = []
        for file_name, (data, media_type) in sorted(compared.files.items()):
            key = f"{prefix}artifacts/{slug}/{file_name}"
            store.put_bytes(key, data, media_type)
            artifacts.append(
                {"name": file_name, "media_type": media_type, "size": len(data), "key": key}
            )
        entries.append(
            {
                "kind": kind,
                "name": name,
                "id": slug,
                "change": "added" if ca is None else "removed" if cb is None else "both",
                "complete": complete,
                "a": _brief(ca),
                "b": _brief(cb),
                "headline": headline(compared.entry) if complete else "not finished",
                **compared.entry,
                "artifacts": artifacts,
            }
        )
    all_final = all(c.state.final for c in [*checks_a, *checks_b])
    return {
        "schema": SCHEMA,
        "project": project.full_name,
        "a": {"number": a.number, "state": states[0]},
        "b": {"number": b.number, "state": states[1]},
        "complete": all_final and "pending" not in states,
        "computed": utcnow().isoformat(),
        "basis": basis(checks_a, checks_b),
        "files": file_changes(a.files, b.files),
        "checks": entries,
    }


# -- reading ---------------------------------------------------------------------------------
def resolve_pair(
    backends: Backends, actor: User | None, owner: str, name: str, a: int | None, b: int
) -> tuple[Project, Revision, Revision]:
    project, rev_b = get_revision(backends, actor, owner, name, b)
    if a is None:
        if rev_b.parent is None:
            raise Invalid(
                f"revision {b} of {project.full_name} has no parent to compare with; "
                f"name both revisions, as in compare/1...{b}"
            )
        a = rev_b.parent
    if a == b:
        raise Invalid(f"compare two different revisions (both are {b})")
    _, rev_a = get_revision(backends, actor, owner, name, a)
    return project, rev_a, rev_b


def _checks_and_states(
    backends: Backends, project: Project, a: Revision, b: Revision
) -> tuple[list[Check], list[Check], tuple[str, str]]:
    with backends.reading() as index:
        found_a = revision_checks(index, project, a)
        found_b = revision_checks(index, project, b)
    states = (found_a.checks_state.value, found_b.checks_state.value)
    return found_a.checks, found_b.checks, states


def comparison(
    backends: Backends, actor: User | None, owner: str, name: str, a: int | None, b: int
) -> dict[str, Any]:
    """The comparison of revisions a and b (a None: b's parent), from the cache when it still
    holds for both revisions' checks."""
    project, rev_a, rev_b = resolve_pair(backends, actor, owner, name, a, b)
    document, _ = ensure(backends, project, rev_a, rev_b)
    return document


def ensure(
    backends: Backends, project: Project, rev_a: Revision, rev_b: Revision
) -> tuple[dict[str, Any], bool]:
    """The current comparison document and whether it was computed now (not cached)."""
    checks_a, checks_b, states = _checks_and_states(backends, project, rev_a, rev_b)
    key = comparison_prefix(project.id, rev_a.number, rev_b.number) + "comparison.json"
    cached = backends.store.get_json(key)
    if (
        isinstance(cached, dict)
        and cached.get("schema") == SCHEMA
        and cached.get("basis") == basis(checks_a, checks_b)
        and [cached.get("a", {}).get("state"), cached.get("b", {}).get("state")] == list(states)
    ):
        return cached, False
    document = compute(backends.store, project, rev_a, rev_b, checks_a, checks_b, states)
    backends.store.put_json(key, document)
    return document, True


def comparison_artifact(
    backends: Backends,
    actor: User | None,
    owner: str,
    name: str,
    a: int | None,
    b: int,
    pair: str,
    file_name: str,
) -> dict[str, Any]:
    document = comparison(backends, actor, owner, name, a, b)
    for entry in document["checks"]:
        if entry["id"] != pair:
            continue
        for item in entry.get("artifacts") or []:
            if item["name"] == file_name:
                return dict(item)
        raise NotFound(f"the comparison of {entry['kind']} {entry['name']!r} has no {file_name!r}")
    raise NotFound(f"the comparison has no check {pair!r}")


def file_diff(
    backends: Backends, actor: User | None, owner: str, name: str, a: int | None, b: int, path: str
) -> dict[str, Any]:
    """A unified diff of one file between the two revisions (added or removed files diff against
    nothing)."""
    _, rev_a, rev_b = resolve_pair(backends, actor, owner, name, a, b)
    fa, fb = rev_a.file(path), rev_b.file(path)
    if fa is None and fb is None:
        raise NotFound(f"neither revision {rev_a.number} nor {rev_b.number} has a file {path!r}")
    out: dict[str, Any] = {
        "path": path,
        "a": {"number": rev_a.number, "sha256": fa.sha256 if fa else None},
        "b": {"number": rev_b.number, "sha256": fb.sha256 if fb else None},
        "same": bool(fa and fb and fa.sha256 == fb.sha256),
    }
    texts = []
    for entry in (fa, fb):
        if entry is None:
            texts.append([])
            continue
        if entry.size > DIFF_LIMIT:
            raise TooLarge(
                f"{path} is {entry.size} bytes in one revision; text diffs are made of files "
                f"up to {DIFF_LIMIT} bytes (download both revisions' files instead)"
            )
        data = b"".join(backends.store.stream_blob(entry.sha256))
        if b"\0" in data:
            return {**out, "binary": True, "diff": None}
        try:
            texts.append(data.decode("utf-8").splitlines(keepends=True))
        except UnicodeDecodeError:
            return {**out, "binary": True, "diff": None}
    lines = difflib.unified_diff(
        texts[0],
        texts[1],
        fromfile=f"a/{path}" if fa else "/dev/null",
        tofile=f"b/{path}" if fb else "/dev/null",
        n=DIFF_CONTEXT,
    )
    diff = "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    )
    return {**out, "binary": False, "diff": diff}


# -- ahead of time -----------------------------------------------------------------------------
def prepare_after(backends: Backends, event: events.Event) -> dict[str, Any] | None:
    """After a check of a revision ended: when the revision has no check left to run, compute its
    comparison with its parent and announce `comparison.ready` (through the outbox). Returns the
    document when one was made. Safe to call again for the same event."""
    if event.type != events.CheckFinished.TYPE:
        return None
    data = events.CheckFinished.model_validate(event.data)
    with backends.reading() as index:
        project = index.project_by_id(data.project_id)
        rev_b = index.revision(data.project_id, data.number) if project else None
        rev_a = (
            index.revision(data.project_id, rev_b.parent)
            if project and rev_b and rev_b.parent
            else None
        )
    if project is None or rev_b is None or rev_a is None:
        return None
    _, _, states = _checks_and_states(backends, project, rev_a, rev_b)
    if states[1] == "pending":
        return None
    document, _ = ensure(backends, project, rev_a, rev_b)
    digest = basis_digest(document["basis"])
    ready = events.make_event(
        events.ComparisonReady(
            project_id=project.id,
            a=rev_a.number,
            b=rev_b.number,
            key=comparison_prefix(project.id, rev_a.number, rev_b.number) + "comparison.json",
            complete=bool(document["complete"]),
            checks=len(document["checks"]),
        ),
        id=events.event_id(
            "comparison.ready", project.id, str(rev_a.number), str(rev_b.number), digest
        ),
        project=project.full_name,
        project_id=project.id,
        revision=rev_b.number,
    )
    with backends.writing() as index:
        index.add_event_once(ready)  # two API processes may announce the same comparison
    return document
