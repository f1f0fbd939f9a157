"""Verilog as text: what planning and the in-sandbox checks read without a parser — the
modules a file defines and instantiates, its `` `include ``s, SystemVerilog, and the file paths
a design names that leave the revision. Pure Python, no tool.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
from pathlib import Path

SV_SUFFIXES = (".sv", ".svh")
HDL_SUFFIXES = (".v", ".sv", ".vh", ".svh")


def arg_path(path: str) -> str:
    """A revision path as a tool argument (never mistaken for an option)."""
    return "./" + path if path.startswith("-") else path


def revision_path(raw: str, src: Path) -> str:
    """A path a tool printed (relative to `src`, or absolute inside it) as a revision path."""
    if raw.startswith("file://"):
        from urllib.parse import unquote, urlparse

        raw = unquote(urlparse(raw).path)
    p = Path(raw)
    if p.is_absolute():
        with contextlib.suppress(ValueError, OSError):
            return p.resolve().relative_to(src.resolve()).as_posix()
        return raw
    return posixpath.normpath(raw)


# --------------------------------------------------------------------------------------------
# SystemVerilog detection

SV_KEYWORDS = (
    "always_ff",
    "always_comb",
    "always_latch",
    "logic",
    "interface",
    "endinterface",
    "modport",
    "package",
    "endpackage",
    "import",
    "typedef",
    "struct",
    "union",
    "enum",
    "unique",
    "priority",
    "class",
    "endclass",
    "program",
    "endprogram",
    "covergroup",
    "clocking",
)
_SV_WORD = re.compile(r"\b(" + "|".join(SV_KEYWORDS) + r")\b")
_COMMENT_OR_STRING = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"', re.DOTALL)


def _blank(match: re.Match[str]) -> str:
    return re.sub(r"[^\n]", " ", match.group(0))


def systemverilog_reason(path: str, text: str) -> tuple[int, str] | None:
    """(line, why) when a file is SystemVerilog rather than Verilog-2001, else None."""
    if path.lower().endswith(SV_SUFFIXES):
        return 1, "is a SystemVerilog file (.sv)"
    code = _COMMENT_OR_STRING.sub(_blank, text)
    m = _SV_WORD.search(code)
    if m is None:
        return None
    line = code.count("\n", 0, m.start()) + 1
    return line, f"uses the SystemVerilog keyword '{m.group(1)}' (line {line})"


# -- modules and instances -------------------------------------------------------------------

_MODULE_RE = re.compile(r"^\s*(?:macro)?module\s+(?:automatic\s+|static\s+)?(\w+)", re.MULTILINE)
INCLUDE_RE = re.compile(r'^[ \t]*`include\s+"([^"\n]+)"', re.MULTILINE)


def strip_comments(text: str) -> str:
    """The text with comments blanked out (line breaks kept, so line numbers hold)."""
    return _COMMENT.sub(lambda m: _blank(m) if m.group(0).startswith("/") else m.group(0), text)


_COMMENT = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"', re.DOTALL)


def scan_hierarchy(files: dict[str, str]) -> dict[str, list[str]]:
    """{module: [modules it instantiates]}, by a scan of the text of `files` (path -> text):
    the hierarchy planning needs, for Verilog and SystemVerilog alike, without a parser."""
    bodies: dict[str, str] = {}
    for text in files.values():
        clean = strip_comments(text)
        starts = list(_MODULE_RE.finditer(clean))
        for i, m in enumerate(starts):
            end = starts[i + 1].start() if i + 1 < len(starts) else len(clean)
            bodies[m.group(1)] = clean[m.end() : end]
    result: dict[str, list[str]] = {}
    for name, body in bodies.items():
        used = []
        for other in bodies:
            if other != name and re.search(
                rf"(?<![\w.$`]){re.escape(other)}\s*(?:#\s*\(|[A-Za-z_]\w*\s*[(\[])", body
            ):
                used.append(other)
        result[name] = sorted(used)
    return result


def roots(modules: dict[str, list[str]]) -> list[str]:
    """The modules no other module instantiates."""
    used = {m for children in modules.values() for m in children}
    return sorted(m for m in modules if m not in used)


# -- paths that leave the revision -------------------------------------------------------------

_FILE_CALL = re.compile(r'\$(readmem[hb]|fopen|fread|writememh|writememb)\s*\(\s*"([^"\n]*)"')


def _escapes(path: str, bases: list[str]) -> bool:
    """Whether `path` (as a Verilog file names it) lies outside the revision from every base
    directory a tool may resolve it against (revision paths; "" is the revision root)."""
    if posixpath.isabs(path) or re.match(r"^[A-Za-z]:[\\/]", path):
        return True
    for base in bases:
        joined = posixpath.normpath(posixpath.join(base, path))
        if joined != ".." and not joined.startswith("../"):
            return False
    return True


def outside_references(
    files: dict[str, str], include_dirs: list[str]
) -> list[tuple[str, int, str, str]]:
    """(file, line, what, path) for every `` `include `` and `$readmemh`-like file name in
    `files` (revision path -> text) that points outside the revision: such a file is not in the
    sandbox a check runs in, so it must be reported, never looked for."""
    found = []
    for rel, text in files.items():
        clean = _COMMENT_ONLY.sub(_blank, text)
        here = posixpath.dirname(rel)
        for m in INCLUDE_RE.finditer(clean):
            if _escapes(m.group(1), [here, *include_dirs, ""]):
                line = clean.count("\n", 0, m.start(1)) + 1
                found.append((rel, line, "include", m.group(1)))
        for m in _FILE_CALL.finditer(clean):
            if _escapes(m.group(2), [here, ""]):
                line = clean.count("\n", 0, m.start(2)) + 1
                found.append((rel, line, f"${m.group(1)}", m.group(2)))
    return found


_COMMENT_ONLY = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)


def describe_reference(what: str, path: str) -> str:
    """ "include outside the revision: /x/y" """
    kind = "include" if what == "include" else f"{what} file"
    return f"{kind} outside the revision: {path}"


def defined_modules(text: str) -> list[str]:
    """The modules a file defines."""
    return _MODULE_RE.findall(strip_comments(text))


def instantiates(text: str, module: str) -> bool:
    """Whether `text` (comments stripped) instantiates `module`."""
    return (
        re.search(rf"(?<![\w.$`]){re.escape(module)}\s*(?:#\s*\(|[A-Za-z_]\w*\s*[(\[])", text)
        is not None
    )
