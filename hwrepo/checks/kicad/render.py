"""Kind `render`: what a reviewer looks at, one job per KiCad project (or board, or root
schematic without a project).

Outputs: an SVG per schematic sheet, the board's front and back (copper, silkscreen, outline) as
SVG, a 3D view as PNG, the BOM and the netlist as JSON (with KiCad's own CSV and XML), and the
board's statistics. The 3D model library is optional: the result lists the footprints' model
paths that do not resolve on the machine that rendered.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from hwrepo.checks.core.kind import (
    Artifact,
    CheckKind,
    CheckResult,
    Job,
    PlannedJob,
    RevisionFiles,
    Workspace,
)
from hwrepo.checks.kicad import common as kicad
from hwrepo.checks.kicad.common import (
    VARIABLE,
    ReportError,
    SexpError,
    child,
    children,
    expand,
    head,
    is_yes,
    number,
    point,
    prop,
)

SVG = "image/svg+xml"
PNG = "image/png"
CSV = "text/csv"
XML = "application/xml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FRONT_LAYERS = "F.Cu,F.Silkscreen,Edge.Cuts"
BACK_LAYERS = "B.Cu,B.Silkscreen,Edge.Cuts"
RENDER_SIZE = (800, 600)


class RenderKind(CheckKind):
    name: ClassVar[str] = "render"
    description: ClassVar[str] = (
        "Schematic and board SVGs, a 3D view, BOM, netlist and board statistics for reviewers"
    )

    def available(self) -> str | None:
        return kicad.unavailable()

    def plan(self, revision: RevisionFiles) -> list[PlannedJob]:
        return [
            kicad.planned(
                self.name,
                design.label,
                design,
                config,
                {"project": design.project, "schematic": design.schematic, "board": design.board},
            )
            for design, config in kicad.plan_for(revision, "any")
        ]

    def run(self, job: Job, ws: Workspace, heartbeat: Callable[[], None]) -> CheckResult:
        schematic_rel: str | None = job.params.get("schematic")
        board_rel: str | None = job.params.get("board")
        subject = {
            "project": job.params.get("project"),
            "schematic": schematic_rel,
            "board": board_rel,
        }
        started = kicad.begin(job, ws, subject, schematic_rel or board_rel or "")
        if isinstance(started, CheckResult):
            return started
        kenv, details = started
        session = _Session(ws, kenv, kicad.Deadline(job.timeout_s))

        if schematic_rel:
            self._schematic(session, ws.src / schematic_rel, details)
        else:
            session.skipped.append({"output": "schematic, BOM, netlist", "reason": "no schematic"})
        if board_rel:
            self._board(session, ws.src / board_rel, details)
        else:
            session.skipped.append({"output": "board views, 3D view", "reason": "no board"})

        details.update(artifacts=session.made, failed=session.failures, skipped=session.skipped)
        details.setdefault("missing_3d_models", [])
        artifacts = [*session.artifacts, *kicad.log_artifact(ws)]
        if session.timed_out:
            summary = f"rendering did not finish within {job.timeout_s:.0f} s"
            return CheckResult("timed_out", summary, details, artifacts)
        if session.failures:
            first = session.failures[0]
            more = len(session.failures) - 1
            summary = f"{first['output']}: {first['message']}" + (
                f" (and {more} more output{'s' if more != 1 else ''} failed)" if more else ""
            )
            return CheckResult("errored", summary, details, artifacts)
        return CheckResult("passed", _summary(details), details, artifacts)

    # -- schematic -------------------------------------------------------------------------------

    def _schematic(self, s: _Session, root: Path, details: dict[str, Any]) -> None:
        if not root.is_file():
            s.fail("schematic", f"{root.relative_to(s.ws.src)} is not among the job's files")
            return
        out, cwd = s.ws.out, root.parent
        netlist: dict[str, Any] | None = None
        xml_path = out / "netlist.xml"
        what = "netlist"
        args = ["sch", "export", "netlist", "--format", "kicadxml", "-o", str(xml_path), root.name]
        if s.cli(what, args, cwd) and s.exists(what, xml_path):
            try:
                netlist = netlist_data(xml_path)
            except ReportError as exc:
                s.fail(what, str(exc))
            else:
                s.add("netlist.xml", xml_path, XML, "netlist as KiCad writes it (kicadxml)")
                s.add_json("netlist.json", netlist, "netlist: components and nets with their nodes")
                details["netlist"] = {
                    "sheets": len(netlist["sheets"]),
                    "components": len(netlist["components"]),
                    "nets": len(netlist["nets"]),
                }

        csv_path = out / "bom.csv"
        what = "BOM"
        args = ["sch", "export", "bom", "-o", str(csv_path), "--fields", BOM_FIELDS]
        args += ["--labels", BOM_LABELS, "--ref-range-delimiter", "", root.name]
        if s.cli(what, args, cwd) and s.exists(what, csv_path):
            try:
                bom = bom_data(csv_path, netlist)
            except ReportError as exc:
                s.fail(what, str(exc))
            else:
                s.add("bom.csv", csv_path, CSV, "bill of materials as KiCad writes it (CSV)")
                s.add_json("bom.json", bom, "bill of materials: lines and components with fields")
                details["bom"] = {"lines": len(bom["lines"]), "components": len(bom["components"])}

        svg_dir = out / "schematic"
        what = "schematic SVG"
        if s.cli(what, ["sch", "export", "svg", "-o", str(svg_dir), root.name], cwd):
            svgs = sorted(svg_dir.glob("*.svg")) if svg_dir.is_dir() else []
            if not svgs:
                s.fail(what, "kicad-cli wrote no SVG")
            for svg in svgs:
                if (problem := svg_problem(svg)) is not None:
                    s.fail(what, problem)
                    continue
                sheet = svg.stem.removeprefix(root.stem).removeprefix("-") or "/"
                s.add(f"schematic/{svg.name}", svg, SVG, f"schematic, sheet {sheet}")

        # kicad-cli leaves out a sheet it cannot read without a word: the outputs are partial.
        hierarchy = kicad.read_hierarchy(s.ws.src, root.relative_to(s.ws.src).as_posix())
        if hierarchy.problems and not any(f["output"] == "netlist" for f in s.failures):
            s.fail("schematic", "incomplete: " + "; ".join(hierarchy.problems))

    # -- board -----------------------------------------------------------------------------------

    def _board(self, s: _Session, board: Path, details: dict[str, Any]) -> None:
        if not board.is_file():
            s.fail("board", f"{board.relative_to(s.ws.src)} is not among the job's files")
            return
        out, cwd = s.ws.out, board.parent
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
            if s.cli(what, [*args, board.name], cwd):
                if (problem := svg_problem(path)) is not None:
                    s.fail(what, problem)
                else:
                    s.add(name, path, SVG, what)

        png = out / "pcb-3d.png"
        what = "3D view"
        width, height = RENDER_SIZE
        args = ["pcb", "render", "-o", str(png), "--width", str(width), "--height", str(height)]
        if s.cli(what, [*args, "--side", "top", board.name], cwd):
            if not png.is_file() or png.read_bytes()[:8] != PNG_MAGIC:
                s.fail(what, "kicad-cli wrote no PNG image")
            else:
                s.add("pcb-3d.png", png, PNG, "board in 3D, from the top")

        what = "board statistics"
        try:
            tree, repaired = kicad.parse_sexp_lenient(
                board.read_text(encoding="utf-8", errors="replace")
            )
            stats = board_statistics(tree)
        except (OSError, SexpError) as exc:
            s.fail(what, f"{board.name}: {exc}")
            return
        models = model_references(tree, s.kenv.variables(board.parent), board.parent)
        stats["3d_models"] = {k: v for k, v in models.items() if k != "missing"}
        if repaired:
            stats["file_note"] = repaired
        s.add_json("board.json", stats, "board statistics")
        details["board_statistics"] = stats
        details["3d_models"] = {
            "dir": str(s.kenv.models_dir),
            "installed": s.kenv.models_dir.is_dir(),
            **stats["3d_models"],
        }
        details["missing_3d_models"] = models["missing"]


@dataclass
class _Session:
    """One render job's progress: what was made, what failed, what was left out."""

    ws: Workspace
    kenv: kicad.KicadEnv
    deadline: kicad.Deadline
    artifacts: list[Artifact] = field(default_factory=list)
    made: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    timed_out: bool = False

    def cli(self, what: str, args: list[str], cwd: Path) -> bool:
        if self.deadline.left() <= 0:
            self.timed_out = True
            self.fail(what, "not started: the job's time was used up")
            return False
        run = self.kenv.run(args, cwd=cwd, timeout_s=self.deadline.left(), log=self.ws.log)
        if run.timed_out:
            self.timed_out = True
            self.fail(what, f"timed out after {run.wall_s:.0f} s")
            return False
        if run.exit_code != 0:
            self.fail(what, kicad.describe_exit(run))
            return False
        return True

    def exists(self, what: str, path: Path) -> bool:
        if path.is_file() and path.stat().st_size > 0:
            return True
        self.fail(what, f"kicad-cli wrote no {path.name}")
        return False

    def fail(self, what: str, message: str) -> None:
        self.failures.append({"output": what, "message": message})

    def add(self, name: str, path: Path, media_type: str, what: str) -> None:
        self.artifacts.append(Artifact(name, path, media_type, what))
        self.made.append(
            {"name": name, "what": what, "media_type": media_type, "bytes": path.stat().st_size}
        )

    def add_json(self, name: str, data: Any, what: str) -> None:
        path = self.ws.out / name
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
        self.add(name, path, kicad.JSON, what)


def svg_problem(path: Path) -> str | None:
    """None for a non-empty SVG document, else what is wrong with the file."""
    if not path.is_file() or path.stat().st_size == 0:
        return f"kicad-cli wrote no {path.name}"
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return f"{path.name} is not valid XML: {exc}"
    if not root.tag.endswith("svg"):
        return f"{path.name} is not an SVG document (root element {root.tag})"
    return None


def _summary(details: dict[str, Any]) -> str:
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


# -- Board and netlist data --------------------------------------------------------------------


def _rotate(x: float, y: float, degrees: float) -> tuple[float, float]:
    # KiCad's y axis points down and a footprint's angle turns it counter-clockwise on screen.
    a = math.radians(degrees)
    return x * math.cos(a) + y * math.sin(a), -x * math.sin(a) + y * math.cos(a)


def _arc_points(
    start: tuple[float, float], mid: tuple[float, float], end: tuple[float, float]
) -> list[tuple[float, float]]:
    """Points along the arc through start, mid, end (for extents and lengths)."""
    (ax, ay), (bx, by), (cx, cy) = start, mid, end
    d = 2 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
    if abs(d) < 1e-12:
        return [start, mid, end]
    ux = (
        (ax**2 + ay**2) * (by - cy) + (bx**2 + by**2) * (cy - ay) + (cx**2 + cy**2) * (ay - by)
    ) / d
    uy = (
        (ax**2 + ay**2) * (cx - bx) + (bx**2 + by**2) * (ax - cx) + (cx**2 + cy**2) * (bx - ax)
    ) / d
    r = math.hypot(ax - ux, ay - uy)
    a0, am, a1 = (math.atan2(p[1] - uy, p[0] - ux) for p in (start, mid, end))

    def ccw(frm: float, to: float) -> float:
        return (to - frm) % (2 * math.pi)

    sweep = ccw(a0, a1)
    if ccw(a0, am) > sweep:  # the arc goes the other way round
        sweep -= 2 * math.pi
    steps = 32
    return [
        (ux + r * math.cos(a0 + sweep * i / steps), uy + r * math.sin(a0 + sweep * i / steps))
        for i in range(steps + 1)
    ]


def _length(points: list[tuple[float, float]]) -> float:
    return sum(math.dist(p, q) for p, q in itertools.pairwise(points))


def _outline_points(shape: list[Any]) -> list[tuple[float, float]]:
    kind = (head(shape) or "").removeprefix("gr_").removeprefix("fp_")
    pts: list[tuple[float, float]] = []
    if kind in {"line", "rect"}:
        pts = [p for p in (point(child(shape, "start")), point(child(shape, "end"))) if p]
    elif kind == "arc":
        s, m, e = (point(child(shape, k)) for k in ("start", "mid", "end"))
        if s and m and e:
            pts = _arc_points(s, m, e)
    elif kind == "circle":
        c, e = point(child(shape, "center")), point(child(shape, "end"))
        if c and e:
            r = math.dist(c, e)
            pts = [(c[0] - r, c[1] - r), (c[0] + r, c[1] + r)]
    elif kind in {"poly", "curve"} and (node := child(shape, "pts")) is not None:
        for p in node[1:]:
            if head(p) == "xy" and (xy := point(p)):
                pts.append(xy)
            elif head(p) == "arc":
                s, m, e = (point(child(p, k)) for k in ("start", "mid", "end"))
                if s and m and e:
                    pts.extend(_arc_points(s, m, e))
    return pts


def _on_layer(node: list[Any], layer: str) -> bool:
    found = child(node, "layer")
    return found is not None and len(found) > 1 and str(found[1]) == layer


def board_statistics(tree: list[Any]) -> dict[str, Any]:
    """Copper layers, size, footprints, nets, tracks, vias and zones of a parsed .kicad_pcb."""
    if len(tree) != 1 or head(tree[0]) != "kicad_pcb":
        raise SexpError("not a KiCad board (no kicad_pcb form)")
    board = tree[0]
    layers_node = child(board, "layers")
    copper = [
        str(entry[1])
        for entry in (layers_node[1:] if layers_node else [])
        if isinstance(entry, list) and len(entry) > 1 and str(entry[1]).endswith(".Cu")
    ]
    general = child(board, "general")
    thickness = (
        number(child(general, "thickness")[1]) if general and child(general, "thickness") else None
    )
    outline: list[tuple[float, float]] = []
    counter: Counter[str] = Counter()
    track_length = 0.0
    footprints = {"front": 0, "back": 0}
    pads = 0
    net_names: set[str] = set()
    for node in board[1:]:
        h = head(node)
        if h is None:
            continue
        counter[h] += 1
        if h.startswith("gr_") and _on_layer(node, "Edge.Cuts"):
            outline.extend(_outline_points(node))
        elif h == "segment":
            s, e = point(child(node, "start")), point(child(node, "end"))
            if s and e:
                track_length += math.dist(s, e)
        elif h == "arc":
            s, m, e = (point(child(node, k)) for k in ("start", "mid", "end"))
            if s and m and e:
                track_length += _length(_arc_points(s, m, e))
        elif h == "net" and len(node) > 2 and str(node[2]):
            net_names.add(str(node[2]))
        elif h in {"footprint", "module"}:
            side = "back" if _on_layer(node, "B.Cu") else "front"
            footprints[side] += 1
            at = child(node, "at")
            origin = point(at) or (0.0, 0.0)
            angle = number(at[3]) if at is not None and len(at) > 3 else 0.0
            for sub in node[1:]:
                sh = head(sub) or ""
                if sh == "pad":
                    pads += 1
                    net = child(sub, "net")
                    if net is not None and len(net) > 2 and str(net[2]):
                        net_names.add(str(net[2]))
                elif sh.startswith("fp_") and _on_layer(sub, "Edge.Cuts"):
                    for x, y in _outline_points(sub):
                        rx, ry = _rotate(x, y, angle or 0.0)
                        outline.append((origin[0] + rx, origin[1] + ry))
    size: dict[str, Any] = {"width_mm": None, "height_mm": None}
    if outline:
        xs, ys = [p[0] for p in outline], [p[1] for p in outline]
        size = {
            "width_mm": round(max(xs) - min(xs), 4),
            "height_mm": round(max(ys) - min(ys), 4),
            "origin_mm": [round(min(xs), 4), round(min(ys), 4)],
        }
    version = child(board, "version")
    return {
        "format_version": int(version[1]) if version and isinstance(version[1], int) else None,
        "copper_layers": len(copper),
        "copper_layer_names": copper,
        "thickness_mm": thickness,
        **size,
        "has_outline": bool(outline),
        "footprints": footprints["front"] + footprints["back"],
        "footprints_front": footprints["front"],
        "footprints_back": footprints["back"],
        "pads": pads,
        "nets": len(net_names),
        "tracks": counter["segment"] + counter["arc"],
        "track_length_mm": round(track_length, 3),
        "vias": counter["via"],
        "zones": counter["zone"],
    }


def _embedded_names(node: list[Any]) -> set[str]:
    names: set[str] = set()
    for files in children(node, "embedded_files"):
        for f in children(files, "file"):
            name = child(f, "name")
            if name is not None and len(name) > 1:
                names.add(str(name[1]))
    return names


def model_references(
    tree: list[Any], variables: dict[str, str], project_dir: Path
) -> dict[str, Any]:
    """The footprints' 3D model paths and which of them do not resolve on this machine."""
    board = tree[0]
    board_embedded = _embedded_names(board)
    total = resolved = hidden = 0
    missing: list[dict[str, Any]] = []
    without_model = 0
    for fp in board[1:]:
        if head(fp) not in {"footprint", "module"}:
            continue
        models = list(children(fp, "model"))
        if not models:
            without_model += 1
        embedded = board_embedded | _embedded_names(fp)
        reference = prop(fp, "Reference") or ""
        for model in models:
            if len(model) < 2:
                continue
            if is_yes(model, "hide"):
                hidden += 1
                continue
            total += 1
            written = str(model[1])
            reason = _model_problem(written, variables, project_dir, embedded)
            if reason is None:
                resolved += 1
            else:
                missing.append(
                    {
                        "reference": reference,
                        "footprint": str(fp[1]) if len(fp) > 1 else "",
                        "model": written,
                        "reason": reason,
                    }
                )
    return {
        "referenced": total,
        "resolved": resolved,
        "hidden": hidden,
        "footprints_without_model": without_model,
        "missing": missing,
    }


def _model_problem(
    written: str, variables: dict[str, str], project_dir: Path, embedded: set[str]
) -> str | None:
    if written.startswith("kicad-embed://"):
        name = written.removeprefix("kicad-embed://")
        return None if name in embedded else "not embedded in the board"
    # Older boards name the 3D directory of their KiCad version, or the KiCad 5 name.
    major_dir = next((v for k, v in variables.items() if k.endswith("_3DMODEL_DIR")), None)
    aliases = dict(variables)
    if major_dir:
        aliases["KISYS3DMOD"] = major_dir
        for m in VARIABLE.finditer(written):
            name = m.group(1) or m.group(2)
            if re.fullmatch(r"KICAD\d+_3DMODEL_DIR", name):
                aliases[name] = major_dir
    path_text, unknown = expand(written, aliases)
    if unknown:
        return f"unknown path variable {', '.join(unknown)}"
    path = Path(path_text)
    if not path.is_absolute():
        path = project_dir / path
    return None if path.is_file() else f"no file at {path}"


def netlist_data(xml_path: Path) -> dict[str, Any]:
    """Components and nets of a KiCad XML netlist (`sch export netlist --format kicadxml`)."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise ReportError(f"{xml_path.name} is not valid XML: {exc}") from exc
    components = []
    for comp in root.iterfind("./components/comp"):
        lib = comp.find("libsource")
        sheet = comp.find("sheetpath")
        properties = {p.get("name", ""): p.get("value", "") for p in comp.iterfind("property")}
        components.append(
            {
                "reference": comp.get("ref", ""),
                "value": comp.findtext("value", ""),
                "footprint": comp.findtext("footprint", ""),
                "datasheet": comp.findtext("datasheet", ""),
                "description": comp.findtext("description", ""),
                "library": f"{lib.get('lib', '')}:{lib.get('part', '')}" if lib is not None else "",
                "sheet": sheet.get("names", "") if sheet is not None else "",
                "fields": {
                    f.get("name", ""): f.text or "" for f in comp.iterfind("./fields/field")
                },
                "dnp": "dnp" in properties,
                "exclude_from_bom": "exclude_from_bom" in properties,
                "exclude_from_board": "exclude_from_board" in properties,
            }
        )
    nets = []
    for net in root.iterfind("./nets/net"):
        nodes = [
            {
                "reference": n.get("ref", ""),
                "pin": n.get("pin", ""),
                "function": n.get("pinfunction", ""),
                "type": n.get("pintype", ""),
            }
            for n in net.iterfind("node")
        ]
        nets.append(
            {
                "code": net.get("code", ""),
                "name": net.get("name", ""),
                "class": net.get("class", ""),
                "nodes": nodes,
            }
        )
    sheets = [
        {"number": s.get("number", ""), "path": s.get("name", "")}
        for s in root.iterfind("./design/sheet")
    ]
    return {"sheets": sheets, "components": components, "nets": nets}


BOM_FIELDS = "Reference,Value,Footprint,${QUANTITY},${DNP}"
BOM_LABELS = "Refs,Value,Footprint,Qty,DNP"


def bom_data(csv_path: Path, netlist: dict[str, Any] | None) -> dict[str, Any]:
    """BOM lines from kicad-cli's CSV (grouped by value and footprint), each component with all
    its fields from the netlist."""
    try:
        text = csv_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{csv_path.name} cannot be read: {exc}") from exc
    reader = csv.DictReader(text.splitlines())
    expected = BOM_LABELS.split(",")
    if reader.fieldnames is None or list(reader.fieldnames)[: len(expected)] != expected:
        raise ReportError(f"{csv_path.name} has unexpected columns: {reader.fieldnames}")
    lines = []
    for row in reader:
        refs = [r.strip() for r in (row.get("Refs") or "").split(",") if r.strip()]
        qty = row.get("Qty") or "0"
        lines.append(
            {
                "references": refs,
                "value": row.get("Value") or "",
                "footprint": row.get("Footprint") or "",
                "quantity": int(qty) if qty.isdigit() else len(refs),
                "dnp": bool((row.get("DNP") or "").strip()),
            }
        )
    in_bom = {r for line in lines for r in line["references"]}
    components = [c for c in (netlist or {}).get("components", []) if c["reference"] in in_bom]
    return {"lines": lines, "components": components}
