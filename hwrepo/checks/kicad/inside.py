"""The KiCad kinds inside the sandbox: a clean KiCad of the job's own, kicad-cli, its reports
read into violations, and the references of a design that leave the revision.

The entry points `drc`, `erc` and `render` get the job's request (see `kicad.kind.KicadKind`)
and return {"outcome": {"state", "summary"} | None, "details", "violations", "artifacts"}.
`outcome` is set when the job ended without a verdict of violations (a tool failed, the time
ran out, or for renders always); otherwise the worker judges the violations.

Paths that leave the revision: a library table entry or a 3D model path that is absolute (and
not in KiCad's own library directories), climbs out of the revision with `..`, or uses a
variable the checks do not define, resolves to nothing in the sandbox. Such references are
reported (violations of type `path_outside_revision` for DRC and ERC, failures for renders),
never passed over in silence.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwrepo.checks.core.kind import Workspace
from hwrepo.checks.kicad import outputs
from hwrepo.checks.kicad.designs import LIBRARY_TABLES, resolve_reference
from hwrepo.checks.kicad.outputs import ReportError
from hwrepo.checks.kicad.sexp import (
    VARIABLE,
    SexpError,
    child,
    children,
    expand,
    file_problem,
    head,
    library_entries,
    number,
    parse_sexp,
    parse_sexp_lenient,
    point,
    sheet_references,
)
from hwrepo.checks.run.inside import ToolRun, tool

KICAD_CLI = "kicad-cli"
# kicad-cli's documented exit codes.
EXIT_CODES = {1: "bad arguments", 2: "unknown error", 3: "invalid input file", 5: "violations"}
# kicad-cli's words when --schematic-parity found no usable schematic (it still exits 0).
PARITY_NOT_RUN = "Failed to fetch schematic netlist"
OUTSIDE = "path_outside_revision"
JSON = "application/json"
SVG = "image/svg+xml"
PNG = "image/png"
CSV = "text/csv"
XML = "application/xml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FRONT_LAYERS = "F.Cu,F.Silkscreen,Edge.Cuts"
BACK_LAYERS = "B.Cu,B.Silkscreen,Edge.Cuts"
RENDER_SIZE = (800, 600)
WORKSPACE = Workspace(Path("/job"), Path("/cache"))


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
        return tool([self.cli, *args], cwd=cwd, timeout_s=timeout_s, env=self.env, log=log)

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


def prepare(ws: Workspace, cli: str, version: str, paths: dict[str, str]) -> KicadEnv:
    """A clean KiCad configuration of this job's own, under ws.tmp, with the standard library
    tables copied from the template directory (`paths`: KICAD<major>_* as the worker sees
    them)."""
    major, minor = version.split(".")[:2]
    home = ws.tmp / "kicad-home"
    shutil.rmtree(home, ignore_errors=True)
    config_dir = home / ".config" / "kicad" / f"{major}.{minor}"
    config_dir.mkdir(parents=True)
    template = Path(paths.get(f"KICAD{major}_TEMPLATE_DIR", ""))
    for table in LIBRARY_TABLES:
        source = template / table
        if source.is_file():
            shutil.copyfile(source, config_dir / table)
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
) -> dict[str, Any]:
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
            {
                "uuid": str(raw["uuid"]) if raw.get("uuid") else None,
                "description": str(raw.get("description", "")),
                "x_mm": round(x * scale, 6) if x is not None else None,
                "y_mm": round(y * scale, 6) if y is not None else None,
                "sheet": sheet,
            }
        )
    return {
        "type": type_ or str(entry.get("type") or "unknown"),
        "severity": str(entry.get("severity", "error")).lower(),
        "description": str(entry.get("description", "")),
        "excluded": entry.get("excluded") is True,
        "items": items,
    }


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


def drc_violations(
    report: dict[str, Any],
) -> tuple[list[dict[str, Any]], dict[str, int], list[Any]]:
    """DRC violations, unconnected items (type `unconnected_items`) and schematic parity issues
    (their own types); how many each section held; the raw entries."""
    found: list[dict[str, Any]] = []
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


def erc_violations(report: dict[str, Any], scale: float) -> list[dict[str, Any]]:
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


# -- references that leave the revision -----------------------------------------------------


@dataclass
class Reference:
    """A path a design file names: where, what, as written, and why it cannot be read."""

    file: str  # revision path of the file that names it
    what: str  # "footprint library 'X'", "3D model of U3"
    path: str
    problem: str

    def violation(self) -> dict[str, Any]:
        return {
            "type": OUTSIDE,
            "severity": "error",
            "description": f"{self.file}: {self.what} {self.problem}: {self.path}",
            "items": [],
        }


def classify_path(written: str, base: Path, src: Path, stock: dict[str, str]) -> str | None:
    """None when `written` (a library URI or model path, with KiCad's ${VARIABLES}) resolves
    inside the revision `src` (relative to `base`) or into KiCad's own libraries; else why not."""
    variables = {**legacy_aliases(stock, written), "KIPRJMOD": str(base)}
    resolved, unknown = expand(written.replace("\\", "/"), variables)
    if unknown:
        names = ", ".join("${" + n + "}" for n in unknown)
        return f"uses {names}, which checks do not define, so it points outside the revision"
    path = Path(resolved)
    if not path.is_absolute():
        path = base / path
    path = Path(os.path.normpath(path))
    if path.is_relative_to(src):
        return None
    if any(path.is_relative_to(Path(os.path.normpath(d))) for d in stock.values() if d):
        return None  # KiCad's own libraries: part of the tool's installation
    return "points outside the revision"


def legacy_aliases(stock: dict[str, str], written: str) -> dict[str, str]:
    """KiCad's variables with the names older designs use for the same directories
    (`${KICAD6_3DMODEL_DIR}`, `${KISYS3DMOD}`), as KiCad resolves them."""
    values = dict(stock)
    by_suffix = {k.split("_", 1)[1]: v for k, v in stock.items() if "_" in k}
    legacy = {"KISYS3DMOD": "3DMODEL_DIR", "KISYSMOD": "FOOTPRINT_DIR"}
    for m in VARIABLE.finditer(written):
        name = m.group(1) or m.group(2)
        suffix = legacy.get(name) or (
            name.split("_", 1)[1] if re.fullmatch(r"KICAD\d+_\w+", name) else None
        )
        if suffix in by_suffix:
            values[name] = by_suffix[suffix]
    return values


def library_references(
    design_dir: Path, src: Path, stock: dict[str, str], tables: tuple[str, ...]
) -> list[Reference]:
    refs = []
    for table in tables:
        path = design_dir / table
        if not path.is_file():
            continue
        try:
            entries = library_entries(path.read_text(encoding="utf-8", errors="replace"))
        except SexpError:
            continue
        kind = "symbol" if table.startswith("sym") else "footprint"
        for entry in entries:
            uri = entry.get("uri", "")
            problem = classify_path(uri, design_dir, src, stock) if uri else None
            if problem is not None:
                rel = path.relative_to(src).as_posix()
                refs.append(
                    Reference(rel, f"{kind} library {entry.get('name', '?')!r}", uri, problem)
                )
    return refs


def model_references(
    tree: list[Any], board: Path, src: Path, stock: dict[str, str]
) -> list[Reference]:
    refs = []
    rel = board.relative_to(src).as_posix()
    for form in tree:
        for fp in children(form, "footprint"):
            ref = _footprint_reference(fp)
            for model in children(fp, "model"):
                if len(model) < 2 or not isinstance(model[1], str):
                    continue
                written = str(model[1])
                if written.startswith("kicad-embed://"):
                    continue
                problem = classify_path(written, board.parent, src, stock)
                if problem is not None:
                    refs.append(Reference(rel, f"the 3D model of {ref}", written, problem))
    return refs


def _footprint_reference(fp: list[Any]) -> str:
    for p in children(fp, "property"):
        if len(p) > 2 and str(p[1]) == "Reference":
            return str(p[2])
    for t in children(fp, "fp_text"):
        if len(t) > 2 and str(t[1]) == "reference":
            return str(t[2])
    return "a footprint"


# -- a job -----------------------------------------------------------------------------------


@dataclass
class Session:
    """One KiCad job inside the sandbox: its KiCad, its time, its log, what it made."""

    ws: Workspace
    kenv: KicadEnv
    deadline: float
    details: dict[str, Any]
    artifacts: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def begin(cls, request: dict[str, Any], subject: dict[str, Any]) -> Session:
        ws = WORKSPACE
        ws.out.mkdir(parents=True, exist_ok=True)
        kicad = request["kicad"]
        kenv = prepare(ws, kicad["cli"], kicad["version"], kicad["paths"])
        deadline = time.monotonic() + float(request["timeout_s"])
        details: dict[str, Any] = {
            "tool": KICAD_CLI,
            **subject,
            "kicad_version": kenv.version,
            "environment": kenv.describe(),
        }
        session = cls(ws, kenv, deadline, details)
        return session

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def cli(self, args: list[str], cwd: Path) -> ToolRun:
        return self.kenv.run(args, cwd=cwd, timeout_s=max(self.left(), 0.1), log=self.ws.log)

    def log(self, text: str) -> None:
        self.ws.log.parent.mkdir(parents=True, exist_ok=True)
        with self.ws.log.open("a", encoding="utf-8") as fh:
            fh.write(text.rstrip("\n") + "\n\n")

    def note_environment(self, project_dir: Path | None) -> None:
        libraries = self.kenv.libraries(project_dir)
        self.details["libraries"] = libraries
        sym, fp = libraries.get("symbols", {}), libraries.get("footprints", {})
        self.log(
            f"KiCad {self.kenv.version}; HOME={self.kenv.home}\n"
            f"symbol libraries: {sym.get('available')}/{sym.get('entries')} available; "
            f"footprint libraries: {fp.get('available')}/{fp.get('entries')} available; "
            f"3D models: {self.kenv.models_dir} "
            f"({'present' if self.kenv.models_dir.is_dir() else 'not installed'})"
        )

    def note_project_file(self, project_rel: str | None) -> None:
        if project_rel and (problem := project_file_problem(self.ws.src / project_rel)):
            self.details["project_file_problem"] = problem
            self.log(problem)

    def artifact(self, name: str, media_type: str, description: str) -> None:
        self.artifacts.append({"name": name, "media_type": media_type, "description": description})

    def json_artifact(self, name: str, data: Any, description: str) -> None:
        path = self.ws.out / name
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
        self.artifact(name, JSON, description)

    def response(
        self,
        outcome: tuple[str, str] | None,
        violations: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        if self.ws.log.is_file():
            self.artifact("log.txt", "text/plain", "kicad-cli's output")
        return {
            "outcome": {"state": outcome[0], "summary": outcome[1]} if outcome else None,
            "details": self.details,
            "violations": violations or [],
            "artifacts": self.artifacts,
        }

    def ended(self, run: ToolRun, what: str) -> tuple[str, str] | None:
        """The outcome of a kicad-cli run that did not succeed (None when it did)."""
        if run.timed_out:
            return "timed_out", f"{what} did not finish within the job's time"
        if run.exit_code != 0:
            return "errored", describe_exit(run)
        return None


def _stock(request: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in request["kicad"]["paths"].items() if k.startswith("KICAD")}


def start(
    request: dict[str, Any], subject: dict[str, Any], design_rel: str, tables: tuple[str, ...]
) -> tuple[Session, dict[str, Any] | None, list[Reference]]:
    """What every KiCad job does first: its KiCad, the libraries it sees, the design file
    (else the response that ends the job), the project file, the library tables' entries
    that leave the revision."""
    s = Session.begin(request, subject)
    design = s.ws.src / design_rel
    s.note_environment(design.parent)
    if not design.is_file():
        return s, s.response(("errored", f"{design_rel} is not among the job's files")), []
    s.note_project_file(request["params"].get("project"))
    return s, None, library_references(design.parent, s.ws.src, _stock(request), tables)


def drc(request: dict[str, Any]) -> dict[str, Any]:
    params = request["params"]
    board_rel: str = params["board"]
    schematic_rel: str | None = params.get("schematic")
    subject = {
        "board": board_rel,
        "schematic": schematic_rel,
        "project": params.get("project"),
        "fail_on": list(params.get("fail_on") or ["error"]),
    }
    s, ended, outside = start(request, subject, board_rel, ("fp-lib-table",))
    if ended is not None:
        return ended
    board = s.ws.src / board_rel
    parity_off: str | None = None
    if not schematic_rel:
        parity_off = "no schematic of the board's name"
    elif problems := read_hierarchy(s.ws.src, schematic_rel).problems:
        parity_off = "the schematic cannot be read whole: " + "; ".join(problems)
    report = s.ws.out / "report.json"
    report.unlink(missing_ok=True)
    args = ["pcb", "drc", "--format", "json", "--severity-all"]
    if parity_off is None:
        args.append("--schematic-parity")
    run = s.cli([*args, "-o", str(report), board.name], board.parent)
    s.details["wall_s"] = round(run.wall_s, 3)
    if (ended := s.ended(run, f"DRC of {board_rel}")) is not None:
        return s.response(ended)
    try:
        data = read_report(report)
        found, sections, raw = drc_violations(data)
    except ReportError as exc:
        said = run.last_lines(10)
        return s.response(("errored", f"{exc}" + (f"; kicad-cli said: {said}" if said else "")))
    if parity_off is not None:
        s.details["schematic_parity"] = {"checked": False, "reason": parity_off}
    elif PARITY_NOT_RUN in run.output:
        lines = [ln for ln in run.output.splitlines() if ln.strip() and "parity" in ln.lower()]
        s.details["schematic_parity"] = {"checked": False, "reason": " ".join(lines)}
    else:
        s.details["schematic_parity"] = {"checked": True, "schematic": schematic_rel}
    s.details["sections"] = sections
    s.details["exclusions"] = exclusion_comments(raw)
    s.details["report_kicad_version"] = data.get("kicad_version")
    s.details["outside_revision"] = [r.__dict__ for r in outside]
    s.artifact("report.json", JSON, "kicad-cli's DRC report")
    return s.response(None, found + [r.violation() for r in outside])


def erc(request: dict[str, Any]) -> dict[str, Any]:
    params = request["params"]
    schematic_rel: str = params["schematic"]
    subject = {
        "schematic": schematic_rel,
        "project": params.get("project"),
        "fail_on": list(params.get("fail_on") or ["error"]),
    }
    s, ended, outside = start(request, subject, schematic_rel, ("sym-lib-table",))
    if ended is not None:
        return ended
    schematic = s.ws.src / schematic_rel
    report = s.ws.out / "report.json"
    report.unlink(missing_ok=True)
    args = ["sch", "erc", "--format", "json", "--severity-all", "-o", str(report)]
    run = s.cli([*args, schematic.name], schematic.parent)
    s.details["wall_s"] = round(run.wall_s, 3)
    if (ended := s.ended(run, f"ERC of {schematic_rel}")) is not None:
        return s.response(ended)
    hierarchy = read_hierarchy(s.ws.src, schematic_rel)
    s.details["hierarchy"] = [f.relative_to(s.ws.src).as_posix() for f in hierarchy.files]
    if hierarchy.problems:
        if report.is_file():
            s.artifact("report.json", JSON, "ERC report")
        summary = "part of the schematic was not checked (kicad-cli skips it silently): "
        return s.response(("errored", summary + "; ".join(hierarchy.problems)))
    try:
        data = read_report(report)
        entries = erc_entries(data)
        scale = erc_position_scale(data, hierarchy.files, s.kenv.version)
        found = erc_violations(data, scale["scale"])
    except ReportError as exc:
        said = run.last_lines(10)
        return s.response(("errored", f"{exc}" + (f"; kicad-cli said: {said}" if said else "")))
    s.details["sheets"] = [
        {
            "path": sheet.get("path"),
            "uuid_path": sheet.get("uuid_path"),
            "violations": len(sheet.get("violations") or []),
        }
        for sheet in data.get("sheets", [])
        if isinstance(sheet, dict)
    ]
    s.details["positions"] = scale
    s.details["exclusions"] = exclusion_comments([e for _s, e in entries])
    s.details["report_kicad_version"] = data.get("kicad_version")
    s.details["outside_revision"] = [r.__dict__ for r in outside]
    s.artifact("report.json", JSON, "kicad-cli's ERC report")
    return s.response(None, found + [r.violation() for r in outside])


# -- renders ---------------------------------------------------------------------------------


@dataclass
class _Render:
    s: Session
    made: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    timed_out: bool = False

    def cli(self, what: str, args: list[str], cwd: Path) -> bool:
        if self.s.left() <= 0:
            self.timed_out = True
            self.fail(what, "not started: the job's time was used up")
            return False
        run = self.s.cli(args, cwd)
        if run.timed_out:
            self.timed_out = True
            self.fail(what, f"timed out after {run.wall_s:.0f} s")
            return False
        if run.exit_code != 0:
            self.fail(what, describe_exit(run))
            return False
        return True

    def exists(self, what: str, path: Path) -> bool:
        if path.is_file() and path.stat().st_size > 0:
            return True
        self.fail(what, f"kicad-cli wrote no {path.name}")
        return False

    def fail(self, what: str, message: str) -> None:
        self.failures.append({"output": what, "message": message})

    def add(self, name: str, media_type: str, what: str) -> None:
        self.s.artifact(name, media_type, what)
        size = (self.s.ws.out / name).stat().st_size
        self.made.append({"name": name, "what": what, "media_type": media_type, "bytes": size})

    def add_json(self, name: str, data: Any, what: str) -> None:
        path = self.s.ws.out / name
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
        self.add(name, JSON, what)


def render(request: dict[str, Any]) -> dict[str, Any]:
    params = request["params"]
    schematic_rel: str | None = params.get("schematic")
    board_rel: str | None = params.get("board")
    subject = {"project": params.get("project"), "schematic": schematic_rel, "board": board_rel}
    s, ended, outside = start(request, subject, schematic_rel or board_rel or "", LIBRARY_TABLES)
    if ended is not None:
        return ended
    r = _Render(s)
    stock = _stock(request)
    if schematic_rel:
        _schematic(r, s.ws.src / schematic_rel)
    else:
        r.skipped.append({"output": "schematic, BOM, netlist", "reason": "no schematic"})
    if board_rel:
        outside += _board(r, s.ws.src / board_rel, stock)
    else:
        r.skipped.append({"output": "board views, 3D view", "reason": "no board"})
    for ref in outside:
        r.fail("references", f"{ref.file}: {ref.what} {ref.problem}: {ref.path}")
    s.details.update(artifacts=r.made, failed=r.failures, skipped=r.skipped)
    s.details["outside_revision"] = [ref.__dict__ for ref in outside]
    s.details.setdefault("missing_3d_models", [])
    if r.timed_out:
        return s.response(("timed_out", "rendering did not finish within the job's time"))
    if r.failures:
        first = r.failures[0]
        more = len(r.failures) - 1
        summary = f"{first['output']}: {first['message']}" + (
            f" (and {more} more output{'s' if more != 1 else ''} failed)" if more else ""
        )
        return s.response(("errored", summary))
    return s.response(("passed", _render_summary(s.details)))


def _schematic(r: _Render, root: Path) -> None:
    out, cwd = r.s.ws.out, root.parent
    netlist: dict[str, Any] | None = None
    xml_path = out / "netlist.xml"
    what = "netlist"
    args = ["sch", "export", "netlist", "--format", "kicadxml", "-o", str(xml_path), root.name]
    if r.cli(what, args, cwd) and r.exists(what, xml_path):
        try:
            netlist = outputs.netlist_data(xml_path)
        except ReportError as exc:
            r.fail(what, str(exc))
        else:
            r.add("netlist.xml", XML, "netlist as KiCad writes it (kicadxml)")
            r.add_json("netlist.json", netlist, "netlist: components and nets with their nodes")
            r.s.details["netlist"] = {
                "sheets": len(netlist["sheets"]),
                "components": len(netlist["components"]),
                "nets": len(netlist["nets"]),
            }

    csv_path = out / "bom.csv"
    what = "BOM"
    args = ["sch", "export", "bom", "-o", str(csv_path), "--fields", outputs.BOM_FIELDS]
    args += ["--labels", outputs.BOM_LABELS, "--ref-range-delimiter", "", root.name]
    if r.cli(what, args, cwd) and r.exists(what, csv_path):
        try:
            bom = outputs.bom_data(csv_path, netlist)
        except ReportError as exc:
            r.fail(what, str(exc))
        else:
            r.add("bom.csv", CSV, "bill of materials as KiCad writes it (CSV)")
            r.add_json("bom.json", bom, "bill of materials: lines and components with fields")
            r.s.details["bom"] = {"lines": len(bom["lines"]), "components": len(bom["components"])}

    svg_dir = out / "schematic"
    what = "schematic SVG"
    if r.cli(what, ["sch", "export", "svg", "-o", str(svg_dir), root.name], cwd):
        svgs = sorted(svg_dir.glob("*.svg")) if svg_dir.is_dir() else []
        if not svgs:
            r.fail(what, "kicad-cli wrote no SVG")
        for svg in svgs:
            if (problem := outputs.svg_problem(svg)) is not None:
                r.fail(what, problem)
                continue
            sheet = svg.stem.removeprefix(root.stem).removeprefix("-") or "/"
            r.add(f"schematic/{svg.name}", SVG, f"schematic, sheet {sheet}")

    # kicad-cli leaves out a sheet it cannot read without a word: the outputs are partial.
    hierarchy = read_hierarchy(r.s.ws.src, root.relative_to(r.s.ws.src).as_posix())
    if hierarchy.problems and not any(f["output"] == "netlist" for f in r.failures):
        r.fail("schematic", "incomplete: " + "; ".join(hierarchy.problems))


def _board(r: _Render, board: Path, stock: dict[str, str]) -> list[Reference]:
    if not board.is_file():
        r.fail("board", f"{board.relative_to(r.s.ws.src)} is not among the job's files")
        return []
    out, cwd = r.s.ws.out, board.parent
    views = [
        ("pcb-front.svg", FRONT_LAYERS, [], "board, front: copper, silkscreen, outline"),
        (
            "pcb-back.svg",
            BACK_LAYERS,
            ["--mirror"],
            "board, back (mirrored, as seen from below): copper, silkscreen, outline",
        ),
    ]
    for name, layers, extra, what in views:
        path = out / name
        args = ["pcb", "export", "svg", "--mode-single", "-l", layers, *extra]
        args += ["--page-size-mode", "2", "--exclude-drawing-sheet", "-o", str(path)]
        if r.cli(what, [*args, board.name], cwd):
            if (problem := outputs.svg_problem(path)) is not None:
                r.fail(what, problem)
            else:
                r.add(name, SVG, what)

    png = out / "pcb-3d.png"
    what = "3D view"
    width, height = RENDER_SIZE
    args = ["pcb", "render", "-o", str(png), "--width", str(width), "--height", str(height)]
    if r.cli(what, [*args, "--side", "top", board.name], cwd):
        if not png.is_file() or png.read_bytes()[:8] != PNG_MAGIC:
            r.fail(what, "kicad-cli wrote no PNG image")
        else:
            r.add("pcb-3d.png", PNG, "board in 3D, from the top")

    what = "board statistics"
    try:
        tree, repaired = parse_sexp_lenient(board.read_text(encoding="utf-8", errors="replace"))
        stats = outputs.board_statistics(tree)
    except (OSError, SexpError) as exc:
        r.fail(what, f"{board.name}: {exc}")
        return []
    models = outputs.model_references(tree, r.s.kenv.variables(board.parent), board.parent)
    stats["3d_models"] = {k: v for k, v in models.items() if k != "missing"}
    if repaired:
        stats["file_note"] = repaired
    r.add_json("board.json", stats, "board statistics")
    r.s.details["board_statistics"] = stats
    r.s.details["3d_models"] = {
        "dir": str(r.s.kenv.models_dir),
        "installed": r.s.kenv.models_dir.is_dir(),
        **stats["3d_models"],
    }
    r.s.details["missing_3d_models"] = models["missing"]
    return model_references(tree, board, r.s.ws.src, stock)


def _render_summary(details: dict[str, Any]) -> str:
    made = details["artifacts"]
    sheets = sum(1 for a in made if a["name"].startswith("schematic/"))
    parts = []
    if sheets:
        parts.append(f"{sheets} schematic sheet{'s' if sheets != 1 else ''}")
    if any(a["name"] == "pcb-front.svg" for a in made):
        parts.append("board front and back")
    if any(a["name"] == "pcb-3d.png" for a in made):
        parts.append("3D view")
    if "bom" in details:
        parts.append(f"BOM ({details['bom']['lines']} lines)")
    if "netlist" in details:
        parts.append(f"netlist ({details['netlist']['nets']} nets)")
    if "board_statistics" in details:
        b = details["board_statistics"]
        size = (
            f"{b['width_mm']:g} x {b['height_mm']:g} mm, " if b.get("width_mm") is not None else ""
        )
        parts.append(f"board {size}{b['copper_layers']} copper layers")
    text = ", ".join(parts)
    models = details.get("3d_models")
    if models and details["missing_3d_models"]:
        text += (
            f"; rendered without {len(details['missing_3d_models'])} of "
            f"{models['referenced']} 3D models"
        )
    return text
