"""Media types of design files, by name (hardware formats first, then the system's table)."""

from __future__ import annotations

import mimetypes
from pathlib import PurePosixPath

_BY_SUFFIX = {
    ".v": "text/x-verilog",
    ".vh": "text/x-verilog",
    ".sv": "text/x-systemverilog",
    ".svh": "text/x-systemverilog",
    ".vhd": "text/x-vhdl",
    ".vhdl": "text/x-vhdl",
    ".py": "text/x-python",
    ".toml": "application/toml",
    ".md": "text/markdown",
    ".kicad_pro": "application/x-kicad-project",
    ".kicad_sch": "application/x-kicad-schematic",
    ".kicad_pcb": "application/x-kicad-pcb",
    ".kicad_sym": "application/x-kicad-symbol",
    ".kicad_mod": "application/x-kicad-footprint",
    ".kicad_prl": "application/x-kicad-project-local",
    ".kicad_dru": "application/x-kicad-design-rules",
    ".fst": "application/x-fst",
    ".vcd": "text/x-vcd",
    ".gbr": "application/vnd.gerber",
    ".drl": "application/x-excellon",
    ".step": "model/step",
    ".stp": "model/step",
    ".wrl": "model/vrml",
}


def media_type(path: str) -> str:
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix]
    guessed, _ = mimetypes.guess_type(path, strict=False)
    return guessed or "application/octet-stream"


_TEXT_TYPES = {
    "application/toml",
    "application/json",
    "application/xml",
    "application/vnd.gerber",
    "application/x-excellon",
    "model/vrml",
}


def is_text(media: str) -> bool:
    """Whether files of this media type are text people read line by line (KiCad's S-expression
    files included)."""
    return (
        media.startswith("text/") or media.startswith("application/x-kicad") or media in _TEXT_TYPES
    )
