"""Finding a revision's check and one of its violations through the public API: a check by id,
name or KIND:NAME; a violation by its 0-based index in the check's list or by its identity,
`[TYPE:]UUID[,UUID…]` (the KiCad items it involves)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hwrepo.client.api import Api, ClientError

PER_PAGE = 1000  # the violations endpoint's largest page
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def latest_revision(api: Api, owner: str, name: str) -> int:
    page = api.json("GET", f"/projects/{owner}/{name}/revisions", params={"per_page": 1})
    if not page["items"]:
        raise ClientError(f"{owner}/{name} has no revision yet")
    return int(page["items"][0]["number"])


def find_check(api: Api, owner: str, name: str, number: int, check: str) -> dict[str, Any]:
    body = api.json("GET", f"/projects/{owner}/{name}/revisions/{number}/checks")
    for c in body["checks"]:
        if check in {c["id"], c["name"], f"{c['kind']}:{c['name']}"}:
            return c  # type: ignore[no-any-return]
    names = ", ".join(f"{c['kind']}:{c['name']}" for c in body["checks"]) or "none"
    raise ClientError(f"revision {number} has no check {check!r} (it has: {names})")


@dataclass(frozen=True)
class ViolationQuery:
    """Which violation of a check: by index, or by type (optional) and item uuids."""

    index: int | None = None
    type: str | None = None
    uuids: frozenset[str] = frozenset()

    def __str__(self) -> str:
        if self.index is not None:
            return f"violation {self.index}"
        said = ",".join(sorted(self.uuids))
        return f"violation {self.type}:{said}" if self.type else f"violation {said}"


def parse_violation(text: str) -> ViolationQuery:
    text = text.strip()
    if text.isdigit():
        return ViolationQuery(index=int(text))
    type_, _, rest = text.rpartition(":")
    uuids = [u.strip().lower() for u in rest.split(",") if u.strip()]
    if not uuids or not all(_UUID.fullmatch(u) for u in uuids):
        raise ClientError(
            f"{text!r} is not a violation: give its index (0, 1, …) or its identity, "
            "[TYPE:]UUID[,UUID…] (the uuids of the KiCad items it involves)"
        )
    return ViolationQuery(type=type_ or None, uuids=frozenset(uuids))


def item_uuids(violation: dict[str, Any]) -> list[str]:
    return [i["uuid"].lower() for i in violation.get("items") or [] if i.get("uuid")]


def _pages(api: Api, check: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    path = check["url"].removeprefix("/api/v1") + "/violations"
    page, index = 1, 0
    while True:
        body = api.json("GET", path, params={"page": page, "per_page": PER_PAGE})
        for v in body["items"]:
            yield index, v
            index += 1
        if not body["items"] or index >= int(body["total"]):
            return
        page += 1


def find_violation(
    api: Api, check: dict[str, Any], query: ViolationQuery
) -> tuple[int, dict[str, Any]]:
    """(its index, the violation) or a ClientError saying what the check has."""
    where = f"check {check['kind']}:{check['name']}"
    if query.index is not None:
        path = check["url"].removeprefix("/api/v1") + "/violations"
        page = query.index // PER_PAGE + 1
        body = api.json("GET", path, params={"page": page, "per_page": PER_PAGE})
        total = int(body["total"])
        at = query.index % PER_PAGE
        if query.index >= total or at >= len(body["items"]):
            if total == 0:
                raise ClientError(f"{where} has no violation")
            raise ClientError(
                f"{where} has {total} violations (0 to {total - 1}): there is no {query}"
            )
        return query.index, body["items"][at]
    found = [
        (i, v)
        for i, v in _pages(api, check)
        if set(item_uuids(v)) == query.uuids and query.type in {None, v.get("type")}
    ]
    if not found:
        raise ClientError(f"{where} has no {query}")
    if len(found) > 1:
        types = ", ".join(sorted({str(v.get("type")) for _, v in found}))
        indexes = ", ".join(str(i) for i, _ in found)
        raise ClientError(
            f"{where} has {len(found)} violations on these items (indexes {indexes}; types "
            f"{types}): name one by its index or as TYPE:UUID,…"
        )
    return found[0]


def hints(api: Api, checks: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """The hints of the checks that did not pass (what to change, e.g. a requirement to name),
    read from each one's details."""
    found = []
    for check in checks:
        if check.get("state") in {"errored", "failed"} and check.get("url"):
            details = api.json("GET", check["url"].removeprefix("/api/v1")).get("details") or {}
            if isinstance(details.get("hint"), str):
                found.append((check, details["hint"]))
    return found
