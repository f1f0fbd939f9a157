"""`hwrepo diff`: a comparison of two revisions (the server's compare API) for a terminal.

Each check's entry is printed from what it holds — its headline, then every list it has (new,
resolved, newly failing, changed ports, BOM lines…) with one line per item — so a kind the
client has never heard of prints as well as the others."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

META = {"kind", "name", "id", "change", "complete", "a", "b", "headline", "artifacts", "views"}
LABELS = ("type", "name", "reference", "module", "rule")
TEXTS = ("description", "message", "summary")
SHOWN = 20  # items per list; the rest are counted


def describe(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    label = next((str(item[k]) for k in LABELS if item.get(k)), "")
    text = next((str(item[k]) for k in TEXTS if item.get(k)), "")
    changes = [
        f"{k} {v['from']} → {v['to']}"
        for k, v in item.items()
        if isinstance(v, dict) and set(v) == {"from", "to"}
    ]
    where = f" ({item['file']}:{item['line']})" if item.get("file") and item.get("line") else ""
    parts = [p for p in (label, text, ", ".join(changes)) if p]
    return " — ".join(parts) + where


def _lists(entry: dict[str, Any], prefix: str = "") -> list[tuple[str, list[Any]]]:
    found: list[tuple[str, list[Any]]] = []
    for key, value in entry.items():
        if key in META or key == "unchanged":
            continue
        title = f"{prefix}{key.replace('_', ' ')}"
        if isinstance(value, list) and value:
            found.append((title, value))
        elif isinstance(value, dict):
            found.extend(_lists(value, f"{title} "))
    return found


def print_comparison(console: Console, document: dict[str, Any], page: str) -> None:
    a, b = document["a"], document["b"]
    console.print(
        f"[bold]{escape(document['project'])}[/] revision {a['number']} ({a['state']}) → "
        f"{b['number']} ({b['state']})"
        + ("" if document["complete"] else "  [yellow](checks still running)[/]")
    )
    files = document["files"]
    counts = {k: len(files[k]) for k in ("added", "removed", "changed")}
    console.print(
        f"files: {counts['added']} added, {counts['removed']} removed, {counts['changed']} changed"
    )
    for mark, key in (("+", "added"), ("-", "removed"), ("~", "changed")):
        for f in files[key][:SHOWN]:
            console.print(f"  {mark} {escape(f['path'])}")
        if len(files[key]) > SHOWN:
            console.print(f"    … and {len(files[key]) - SHOWN} more {key}")
    for entry in document["checks"]:
        before = entry["a"]["state"] if entry.get("a") else "—"
        after = entry["b"]["state"] if entry.get("b") else "—"
        console.print(
            f"\n[bold]{escape(entry['kind'])}[/] {escape(entry['name'])}: {before} → {after}; "
            f"{escape(entry['headline'])}"
        )
        for title, items in _lists(entry):
            console.print(f"  {escape(title)}:")
            for item in items[:SHOWN]:
                console.print(f"    {escape(describe(item))}")
            if len(items) > SHOWN:
                console.print(f"    … and {len(items) - SHOWN} more")
    console.print(f"\n{page}")
