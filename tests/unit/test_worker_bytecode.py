"""The worker writes the bytecode of hwrepo's own modules where it is missing or stale, so that
sandboxed Pythons (which cannot write it) load it instead of compiling in every job."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from hwrepo.entrypoints.worker import HWREPO_PACKAGE, compile_own_code


def test_missing_and_stale_bytecode_is_written(tmp_path: Path) -> None:
    package = tmp_path / "hwrepo"
    shutil.copytree(HWREPO_PACKAGE / "checks" / "rtl", package / "checks" / "rtl")
    inside = package / "checks" / "rtl" / "inside.py"
    cached = Path(importlib.util.cache_from_source(str(inside)))
    shutil.rmtree(cached.parent, ignore_errors=True)

    compile_own_code(package)
    assert cached.is_file()
    first = cached.stat().st_mtime_ns

    inside.write_text(inside.read_text() + "\n# changed\n")
    os.utime(inside, ns=(first + 10**9, first + 10**9))
    compile_own_code(package)
    assert cached.stat().st_mtime_ns > first  # stale bytecode written again
