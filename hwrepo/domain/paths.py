"""Canonical relative paths inside a revision, and the names a revision may not contain.

A revision path is a relative POSIX path in Unicode NFC: segments joined by "/", no empty, "." or
".." segments, no leading or trailing slash. Pure functions, no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

MAX_PATH_CHARS: Final = 1024
MAX_SEGMENT_BYTES: Final = 255
RESERVED_TOP_LEVEL: Final = frozenset({".hwrepo"})

# Cc: C0/C1 controls and DEL; Cs: lone surrogates (undecodable bytes, not encodable as UTF-8);
# Zl/Zp: line and paragraph separators, which break a name over lines like a newline does.
_FORBIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cs", "Zl", "Zp"})
# Cf: invisible formatting characters (bidirectional overrides and isolates such as U+202E,
# zero-width spaces and joiners, soft hyphens, the BOM): they make a name display as another
# ("evil\u202etxt.exe" shows as "evilexe.txt"), so no path may hold one.
_FORMAT_CATEGORY: Final = "Cf"
_DRIVE: Final = re.compile(r"[A-Za-z]:")


class UnsafePath(ValueError):
    """A path a revision may not contain. .path is the offending name as given, .reason a sentence
    for a person."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"unsafe path {path!r}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type[UnsafePath], tuple[str, str]]:
        return (type(self), (self.path, self.reason))


def normalise_relpath(name: str, *, base: str = "") -> str:
    """Turn an uploaded name into the canonical relative POSIX path inside a revision, joined
    under `base` (a target directory, itself normalised; "" means the root).

    Raises UnsafePath for: an empty name or one that names no file ("." or "./"), absolute paths
    ("/x", "C:\\x", "C:x", "\\\\server\\x"), any ".." segment, control characters (NUL, newline,
    DEL, C1 controls, U+2028/U+2029), invisible formatting characters (Unicode category Cf: the
    bidirectional overrides such as U+202E, zero-width characters, the BOM), lone surrogates,
    names over 1024 characters (as given, and as joined under `base`), segments over 255 bytes of
    UTF-8, and a top-level ".hwrepo" (compared case-insensitively). A backslash is a separator,
    so "..\\x" is traversal. "." segments and duplicate slashes collapse, a trailing slash is
    dropped, the result is NFC.
    When `base` is the problem, UnsafePath.path is `base`.
    """
    return _normalise(name, base=base, allow_root=False)


def normalise_dirpath(path: str, *, base: str = "") -> str:
    """Like normalise_relpath, for a directory: "", "." and "./" are allowed and mean `base`
    itself (the root when `base` is "")."""
    return _normalise(path, base=base, allow_root=True)


def _normalise(name: str, *, base: str, allow_root: bool) -> str:
    base_segments = _segments(base, allow_root=True)
    name_segments = _segments(name, allow_root=allow_root)
    segments = base_segments + name_segments
    if segments and segments[0].casefold() in RESERVED_TOP_LEVEL:
        culprit = base if base_segments else name
        raise UnsafePath(culprit, f"the top-level name {segments[0]!r} is reserved")
    path = "/".join(segments)
    if len(path) > MAX_PATH_CHARS:
        raise UnsafePath(
            name,
            f"the path is {len(path)} characters long, over the limit of {MAX_PATH_CHARS}",
        )
    return path


def _segments(name: str, *, allow_root: bool) -> list[str]:
    if not isinstance(name, str):
        raise TypeError(f"a path must be a str, not {type(name).__name__}")
    if not name:
        if allow_root:
            return []
        raise UnsafePath(name, "the name is empty")
    if len(name) > MAX_PATH_CHARS:
        raise UnsafePath(
            name, f"the name is {len(name)} characters long, over the limit of {MAX_PATH_CHARS}"
        )
    for char in name:
        category = unicodedata.category(char)
        if category in _FORBIDDEN_CATEGORIES:
            raise UnsafePath(name, f"the name contains the control character U+{ord(char):04X}")
        if category == _FORMAT_CATEGORY:
            what = unicodedata.name(char, "a format character")
            raise UnsafePath(
                name,
                f"the name contains the invisible formatting character U+{ord(char):04X}"
                f" ({what}), which can make a name look like another",
            )
    text = unicodedata.normalize("NFC", name).replace("\\", "/")
    if text.startswith("/"):
        raise UnsafePath(name, "the path is absolute; it must be relative")
    if _DRIVE.match(text):
        raise UnsafePath(name, "the path starts with a drive letter; it must be relative")
    segments: list[str] = []
    for segment in text.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            raise UnsafePath(name, "the path contains a '..' segment")
        size = len(segment.encode("utf-8"))
        if size > MAX_SEGMENT_BYTES:
            raise UnsafePath(
                name,
                f"the name {segment[:40]!r}... is {size} bytes long in UTF-8,"
                f" over the limit of {MAX_SEGMENT_BYTES}",
            )
        segments.append(segment)
    if not segments and not allow_root:
        raise UnsafePath(name, "the name does not name a file")
    return segments
