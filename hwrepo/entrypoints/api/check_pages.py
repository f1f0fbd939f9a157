"""How each check kind is shown: one table, kind name -> its page template and what that page
needs besides the check and its details, and one table of how a kind's entry of a comparison is
shown. Adding a kind's pages is a template and an entry in each; nothing else in the pages
branches on kinds (a kind without an entry gets the generic page, or the generic comparison
entry, which shows whatever lists the entry holds)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hwrepo.domain.checks import Check
from hwrepo.domain.model import Project
from hwrepo.service_layer import views
from hwrepo.service_layer.backends import Backends
from hwrepo.service_layer.waveforms import WAVE_SUFFIXES

Context = Callable[[Backends, Project, Check, dict[str, Any]], dict[str, Any]]


def _nothing(backends: Backends, project: Project, check: Check, details: dict) -> dict:
    return {}


@dataclass(frozen=True)
class CheckPage:
    template: str
    context: Context = _nothing
    points: bool = False  # its page shows the board, where review threads anchor to points


def artifact_url(project: Project, check: Check, name: str) -> str:
    return (
        f"/api/v1/projects/{project.full_name}/revisions/{check.revision}/checks/{check.id}"
        f"/artifacts/{quote(name)}"
    )


def _simulation(backends: Backends, project: Project, check: Check, details: dict) -> dict:
    wave = next(
        (a["name"] for a in check.artifacts if str(a.get("name", "")).endswith(WAVE_SUFFIXES)),
        None,
    )
    return {"waveform": wave, "files": views.revision_paths(backends, check)}


def _render_of(backends: Backends, check: Check) -> tuple[Check | None, dict[str, Any]]:
    for render in views.same_design(backends, check, "render"):
        if render.artifacts:
            return render, views.details(backends, render)
    return None, {}


def _drc(backends: Backends, project: Project, check: Check, details: dict) -> dict:
    """The board's front render (from the render check of the same design), with what places
    a violation's board position on it: the board's origin and size."""
    render, rendered = _render_of(backends, check)
    stats = rendered.get("board_statistics") or {}
    names = {a["name"] for a in render.artifacts} if render else set()
    drawings = []
    if render and "pcb-front.svg" in names and stats.get("origin_mm"):
        drawings.append(
            {
                "key": "front",
                "label": "board, front",
                "url": artifact_url(project, render, "pcb-front.svg"),
                "origin": stats["origin_mm"],
                "size": [stats.get("width_mm", 0), stats.get("height_mm", 0)],
            }
        )
    return {"drawings": drawings, "render": render}


def _sheet_key(path: str | None) -> str:
    return (path or "/").strip("/").replace("/", "-") or "/"


def _erc(backends: Backends, project: Project, check: Check, details: dict) -> dict:
    """The schematic's sheets (from the render check): positions are page coordinates."""
    render, _ = _render_of(backends, check)
    drawings = []
    for item in render.artifacts if render else []:
        name = str(item.get("name", ""))
        if name.startswith("schematic/") and name.endswith(".svg"):
            sheet = str(item.get("description", "")).removeprefix("schematic, sheet ") or "/"
            drawings.append(
                {
                    "key": sheet,
                    "label": f"sheet {sheet}",
                    "url": artifact_url(project, render, name),
                    "origin": [0, 0],
                    "size": None,
                }
            )
    drawings.sort(key=lambda d: (d["key"] != "/", d["key"]))
    return {"drawings": drawings, "render": render}


def _positions(details: dict[str, Any], sheet_of: Callable[[dict], str]) -> list[dict]:
    """Every violation's positions, by index, for the markers (the table pages through the
    API; the drawing shows them all)."""
    out = []
    for index, v in enumerate(details.get("violations") or []):
        points = [
            [i.get("x_mm"), i.get("y_mm"), sheet_of(i)]
            for i in v.get("items") or []
            if isinstance(i.get("x_mm"), int | float) and isinstance(i.get("y_mm"), int | float)
        ]
        out.append(
            {
                "index": index,
                "identity": v.get("identity"),
                "severity": v.get("severity"),
                "points": points,
            }
        )
    return out


def _drc_page(backends: Backends, project: Project, check: Check, details: dict) -> dict:
    return {
        **_drc(backends, project, check, details),
        "heading": "Violations",
        "drawing_class": "board",
        "kicad_bridge": True,
        "positions": _positions(details, lambda i: "front"),
    }


def _erc_page(backends: Backends, project: Project, check: Check, details: dict) -> dict:
    found = _erc(backends, project, check, details)
    return {
        **found,
        "heading": "Violations",
        "drawing_class": "schematic",
        # KiCad's API drives only its PCB editor: the bridge cannot show a schematic's items
        "kicad_bridge": False,
        "positions": _positions(details, lambda i: _sheet_key(i.get("sheet"))),
    }


def _lint(backends: Backends, project: Project, check: Check, details: dict) -> dict:
    return {"drawings": [], "positions": [], "render": None, "heading": "Findings"}


def _render(backends: Backends, project: Project, check: Check, details: dict) -> dict:
    names = [str(a.get("name", "")) for a in check.artifacts]
    bom = None
    if "bom.json" in names:
        bom = views.artifact_json(backends, check, "bom.json")
    stats = details.get("board_statistics") or {}
    front = None
    if "pcb-front.svg" in names and stats.get("origin_mm"):
        front = {
            "url": artifact_url(project, check, "pcb-front.svg"),
            "origin": stats["origin_mm"],
            "size": [stats.get("width_mm", 0), stats.get("height_mm", 0)],
            "layer": "front",
        }
    return {
        "board_front": front,
        "sheets": [n for n in names if n.startswith("schematic/") and n.endswith(".svg")],
        "boards": [n for n in ("pcb-front.svg", "pcb-back.svg") if n in names],
        "image_3d": "pcb-3d.png" if "pcb-3d.png" in names else None,
        "bom": bom,
    }


PAGES: dict[str, CheckPage] = {
    "simulation": CheckPage("checks/simulation.html", _simulation),
    "drc": CheckPage("checks/violations.html", _drc_page),
    "erc": CheckPage("checks/violations.html", _erc_page),
    "render": CheckPage("checks/render.html", _render, points=True),
    "rtl-structure": CheckPage("checks/rtl_structure.html"),
    "rtl-lint": CheckPage("checks/violations.html", _lint),
}
GENERIC = CheckPage("checks/generic.html")


def page_of(kind: str) -> CheckPage:
    return PAGES.get(kind, GENERIC)


def points_check(checks: list[Check]) -> Check | None:
    """The check of a revision whose page shows the board's points (threads anchored there)."""
    return next((c for c in checks if page_of(c.kind).points), None)


# How a kind's entry in a comparison of two revisions is shown (templates/compare/).
COMPARISONS: dict[str, str] = {
    "drc": "compare/violations.html",
    "erc": "compare/violations.html",
    "rtl-lint": "compare/violations.html",
    "simulation": "compare/simulation.html",
    "rtl-structure": "compare/rtl_structure.html",
    "render": "compare/render.html",
}
GENERIC_COMPARISON = "compare/generic.html"


def comparison_template(kind: str) -> str:
    return COMPARISONS.get(kind, GENERIC_COMPARISON)
