"""Reading KiCad's S-expression files (schematics, boards, library tables): the forms, their
fields, and the few quick scans planning needs. Pure Python; used by the planner and inside the
sandbox alike."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import sexpdata


class SexpError(ValueError):
    pass


def parse_sexp(text: str) -> list[Any]:
    """The top-level forms of a KiCad S-expression text (lists; atoms are `sexpdata.Symbol`,
    str, int or float). Raises SexpError for a text that is not a whole S-expression."""
    try:
        # No nil/t conversion and no comment character: KiCad has neither.
        forms = sexpdata.parse(text, nil=None, true=None, false=None, line_comment="\x00")
    except Exception as exc:  # sexpdata raises assorted errors (and AttributeError) on bad input
        raise SexpError(f"not a valid S-expression ({type(exc).__name__}: {exc})") from exc
    return [f for f in forms if isinstance(f, list)]


# `(curved_edges no)filter_ratio 0.9)`: some KiCad 8 boards have keyword forms whose "(" is
# missing. KiCad's own parser reads them (it skips an optional "(" before each keyword).
_MISSING_OPEN = re.compile(
    r'\)(\s*)([A-Za-z_][A-Za-z0-9_]*)([ \t]+)([^()\s"]+|"(?:[^"\\]|\\.)*")([ \t]*)\)'
)


def parse_sexp_lenient(text: str) -> tuple[list[Any], str | None]:
    """parse_sexp, or else the text read the way KiCad's parser reads it (keyword forms whose
    opening parenthesis is missing); the second value says when that was needed."""
    try:
        return parse_sexp(text), None
    except SexpError as exc:
        repaired, n = _MISSING_OPEN.subn(r")\1(\2\3\4\5)", text)
        if n == 0:
            raise
        try:
            forms = parse_sexp(repaired)
        except SexpError:
            raise exc from None
        return forms, f"{n} form(s) without their opening parenthesis, read as KiCad reads them"


def head(node: Any) -> str | None:
    if isinstance(node, list) and node and isinstance(node[0], sexpdata.Symbol):
        return str(node[0])
    return None


def children(node: list[Any], name: str) -> Iterator[list[Any]]:
    for c in node[1:]:
        if head(c) == name:
            yield c


def child(node: list[Any], name: str) -> list[Any] | None:
    return next(children(node, name), None)


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def point(node: list[Any] | None) -> tuple[float, float] | None:
    """(x, y) of a form like (at X Y ...), (start X Y), (xy X Y)."""
    if node is None or len(node) < 3:
        return None
    x, y = number(node[1]), number(node[2])
    return (x, y) if x is not None and y is not None else None


def prop(node: list[Any], name: str) -> str | None:
    """The value of (property "name" "value" ...)."""
    for p in children(node, "property"):
        if len(p) > 2 and str(p[1]) == name and isinstance(p[2], str):
            return str(p[2])
    return None


def is_yes(node: list[Any], name: str) -> bool:
    """(name yes) or a bare `name` flag (older formats)."""
    for c in node[1:]:
        if isinstance(c, sexpdata.Symbol) and str(c) == name:
            return True
        if head(c) == name and (len(c) == 1 or str(c[1]) == "yes"):
            return True
    return False


_TOKEN = re.compile(r'[()"\\]')


_SHEET = re.compile(r"\(\s*sheet\s")


def _balanced(text: str, start: int, limit: int = 500_000) -> str | None:
    """The balanced S-expression starting at text[start] == "(" (None if it does not close
    within `limit` characters)."""
    depth = 0
    in_string = False
    i = start
    end = min(len(text), start + limit)
    while True:
        m = _TOKEN.search(text, i, end)
        if m is None:
            return None
        c = m.group()
        i = m.end()
        if c == "\\":
            i += 1
        elif in_string:
            if c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == "(":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return text[start:i]


def sheet_references(text: str) -> list[str]:
    """The files a schematic references as sheets (the Sheetfile property of its `sheet`s, as
    written). Only the `(sheet ...)` forms are parsed: large schematics are planned quickly."""
    refs: list[str] = []
    for m in _SHEET.finditer(text):
        form = _balanced(text, m.start())
        if form is None:
            continue
        try:
            nodes = parse_sexp(form)
        except SexpError:
            continue
        if len(nodes) != 1 or head(nodes[0]) != "sheet":
            continue
        # "Sheetfile" since KiCad 8, "Sheet file" in KiCad 6 and 7.
        ref = prop(nodes[0], "Sheetfile") or prop(nodes[0], "Sheet file")
        if ref:
            refs.append(ref)
    return refs


def file_problem(text: str, expected: str) -> str | None:
    """None when `text` is one whole `(expected ...)` form as far as its parentheses go; else
    what is wrong (truncated, another kind of file)."""
    stripped = text.lstrip()
    m = re.match(r"\(\s*([^\s()\"]+)", stripped)
    if m is None:
        return f"not a KiCad file (it does not start with '({expected}')"
    if m.group(1) != expected:
        return f"not a {expected} file (it starts with '({m.group(1)}')"
    start = len(text) - len(stripped)
    if _balanced(text, start, limit=len(text) - start) is None:
        return "truncated: its parentheses do not close"
    return None


VARIABLE = re.compile(r"\$\{([^}]+)\}|\$\(([^)]+)\)")


def expand(text: str, variables: dict[str, str]) -> tuple[str, list[str]]:
    """${VAR} and $(VAR) replaced; the names that have no value."""
    unknown: list[str] = []

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name in variables:
            return variables[name]
        unknown.append(name)
        return m.group(0)

    return VARIABLE.sub(sub, text), unknown


def library_entries(text: str) -> list[dict[str, str]]:
    """The (lib (name ...) (type ...) (uri ...)) entries of a sym-lib-table or fp-lib-table."""
    entries = []
    for table in parse_sexp(text):
        for lib in children(table, "lib"):
            entry = {}
            for key in ("name", "type", "uri"):
                node = child(lib, key)
                if node is not None and len(node) > 1:
                    entry[key] = str(node[1])
            entries.append(entry)
    return entries
