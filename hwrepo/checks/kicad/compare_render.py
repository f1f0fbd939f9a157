"""What changed between two renders: BOM lines by reference, the board's statistics side by side,
and each pair of views (schematic sheet, board side, 3D view) with a picture of the difference.

The difference picture is an SVG made of the two revisions' own images, embedded unchanged as
`data:` URIs: board and schematic views overlaid in two colours (red: only in the older revision,
blue: only in the newer, dark: in both), the 3D views blended by difference (black where they
agree). Nothing here parses the images: the browser draws them as images (no scripts), and the
only values read from them are an SVG's `viewBox` numbers and a PNG's size, so the two overlay
in the board's own coordinates.
"""

from __future__ import annotations

import base64
import json
import re
import struct
from typing import Any

from hwrepo.checks.core.compare import CheckSide, Compared, changed_fields, keyed_changes

# Larger images are paired but get no difference picture (it would hold both).
OVERLAY_LIMIT = 24 * 1024 * 1024
SVG = "image/svg+xml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_VIEWBOX = re.compile(
    rb"<svg\b[^>]{0,4000}?\bviewBox\s*=\s*[\"']\s*("
    + f"{_NUMBER}(?:[\\s,]+{_NUMBER}){{3}}".encode()
    + rb")\s*[\"']",
    re.S,
)
# feColorMatrix rows drawing each revision in one colour where it draws: board layers are drawn
# on nothing (their opacity says where: _TINT); schematic sheets on an opaque page, where ink is
# what is darker than the page (opacity from 1 - luminance, less KiCad's off-white page: _INK),
# so that the page itself stays white.
_TINT = "0 0 0 0 {r} 0 0 0 0 {g} 0 0 0 0 {b} 0 0 0 1 0"
_INK = "0 0 0 0 {r} 0 0 0 0 {g} 0 0 0 0 {b} -0.2658 -0.894 -0.0903 1.25 -0.1"
OLDER, NEWER = (1.0, 0.15, 0.15), (0.1, 0.45, 1.0)
BOM_FIELDS = ("value", "footprint", "dnp")


def compare_render(a: CheckSide | None, b: CheckSide | None) -> Compared:
    compared = Compared()
    compared.entry["bom"] = _bom(a, b)
    stats_a = (a.details.get("board_statistics") if a else None) or {}
    stats_b = (b.details.get("board_statistics") if b else None) or {}
    scalar = tuple(
        sorted(
            k
            for k in {*stats_a, *stats_b}
            if not isinstance(stats_a.get(k, stats_b.get(k)), dict | list)
        )
    )
    compared.entry["board_statistics"] = {
        "a": stats_a,
        "b": stats_b,
        "changed": changed_fields(stats_a, stats_b, scalar),
    }
    views = []
    names_a = set(_views(a))
    names_b = set(_views(b))
    for name in sorted(names_a | names_b):
        view: dict[str, Any] = {"name": name, "a": name in names_a, "b": name in names_b}
        if a and b and name in names_a and name in names_b:
            image_a, image_b = a.artifact(name), b.artifact(name)
            view["changed"] = _drawing(image_a) != _drawing(image_b)
            picture = difference_picture(name, image_a, image_b)
            if picture is not None:
                out = f"{name.rsplit('.', 1)[0]}.diff.svg"
                compared.files[out] = (picture, SVG)
                view["difference"] = out
            else:
                view["difference"] = None
        views.append(view)
    compared.entry["views"] = views
    compared.entry["pictures_changed"] = [v["name"] for v in views if v.get("changed")]
    return compared


# What an exported SVG says about itself (kicad-cli writes the time of the export there).
_SVG_LABELS = re.compile(rb"<title>.*?</title>|<desc>.*?</desc>", re.DOTALL)


def _drawing(data: bytes | None) -> bytes | None:
    """An image's bytes less what changes at every export, to tell whether two differ."""
    return None if data is None else _SVG_LABELS.sub(b"", data[:4096]) + data[4096:]


def _views(side: CheckSide | None) -> list[str]:
    if side is None:
        return []
    return [n for n in side.artifact_names if n.endswith((".svg", ".png"))]


def _bom_parts(side: CheckSide | None) -> dict[str, dict[str, Any]]:
    if side is None:
        return {}
    raw = side.artifact("bom.json")
    try:
        bom = json.loads(raw) if raw else {}
    except ValueError:
        bom = {}
    parts: dict[str, dict[str, Any]] = {}
    for line in bom.get("lines") or [] if isinstance(bom, dict) else []:
        if not isinstance(line, dict):
            continue
        for ref in line.get("references") or []:
            parts[str(ref)] = {"reference": str(ref), **{f: line.get(f) for f in BOM_FIELDS}}
    return parts


def _bom(a: CheckSide | None, b: CheckSide | None) -> dict[str, Any]:
    return keyed_changes(_bom_parts(a), _bom_parts(b), BOM_FIELDS, key="reference")


def _box(name: str, data: bytes) -> tuple[float, float, float, float] | None:
    if name.endswith(".png"):
        if data[:8] != PNG_MAGIC or len(data) < 24:
            return None
        width, height = struct.unpack(">II", data[16:24])
        return (0.0, 0.0, float(width), float(height)) if width and height else None
    found = _VIEWBOX.search(data[:65536])
    if not found:
        return None
    x, y, w, h = (float(n) for n in re.split(rb"[\s,]+", found.group(1).strip()))
    return (x, y, w, h) if w > 0 and h > 0 else None


def difference_picture(name: str, a: bytes | None, b: bytes | None) -> bytes | None:
    """The SVG showing where two images of one view differ (None when they cannot be read)."""
    if not a or not b or len(a) + len(b) > OVERLAY_LIMIT:
        return None
    box_a, box_b = _box(name, a), _box(name, b)
    if box_a is None or box_b is None:
        return None
    photo = name.endswith(".png")
    if photo:
        box_a = box_b = (0.0, 0.0, box_b[2], box_b[3])  # the same frame, whatever the size
    x0, y0 = min(box_a[0], box_b[0]), min(box_a[1], box_b[1])
    x1 = max(box_a[0] + box_a[2], box_b[0] + box_b[2])
    y1 = max(box_a[1] + box_a[3], box_b[1] + box_b[3])
    media = "image/png" if photo else SVG
    unit = "" if photo else "mm"

    def image(data: bytes, box: tuple[float, float, float, float], style: str) -> str:
        uri = f"data:{media};base64,{base64.b64encode(data).decode()}"
        x, y, w, h = box
        return (
            f'<image x="{x:g}" y="{y:g}" width="{w:g}" height="{h:g}" '
            f'preserveAspectRatio="none" href="{uri}" {style}/>'
        )

    if photo:
        layers = image(a, box_a, "") + image(b, box_b, 'style="mix-blend-mode:difference"')
        defs = ""
    else:
        tint = _INK if name.startswith("schematic/") else _TINT
        defs = "".join(
            f'<filter id="{key}" color-interpolation-filters="sRGB">'
            f'<feColorMatrix type="matrix" values="{tint.format(r=r, g=g, b=bl)}"/></filter>'
            for key, (r, g, bl) in (("older", OLDER), ("newer", NEWER))
        )
        layers = image(a, box_a, 'filter="url(#older)" style="mix-blend-mode:multiply"') + image(
            b, box_b, 'filter="url(#newer)" style="mix-blend-mode:multiply"'
        )
    w, h = x1 - x0, y1 - y0
    background = "black" if photo else "white"
    doc = (
        '<svg xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="{x0:g} {y0:g} {w:g} {h:g}" width="{w:g}{unit}" height="{h:g}{unit}">'
        f"<defs>{defs}</defs>"
        f'<rect x="{x0:g}" y="{y0:g}" width="{w:g}" height="{h:g}" fill="{background}"/>'
        f'<g style="isolation:isolate">{layers}</g></svg>'
    )
    return doc.encode()
