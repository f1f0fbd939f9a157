"""What the KiCad kinds (drc, erc, render) share: finding the designs of a revision, the
`[kicad]` table of hwrepo.toml, a clean KiCad configuration per job, running kicad-cli, reading
KiCad's S-expression files, and turning kicad-cli's JSON reports into normalised violations.

Detection rules (see `find_designs`):
- every `.kicad_pro` is a project; its root schematic is the `.kicad_sch` of the same name in
  the same directory, its board the `.kicad_pcb` of the same name;
- a `.kicad_pcb` without a project of its name is checked on its own (with the schematic of its
  name, if that is not a sub-sheet of another schematic);
- a `.kicad_sch` without a project, that no other schematic references as a sheet, is a root;
- ERC runs on roots only: a sub-sheet is checked through its root, never alone.
"""

from __future__ import annotations

import functools
import json
import math
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sexpdata

from hwrepo.checks.core.kind import (
    Artifact,
    CheckResult,
    Job,
    PlannedJob,
    RevisionFiles,
    Workspace,
)
from hwrepo.checks.core.violations import (
    Violation,
    ViolationItem,
    apply_waivers,
    blocking,
    counts,
    to_sarif,
)
from hwrepo.checks.run.tools import ToolRun, run_tool

KICAD_CLI = "kicad-cli"
PROJECT_EXT = ".kicad_pro"
SCHEMATIC_EXT = ".kicad_sch"
BOARD_EXT = ".kicad_pcb"
CONFIG_FILE = "hwrepo.toml"
CONFIG_TABLE = "kicad"
SEVERITIES = ("error", "warning", "info")
DEFAULT_FAIL_ON = ["error"]
DEFAULT_TIMEOUTS_S = {"drc": 1200.0, "erc": 600.0, "render": 1200.0}
MAX_TIMEOUT_S = 24 * 3600.0
LIBRARY_TABLES = ("sym-lib-table", "fp-lib-table")
# kicad-cli's documented exit codes.
EXIT_CODES = {1: "bad arguments", 2: "unknown error", 3: "invalid input file", 5: "violations"}

JSON = "application/json"
SARIF = "application/sarif+json"
TEXT = "text/plain"


class KicadError(Exception):
    """kicad-cli or its environment could not be used (the message says why)."""


class ReportError(Exception):
    """A report kicad-cli wrote is missing or cannot be read."""


# -- S-expressions -------------------------------------------------------------------------------


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


@dataclass
class Hierarchy:
    """The schematic files of a root's hierarchy as found on disk, and what is wrong with it."""

    files: list[Path]
    problems: list[str]


def read_hierarchy(base: Path, root_rel: str) -> Hierarchy:
    """Walk the sheets from the root schematic (paths relative to `base`). kicad-cli skips a
    sheet file that is missing or cannot be read without a word and exits 0, so this is how a
    check learns that part of the design was not checked."""
    files: list[Path] = []
    problems: list[str] = []
    queue: list[tuple[str, tuple[str, ...]]] = [(root_rel, ())]
    seen = {root_rel}
    while queue:
        rel, ancestors = queue.pop(0)
        path = base / rel
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            problems.append(f"{rel}: cannot be read ({exc.strerror or exc})")
            continue
        files.append(path)
        if (problem := file_problem(text, "kicad_sch")) is not None:
            problems.append(f"{rel}: {problem}")
            continue
        for ref in sheet_references(text):
            target = resolve_reference(rel, ref)
            if target is None or not (base / target).is_file():
                problems.append(f"{rel} uses sheet file {ref!r}, which is not among the files")
            elif target == rel or target in ancestors:
                problems.append(f"{rel} uses sheet file {ref!r} inside itself (KiCad skips it)")
            elif target not in seen:
                seen.add(target)
                queue.append((target, (*ancestors, rel)))
    return Hierarchy(files, problems)


def project_file_problem(path: Path) -> str | None:
    """kicad-cli ignores a .kicad_pro it cannot read (and with it the design's exclusions and
    rule settings) without a word: say so."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{path.name} cannot be read as a KiCad project ({exc}); KiCad's defaults were used"
    if not isinstance(data, dict):
        return f"{path.name} is not a KiCad project (not a JSON object); KiCad's defaults were used"
    return None


# -- Detection -----------------------------------------------------------------------------------


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


# -- hwrepo.toml ---------------------------------------------------------------------------------

_CONFIG_KEYS: dict[str, set[str]] = {
    "fail_on": {"drc", "erc"},
    "drc_timeout_s": {"drc"},
    "erc_timeout_s": {"erc"},
    "render_timeout_s": {"render"},
}
_ALL_KINDS = {"drc", "erc", "render"}


@dataclass
class KicadConfig:
    """The `[kicad]` table of hwrepo.toml: `fail_on` (severities that fail DRC/ERC, default
    ["error"]) and `drc_timeout_s`, `erc_timeout_s`, `render_timeout_s`."""

    fail_on: list[str] = field(default_factory=lambda: list(DEFAULT_FAIL_ON))
    timeouts_s: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS_S))
    problems: list[tuple[set[str], str]] = field(default_factory=list)

    def error_for(self, kind: str) -> str | None:
        messages = [m for kinds, m in self.problems if kind in kinds]
        return "; ".join(messages) if messages else None


def load_config(revision: RevisionFiles) -> KicadConfig:
    config = KicadConfig()
    if not any(f.path == CONFIG_FILE for f in revision.files):
        return config
    try:
        data = tomllib.loads(revision.read(CONFIG_FILE).decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        config.problems.append((_ALL_KINDS, f"{CONFIG_FILE} is not valid TOML: {exc}"))
        return config
    table = data.get(CONFIG_TABLE)
    if table is None:
        return config
    if not isinstance(table, dict):
        config.problems.append(
            (_ALL_KINDS, f"{CONFIG_FILE}: [{CONFIG_TABLE}] must be a table, not {table!r}")
        )
        return config
    for key, value in table.items():
        where = f"{CONFIG_FILE}: [{CONFIG_TABLE}] {key}"
        if key not in _CONFIG_KEYS:
            known = ", ".join(_CONFIG_KEYS)
            config.problems.append((_ALL_KINDS, f"{where}: unknown key (known keys: {known})"))
        elif key == "fail_on":
            allowed = ", ".join(f'"{s}"' for s in SEVERITIES)
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(v, str) and v in SEVERITIES for v in value)
            ):
                config.problems.append(
                    (
                        _CONFIG_KEYS[key],
                        f"{where} must be a non-empty list of severities from {allowed}, "
                        f"got {value!r}",
                    )
                )
            else:
                config.fail_on = sorted(set(value), key=SEVERITIES.index)
        else:
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 < value <= MAX_TIMEOUT_S
            ):
                config.problems.append(
                    (
                        _CONFIG_KEYS[key],
                        f"{where} must be a number of seconds between 0 and {MAX_TIMEOUT_S:.0f}, "
                        f"got {value!r}",
                    )
                )
            else:
                config.timeouts_s[key.removesuffix("_timeout_s")] = float(value)
    return config


# -- kicad-cli and its environment ---------------------------------------------------------------


def kicad_cli() -> str | None:
    return shutil.which(KICAD_CLI)


def unavailable() -> str | None:
    """None when kicad-cli can be run here, else why not."""
    if kicad_cli() is None:
        return f"{KICAD_CLI} is not on PATH (KiCad 9 is needed: apt-get install kicad)"
    return None


def stock_dir(cli: str) -> Path:
    """KiCad's shared data (templates, symbols, footprints, 3D models) next to kicad-cli."""
    candidate = Path(cli).resolve().parent.parent / "share" / "kicad"
    return candidate if candidate.is_dir() else Path("/usr/share/kicad")


@functools.cache
def kicad_version(cli: str) -> str:
    """`kicad-cli version`, run once per process in a throwaway HOME."""
    with tempfile.TemporaryDirectory(prefix="kicad-version-") as home:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "LANG": "C.UTF-8"}
        env["XDG_CONFIG_HOME"] = str(Path(home) / ".config")
        try:
            done = subprocess.run(
                [cli, "version"], capture_output=True, text=True, timeout=60, env=env, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise KicadError(f"{KICAD_CLI} version failed: {exc}") from exc
    version = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0 or not re.match(r"^\d+\.\d+", version):
        raise KicadError(
            f"{KICAD_CLI} version failed (exit {done.returncode}): "
            f"{(done.stdout + done.stderr).strip()[-500:]}"
        )
    return version


@functools.cache
def package_versions() -> dict[str, str]:
    """The installed Debian packages of KiCad and its libraries (empty where there is no dpkg)."""
    names = ["kicad", "kicad-symbols", "kicad-footprints", "kicad-packages3d"]
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n", *names],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    versions: dict[str, str] = {}
    for line in done.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1] and parts[2].startswith("ii"):
            versions[parts[0]] = parts[1]
    return versions


@dataclass
class KicadEnv:
    """A job's own KiCad: HOME and XDG directories in the workspace, the standard library
    tables copied in, the library directories named explicitly."""

    cli: str
    version: str
    home: Path
    config_dir: Path
    env: dict[str, str]
    paths: dict[str, str]  # KICAD<major>_SYMBOL_DIR, _FOOTPRINT_DIR, _3DMODEL_DIR, ...

    @property
    def major(self) -> str:
        return self.version.split(".")[0]

    @property
    def models_dir(self) -> Path:
        return Path(self.paths[f"KICAD{self.major}_3DMODEL_DIR"])

    def run(self, args: list[str], *, cwd: Path, timeout_s: float, log: Path) -> ToolRun:
        return run_tool([self.cli, *args], cwd=cwd, timeout_s=timeout_s, env=self.env, log=log)

    def variables(self, project_dir: Path | None) -> dict[str, str]:
        """Path variables as KiCad resolves them in library tables and model paths."""
        values = dict(self.paths)
        if project_dir is not None:
            values["KIPRJMOD"] = str(project_dir)
        return values

    def libraries(self, project_dir: Path | None) -> dict[str, Any]:
        """Which libraries this job's KiCad sees: the global tables (and how many of their
        entries exist on this machine), the project's own tables, the 3D models."""
        variables = self.variables(project_dir)
        info: dict[str, Any] = {
            "symbols": _table_summary(self.config_dir / "sym-lib-table", variables),
            "footprints": _table_summary(self.config_dir / "fp-lib-table", variables),
            "3d_models": {
                "dir": str(self.models_dir),
                "available": self.models_dir.is_dir(),
            },
            "paths": dict(self.paths),
            "packages": package_versions(),
        }
        if project_dir is not None:
            for table, key in (
                ("sym-lib-table", "project_symbols"),
                ("fp-lib-table", "project_footprints"),
            ):
                path = project_dir / table
                if path.is_file():
                    info[key] = _table_entries(path, variables, project_dir)
        return info

    def describe(self) -> dict[str, Any]:
        return {
            "home": str(self.home),
            "config_dir": str(self.config_dir),
            "copied_tables": [t for t in LIBRARY_TABLES if (self.config_dir / t).is_file()],
        }


def prepare(ws: Workspace) -> KicadEnv:
    """A clean KiCad configuration of this job's own, under ws.tmp."""
    cli = kicad_cli()
    if cli is None:
        raise KicadError(unavailable() or "kicad-cli missing")
    version = kicad_version(cli)
    major, minor = version.split(".")[:2]
    stock = stock_dir(cli)
    home = ws.tmp / "kicad-home"
    shutil.rmtree(home, ignore_errors=True)
    config_dir = home / ".config" / "kicad" / f"{major}.{minor}"
    config_dir.mkdir(parents=True)
    for table in LIBRARY_TABLES:
        source = stock / "template" / table
        if source.is_file():
            shutil.copyfile(source, config_dir / table)
    defaults = {
        "SYMBOL_DIR": stock / "symbols",
        "FOOTPRINT_DIR": stock / "footprints",
        "3DMODEL_DIR": stock / "3dmodels",
        "TEMPLATE_DIR": stock / "template",
    }
    # A deployment that keeps a library elsewhere says so in the worker's environment.
    paths = {
        f"KICAD{major}_{k}": os.environ.get(f"KICAD{major}_{k}") or str(v)
        for k, v in defaults.items()
    }
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "TMPDIR": str(ws.tmp),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        **paths,
    }
    return KicadEnv(cli, version, home, config_dir, env, paths)


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


def _table_entries(
    path: Path, variables: dict[str, str], project_dir: Path
) -> list[dict[str, Any]]:
    try:
        entries = library_entries(path.read_text(encoding="utf-8", errors="replace"))
    except SexpError as exc:
        return [{"error": f"{path.name}: {exc}"}]
    out = []
    for e in entries:
        resolved, _ = expand(e.get("uri", ""), variables)
        target = Path(resolved) if Path(resolved).is_absolute() else project_dir / resolved
        out.append(
            {"name": e.get("name", ""), "uri": e.get("uri", ""), "available": target.exists()}
        )
    return out


def _table_summary(path: Path, variables: dict[str, str]) -> dict[str, Any]:
    if not path.is_file():
        return {"table": None, "entries": 0, "available": 0}
    try:
        entries = library_entries(path.read_text(encoding="utf-8", errors="replace"))
    except SexpError as exc:
        return {"table": str(path), "error": str(exc), "entries": 0, "available": 0}
    missing = []
    for e in entries:
        resolved, unknown = expand(e.get("uri", ""), variables)
        if unknown or not Path(resolved).exists():
            missing.append(e.get("name", ""))
    return {
        "table": str(path),
        "entries": len(entries),
        "available": len(entries) - len(missing),
        "missing": missing[:50],
    }


def describe_exit(run: ToolRun) -> str:
    """What a failed kicad-cli run said: its exit code and the last lines of its output."""
    if run.timed_out:
        return f"{KICAD_CLI} did not finish within the time limit"
    meaning = EXIT_CODES.get(run.exit_code or 0, "")
    code = f"exit {run.exit_code}" + (f", {meaning}" if meaning else "")
    said = run.last_lines(15) or "(no output)"
    return f"{' '.join(run.argv[1:3])} failed ({code}): {said}"


# -- Reports and violations ----------------------------------------------------------------------


def read_report(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ReportError(f"{KICAD_CLI} wrote no report ({path.name} is missing)")
    raw = path.read_bytes()
    if not raw.strip():
        raise ReportError(f"{KICAD_CLI} wrote an empty report ({path.name})")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path.name} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ReportError(f"{path.name} is not a JSON object")
    return data


def _list(report: dict[str, Any], key: str, *, required: bool = False) -> list[Any]:
    if key not in report:
        if required:
            raise ReportError(f"report.json has no {key!r} list")
        return []
    value = report[key]
    if not isinstance(value, list):
        raise ReportError(f"report.json: {key!r} is not a list")
    return value


def _violation(
    entry: Any, *, sheet: str | None = None, scale: float = 1.0, type_: str | None = None
) -> Violation:
    if not isinstance(entry, dict):
        raise ReportError(f"report.json: a violation is not an object: {entry!r:.200}")
    raw_items = entry.get("items") or []
    if not isinstance(raw_items, list):
        raise ReportError("report.json: a violation's items are not a list")
    items = []
    for raw in raw_items:
        if not isinstance(raw, dict):
            raise ReportError(f"report.json: an item is not an object: {raw!r:.200}")
        pos = raw.get("pos") if isinstance(raw.get("pos"), dict) else {}
        x, y = number(pos.get("x")), number(pos.get("y"))
        items.append(
            ViolationItem(
                uuid=str(raw["uuid"]) if raw.get("uuid") else None,
                description=str(raw.get("description", "")),
                x_mm=round(x * scale, 6) if x is not None else None,
                y_mm=round(y * scale, 6) if y is not None else None,
                sheet=sheet,
            )
        )
    severity = str(entry.get("severity", "error")).lower()
    return Violation(
        type=type_ or str(entry.get("type") or "unknown"),
        severity=severity,
        description=str(entry.get("description", "")),
        excluded=entry.get("excluded") is True,
        items=items,
    )


def exclusion_comments(entries: list[Any]) -> list[dict[str, Any]]:
    """The comments KiCad keeps with the design's own exclusions."""
    return [
        {
            "type": e.get("type"),
            "comment": str(e.get("comment", "")),
            "items": [i.get("uuid") for i in e.get("items") or [] if isinstance(i, dict)],
        }
        for e in entries
        if isinstance(e, dict) and e.get("excluded") is True
    ]


def drc_violations(report: dict[str, Any]) -> tuple[list[Violation], dict[str, int], list[Any]]:
    """DRC violations, unconnected items (type `unconnected_items`) and schematic parity issues
    (their own types); how many each section held; the raw entries."""
    found: list[Violation] = []
    sections: dict[str, int] = {}
    raw: list[Any] = []
    for section in ("violations", "unconnected_items", "schematic_parity"):
        entries = _list(report, section, required=section == "violations")
        sections[section] = len(entries)
        raw.extend(entries)
        type_ = "unconnected_items" if section == "unconnected_items" else None
        found.extend(_violation(e, type_=type_) for e in entries)
    return found, sections, raw


def erc_entries(report: dict[str, Any]) -> list[tuple[dict[str, Any], Any]]:
    """(sheet, violation entry) pairs of an ERC report."""
    pairs = []
    for sheet in _list(report, "sheets", required=True):
        if not isinstance(sheet, dict):
            raise ReportError(f"report.json: a sheet is not an object: {sheet!r:.200}")
        pairs.extend((sheet, entry) for entry in _list(sheet, "violations"))
    return pairs


def erc_violations(report: dict[str, Any], scale: float) -> list[Violation]:
    return [
        _violation(entry, sheet=str(sheet.get("path", "")) or None, scale=scale)
        for sheet, entry in erc_entries(report)
    ]


class SchematicAnchors:
    """Where objects of a schematic hierarchy sit (mm, from the files): the object with a given
    uuid, or the symbol a pin of that uuid belongs to. Files are parsed only when one of them
    holds a wanted uuid."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self._texts: dict[Path, str] = {}
        self._trees: dict[Path, list[Any] | None] = {}

    def _text(self, path: Path) -> str:
        if path not in self._texts:
            try:
                self._texts[path] = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                self._texts[path] = ""
        return self._texts[path]

    def _tree(self, path: Path) -> list[Any] | None:
        if path not in self._trees:
            try:
                self._trees[path] = parse_sexp(self._text(path))
            except SexpError:
                self._trees[path] = None
        return self._trees[path]

    def find(self, uuid: str) -> tuple[float, float] | None:
        for path in self.files:
            if uuid not in self._text(path):
                continue
            tree = self._tree(path)
            if tree is not None and (found := _anchor(tree, uuid)) is not None:
                return found
        return None


def _own_position(node: list[Any]) -> tuple[float, float] | None:
    if (at := point(child(node, "at"))) is not None:
        return at
    pts = child(node, "pts")
    if pts is not None and (xy := child(pts, "xy")) is not None:
        return point(xy)
    return None


def _anchor(tree: list[Any], uuid: str) -> tuple[float, float] | None:
    stack: list[tuple[list[Any], tuple[float, float] | None]] = [(f, None) for f in tree]
    while stack:
        node, inherited = stack.pop()
        here = _own_position(node) or inherited
        for c in node[1:]:
            if head(c) == "uuid" and len(c) > 1 and str(c[1]) == uuid:
                return here
        stack.extend((c, here) for c in node[1:] if isinstance(c, list) and c)
    return None


def erc_position_scale(
    report: dict[str, Any], schematic_files: list[Path], version: str
) -> dict[str, Any]:
    """The factor that turns ERC item positions into mm. kicad-cli 9 writes them 100 times too
    small although the report says "mm"; the factor is decided by comparing reported positions
    with where the same objects are in the schematic files (a pin: its symbol's origin)."""
    fallback = 100.0 if version.split(".")[0] == "9" else 1.0
    positions = []
    for _sheet, entry in erc_entries(report):
        for item in entry.get("items") or [] if isinstance(entry, dict) else []:
            pos = item.get("pos") if isinstance(item, dict) else None
            if isinstance(pos, dict) and item.get("uuid"):
                x, y = number(pos.get("x")), number(pos.get("y"))
                if x is not None and y is not None:
                    positions.append((str(item["uuid"]), x, y))
    if not positions:
        return {"scale": fallback, "method": "no item positions to convert"}
    anchors = SchematicAnchors(schematic_files)
    votes: Counter[float] = Counter()
    checked = []
    for uuid, x, y in positions[:50]:
        if len(checked) >= 8:
            break
        anchor = anchors.find(uuid)
        if anchor is None:
            continue
        as_is = math.hypot(x - anchor[0], y - anchor[1])
        times_100 = math.hypot(100 * x - anchor[0], 100 * y - anchor[1])
        if math.isclose(as_is, times_100):
            continue
        votes[100.0 if times_100 < as_is else 1.0] += 1
        checked.append({"uuid": uuid, "reported": [x, y], "schematic": list(anchor)})
    if not votes:
        return {
            "scale": fallback,
            "method": f"kicad-cli {version} (no reported item was found in the schematic files)",
        }
    scale = votes.most_common(1)[0][0]
    return {
        "scale": scale,
        "method": "compared with the schematic files",
        "checked_items": len(checked),
        "agreeing": votes[scale],
        "samples": checked[:3],
    }


def summarise(found: list[Violation], failing: list[Violation]) -> str:
    c = counts(found)
    by = c["by_severity"]
    parts = [f"{by.get('error', 0)} error" + ("" if by.get("error", 0) == 1 else "s")]
    parts.append(f"{by.get('warning', 0)} warning" + ("" if by.get("warning", 0) == 1 else "s"))
    parts += [f"{n} {sev}" for sev, n in by.items() if sev not in {"error", "warning"}]
    text = ", ".join(parts)
    extra = [f"{c[k]} {k}" for k in ("waived", "excluded") if c[k]]
    if extra:
        text += f" ({', '.join(extra)})"
    if failing:
        text += f"; {len(failing)} blocking"
    return text


def base_details(
    *, kenv: KicadEnv | None, project_dir: Path | None, subject: dict[str, Any]
) -> dict[str, Any]:
    """What every KiCad result records: the tool, its version, the libraries it saw."""
    details: dict[str, Any] = {"tool": KICAD_CLI, **subject}
    if kenv is None:
        details.update(kicad_version=None, libraries=None)
    else:
        details.update(
            kicad_version=kenv.version,
            libraries=kenv.libraries(project_dir),
            environment=kenv.describe(),
        )
    return details


def begin(
    job: Job, ws: Workspace, subject: dict[str, Any], design_rel: str
) -> tuple[KicadEnv, dict[str, Any]] | CheckResult:
    """A job's KiCad and the details every result records, or the errored result when KiCad
    cannot be used or the design file is not there."""
    if (reason := unavailable()) is not None:
        return errored(reason, base_details(kenv=None, project_dir=None, subject=subject), ws)
    try:
        kenv = prepare(ws)
    except KicadError as exc:
        return errored(str(exc), base_details(kenv=None, project_dir=None, subject=subject), ws)
    design = ws.src / design_rel
    details = base_details(kenv=kenv, project_dir=design.parent, subject=subject)
    write_log(ws, environment_log(kenv, details["libraries"]))
    if not design.is_file():
        return errored(f"{design_rel} is not among the job's files", details, ws)
    note_project_file(details, ws, job.params.get("project"))
    return kenv, details


def note_project_file(details: dict[str, Any], ws: Workspace, project_rel: str | None) -> None:
    if project_rel and (problem := project_file_problem(ws.src / project_rel)) is not None:
        details["project_file_problem"] = problem
        write_log(ws, problem)


def errored(summary: str, details: dict[str, Any], ws: Workspace, *extra: Artifact) -> CheckResult:
    return CheckResult("errored", summary, details, [*extra, *log_artifact(ws)])


def log_artifact(ws: Workspace) -> list[Artifact]:
    if ws.log.is_file():
        return [Artifact("log.txt", ws.log, TEXT, "kicad-cli's output")]
    return []


def write_log(ws: Workspace, text: str) -> None:
    ws.log.parent.mkdir(parents=True, exist_ok=True)
    with ws.log.open("a", encoding="utf-8") as fh:
        fh.write(text.rstrip("\n") + "\n\n")


def environment_log(kenv: KicadEnv, libraries: dict[str, Any]) -> str:
    sym, fp = libraries.get("symbols", {}), libraries.get("footprints", {})
    return (
        f"KiCad {kenv.version} ({kenv.cli}); HOME={kenv.home}\n"
        f"symbol libraries: {sym.get('available')}/{sym.get('entries')} available; "
        f"footprint libraries: {fp.get('available')}/{fp.get('entries')} available; "
        f"3D models: {kenv.models_dir} "
        f"({'present' if kenv.models_dir.is_dir() else 'not installed'})"
    )


def violation_result(
    *,
    kind: str,
    job: Job,
    ws: Workspace,
    kenv: KicadEnv,
    details: dict[str, Any],
    report_path: Path,
    found: list[Violation],
    design_file: str,
) -> CheckResult:
    """The verdict and record of a DRC or ERC run whose report was read."""
    fail_on = list(job.params.get("fail_on") or DEFAULT_FAIL_ON)
    apply_waivers(found, job.waivers, kind)
    failing = blocking(found, set(fail_on))
    sarif_path = ws.out / "result.sarif"
    sarif_path.write_text(
        json.dumps(to_sarif(found, tool=KICAD_CLI, version=kenv.version, artifact=design_file))
    )
    details.update(
        counts=counts(found),
        blocking=len(failing),
        fail_on=fail_on,
        violations=[v.model_dump() for v in found],
    )
    artifacts = [
        Artifact("report.json", report_path, JSON, f"kicad-cli's {kind.upper()} report"),
        Artifact("result.sarif", sarif_path, SARIF, "the violations in SARIF 2.1.0"),
        *log_artifact(ws),
    ]
    state = "failed" if failing else "passed"
    return CheckResult(state, summarise(found, failing), details, artifacts)


def plan_for(revision: RevisionFiles, wanted: str) -> list[tuple[Design, KicadConfig]]:
    """The designs a kind plans jobs for (`wanted`: "board", "schematic" or "any")."""
    designs = find_designs(revision)
    if wanted != "any":
        designs = [d for d in designs if getattr(d, wanted)]
    if not designs:
        return []
    config = load_config(revision)
    return [(d, config) for d in designs]


def planned(
    kind: str,
    name: str,
    design: Design,
    config: KicadConfig,
    params: dict[str, Any],
) -> PlannedJob:
    return PlannedJob(
        name=name,
        params=params,
        inputs=design.inputs,
        timeout_s=config.timeouts_s[kind],
        detected=design.detected(),
        error=config.error_for(kind),
    )


class Deadline:
    """The job's time budget, shared by its steps."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()
