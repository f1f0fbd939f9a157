"""Finding the KiCad designs of a revision (the planner's part: pure, no tool).

- every `.kicad_pro` is a project; its root schematic is the `.kicad_sch` of the same name in
  the same directory, its board the `.kicad_pcb` of the same name;
- a `.kicad_pcb` without a project of its name is checked on its own (with the schematic of its
  name, if that is not a sub-sheet of another schematic);
- a `.kicad_sch` without a project, that no other schematic references as a sheet, is a root;
- ERC runs on roots only: a sub-sheet is checked through its root, never alone.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from hwrepo.checks.core.kind import RevisionFiles
from hwrepo.checks.kicad.sexp import SexpError, library_entries, sheet_references

PROJECT_EXT = ".kicad_pro"
SCHEMATIC_EXT = ".kicad_sch"
BOARD_EXT = ".kicad_pcb"
LIBRARY_TABLES = ("sym-lib-table", "fp-lib-table")


@dataclass
class Design:
    """One KiCad design found in a revision: a project, or a board or root schematic that has
    no project file. Paths are revision paths."""

    directory: str  # "" at the revision root
    name: str
    project: str | None = None
    schematic: str | None = None  # the root schematic
    board: str | None = None
    sheets: list[str] = field(default_factory=list)  # sub-sheet files of the root's hierarchy
    missing_sheets: list[str] = field(default_factory=list)  # referenced, not in the revision
    inputs: list[str] = field(default_factory=list)
    why: str = ""

    @property
    def label(self) -> str:
        return self.project or self.board or self.schematic or self.name

    def detected(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "project": self.project,
            "schematic": self.schematic,
            "board": self.board,
            "why": self.why,
        }
        if self.sheets:
            found["sheets"] = self.sheets
        if self.missing_sheets:
            found["missing_sheets"] = self.missing_sheets
        return found


def _ignored(path: str) -> bool:
    """KiCad's own leftovers and archive debris, never designs."""
    parts = path.split("/")
    name = parts[-1]
    return name.startswith(("_autosave-", "~", ".")) or any(
        p.endswith("-backups") or p in {"__MACOSX", ".git", ".history"} for p in parts[:-1]
    )


def _split(path: str, ext: str) -> tuple[str, str]:
    return posixpath.dirname(path), posixpath.basename(path)[: -len(ext)]


def _join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


def resolve_reference(referrer: str, ref: str) -> str | None:
    """A sheet file or library path written in `referrer`, as a revision path (None when it
    points outside the revision or is absolute)."""
    ref = ref.replace("\\", "/").replace("${KIPRJMOD}", ".")
    if posixpath.isabs(ref) or re.match(r"^[A-Za-z]:/", ref):
        return None
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(referrer), ref))
    if joined == ".." or joined.startswith("../"):
        return None
    return joined


def find_designs(revision: RevisionFiles) -> list[Design]:
    """The KiCad designs of a revision, sorted by label (see the module's docstring)."""
    paths = sorted(f.path for f in revision.files if not _ignored(f.path))
    present = set(paths)
    projects = [p for p in paths if p.endswith(PROJECT_EXT)]
    schematics = [p for p in paths if p.endswith(SCHEMATIC_EXT)]
    boards = [p for p in paths if p.endswith(BOARD_EXT)]

    refs: dict[str, list[str | None]] = {}
    written: dict[str, list[str]] = {}
    for s in schematics:
        text = revision.read(s).decode("utf-8", errors="replace")
        written[s] = sheet_references(text)
        refs[s] = [resolve_reference(s, r) for r in written[s]]
    referenced = {t for s, targets in refs.items() for t in targets if t and t != s}

    designs: dict[tuple[str, str], Design] = {}
    for p in projects:
        d, n = _split(p, PROJECT_EXT)
        sch, pcb = _join(d, n + SCHEMATIC_EXT), _join(d, n + BOARD_EXT)
        designs[(d, n)] = Design(
            d,
            n,
            project=p,
            schematic=sch if sch in present else None,
            board=pcb if pcb in present else None,
            why=f"project file {p}",
        )
    for b in boards:
        d, n = _split(b, BOARD_EXT)
        if (d, n) in designs:
            continue
        sch = _join(d, n + SCHEMATIC_EXT)
        root = sch if sch in present and sch not in referenced else None
        designs[(d, n)] = Design(
            d, n, board=b, schematic=root, why=f"board {b} without a project file"
        )
    for s in schematics:
        d, n = _split(s, SCHEMATIC_EXT)
        if s in referenced or (d, n) in designs:
            continue
        designs[(d, n)] = Design(
            d,
            n,
            schematic=s,
            why=f"schematic {s} without a project file, not a sheet of another schematic",
        )

    for design in designs.values():
        if design.schematic:
            design.sheets, design.missing_sheets = _hierarchy(
                design.schematic, refs, written, present
            )
        design.inputs = _inputs(design, paths, revision)
    return sorted(designs.values(), key=lambda d: d.label)


def _hierarchy(
    root: str,
    refs: dict[str, list[str | None]],
    written: dict[str, list[str]],
    present: set[str],
) -> tuple[list[str], list[str]]:
    sheets: list[str] = []
    missing: list[str] = []
    seen = {root}
    queue = [root]
    while queue:
        current = queue.pop(0)
        for target, as_written in zip(refs.get(current, []), written.get(current, []), strict=True):
            if target is None or target not in present:
                if as_written not in missing:
                    missing.append(as_written)
                continue
            if target not in seen:
                seen.add(target)
                sheets.append(target)
                queue.append(target)
    return sheets, missing


def _under(path: str, directory: str) -> bool:
    return directory == "" or path == directory or path.startswith(directory + "/")


def _inputs(design: Design, paths: list[str], revision: RevisionFiles) -> list[str]:
    """The design's directory (sub-sheets, project libraries, .kicad_dru, ...), its sheets
    wherever they are, and project libraries that live outside the directory."""
    directories = [design.directory]
    for table in LIBRARY_TABLES:
        table_path = _join(design.directory, table)
        if table_path not in paths:
            continue
        try:
            entries = library_entries(revision.read(table_path).decode("utf-8", "replace"))
        except SexpError:
            continue
        for entry in entries:
            uri = entry.get("uri", "")
            if "${" in uri.replace("${KIPRJMOD}", "") or "$(" in uri:
                continue  # a library of the machine, not of the revision
            target = resolve_reference(table_path, uri)
            if target:
                directories.append(target)
    wanted = set(design.sheets)
    wanted.update(p for p in paths if any(_under(p, d) for d in directories))
    return sorted(wanted)
