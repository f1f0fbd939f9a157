"""Comparing two runs of a check, in the check's own terms: which violations are new and which
were fixed, which tests started failing, which ports changed. Each kind's `compare()` uses these
pieces; the comparison service only pairs checks and stores what they say.

A violation is the same one in both revisions when its identity matches: for board items, its
type and the KiCad item uuids it involves (a moved part keeps its uuids, so its violations do
not look new); without uuids, its type and description and a position within `TOLERANCE_MM`;
for source findings, rule, file and line, else rule and message.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

TOLERANCE_MM = 1.0

Key = Callable[[dict[str, Any]], Hashable | None]


@dataclass
class CheckSide:
    """One revision's run of a check, as stored: its state, summary, details, and a way to read
    one of its artifacts (None when it has no such artifact)."""

    state: str
    summary: str
    details: dict[str, Any]
    artifact_names: list[str] = field(default_factory=list)
    artifact: Callable[[str], bytes | None] = lambda name: None


@dataclass
class Compared:
    """What a kind found changed: `entry` goes into the comparison document; `files` are
    images and the like it made (name -> bytes, media type), stored beside the document."""

    entry: dict[str, Any] = field(default_factory=dict)
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)


def _uuids(v: dict[str, Any]) -> frozenset[str]:
    return frozenset(i["uuid"] for i in v.get("items") or [] if i.get("uuid"))


def by_items(v: dict[str, Any]) -> Hashable | None:
    uuids = _uuids(v)
    return (v.get("type"), uuids) if uuids else None


def by_description(v: dict[str, Any]) -> Hashable | None:
    return (v.get("type"), v.get("description"))


def by_source_line(v: dict[str, Any]) -> Hashable | None:
    if not v.get("file"):
        return None
    return (v.get("rule") or v.get("type"), v.get("file"), v.get("line"))


def by_rule_message(v: dict[str, Any]) -> Hashable | None:
    return (v.get("rule") or v.get("type"), v.get("description"))


BOARD_KEYS: list[Key] = [by_items, by_description]
SOURCE_KEYS: list[Key] = [by_source_line, by_rule_message]


def position(v: dict[str, Any]) -> tuple[float, float] | None:
    for item in v.get("items") or []:
        if item.get("x_mm") is not None and item.get("y_mm") is not None:
            return float(item["x_mm"]), float(item["y_mm"])
    return None


def identity(v: dict[str, Any]) -> str:
    """A stable name of a violation across revisions (what a review thread anchors to)."""
    uuids = sorted(_uuids(v))
    if uuids:
        basis: list[Any] = ["items", v.get("type"), uuids]
    elif v.get("file"):
        basis = ["source", v.get("rule") or v.get("type"), v.get("file"), v.get("description")]
    else:
        basis = ["text", v.get("type"), v.get("description")]
    return hashlib.sha256(json.dumps(basis).encode()).hexdigest()[:20]


def match_violations(
    a: list[dict[str, Any]],
    b: list[dict[str, Any]],
    keys: list[Key],
    *,
    positional: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """{"new", "resolved", "unchanged"}: b's violations not in a, a's not in b, and those in
    both (as in b). Keys are tried in order; with `positional`, the last key also needs the
    two positions within TOLERANCE_MM (the nearest wins)."""
    left = list(range(len(a)))
    right = list(range(len(b)))
    unchanged: list[dict[str, Any]] = []
    for n, key in enumerate(keys):
        last = n == len(keys) - 1
        pool: dict[Hashable, list[int]] = {}
        for j in right:
            k = key(b[j])
            if k is not None:
                pool.setdefault(k, []).append(j)
        kept_left = []
        for i in left:
            k = key(a[i])
            candidates = pool.get(k) if k is not None else None
            if not candidates:
                kept_left.append(i)
                continue
            j = _pick(a[i], b, candidates) if positional and last else candidates[0]
            if j is None:
                kept_left.append(i)
                continue
            candidates.remove(j)
            right.remove(j)
            unchanged.append({**b[j], "identity": identity(b[j])})
        left = kept_left
    return {
        "new": [{**b[j], "identity": identity(b[j])} for j in right],
        "resolved": [{**a[i], "identity": identity(a[i])} for i in left],
        "unchanged": unchanged,
    }


def _pick(v: dict[str, Any], b: list[dict[str, Any]], candidates: list[int]) -> int | None:
    here = position(v)
    if here is None:
        return candidates[0]
    best, best_d = None, TOLERANCE_MM
    for j in candidates:
        there = position(b[j])
        if there is None:
            continue
        d = math.dist(here, there)
        if d <= best_d:
            best, best_d = j, d
    return best


def violations_of(side: CheckSide | None) -> list[dict[str, Any]]:
    if side is None:
        return []
    found = side.details.get("violations")
    return [v for v in found if isinstance(v, dict)] if isinstance(found, list) else []


def compare_violations(
    a: CheckSide | None, b: CheckSide | None, keys: list[Key], *, positional: bool = False
) -> Compared:
    matched = match_violations(violations_of(a), violations_of(b), keys, positional=positional)
    entry: dict[str, Any] = {
        "new": matched["new"],
        "resolved": matched["resolved"],
        "unchanged": matched["unchanged"],
        "counts": {k: len(v) for k, v in matched.items()},
    }
    return Compared(entry)


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(i.get("name")): i for i in items if isinstance(i, dict) and i.get("name")}


def changed_fields(
    a: dict[str, Any], b: dict[str, Any], fields: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """{field: {"from": .., "to": ..}} for the fields whose values differ."""
    return {f: {"from": a.get(f), "to": b.get(f)} for f in fields if a.get(f) != b.get(f)}


def keyed_changes(
    old: dict[str, dict[str, Any]],
    new: dict[str, dict[str, Any]],
    fields: tuple[str, ...],
    key: str = "name",
) -> dict[str, list[dict[str, Any]]]:
    """Items (by their key) added, removed, and changed in these fields."""
    changed = []
    for k in sorted(set(old) & set(new)):
        if diff := changed_fields(old[k], new[k], fields):
            changed.append({key: k, **diff})
    return {
        "added": [new[k] for k in sorted(set(new) - set(old))],
        "removed": [old[k] for k in sorted(set(old) - set(new))],
        "changed": changed,
    }
