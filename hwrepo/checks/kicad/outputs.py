"""Reading what a render job made and the board it was made from (inside the sandbox): SVGs,
board statistics, 3D model references, the netlist and the BOM."""

from __future__ import annotations

import csv
import itertools
import math
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

from hwrepo.checks.kicad.sexp import (
    VARIABLE,
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


class ReportError(Exception):
    """A report or output kicad-cli wrote is missing or cannot be read."""


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
