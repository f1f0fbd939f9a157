"""The simulation steps' own code as the worker hands it to the sandbox: a copy with its
bytecode, made once per worker cache and again when the sources change."""

from __future__ import annotations

import importlib.util
import shutil
import stat
from pathlib import Path

from hwrepo.checks.simulation.environments import BUILD_MARKER, SCANNER_MODULE, sim_code
from hwrepo.checks.simulation.kind import REFERENCE_SCANNER, SIM_DIR


def _sim_dir(tmp_path: Path) -> Path:
    copy = tmp_path / "sim"
    shutil.copytree(
        SIM_DIR / "hwrepo_sim", copy / "hwrepo_sim", ignore=shutil.ignore_patterns("__pycache__")
    )
    return copy


def test_the_copy_holds_the_sources_and_their_bytecode(tmp_path: Path) -> None:
    sim_dir = _sim_dir(tmp_path)
    code = sim_code(tmp_path / "cache", sim_dir, REFERENCE_SCANNER)
    assert code.mount.target == sim_dir  # the steps see it where the sources are
    assert code.scanner == sim_dir / f"{SCANNER_MODULE}.py"
    copy = code.mount.source
    assert (copy / BUILD_MARKER).is_file()
    sources = sorted(p.relative_to(copy) for p in copy.rglob("*.py"))
    expected = sorted(Path("hwrepo_sim", p.name) for p in (sim_dir / "hwrepo_sim").glob("*.py"))
    assert sources == sorted([*expected, Path(f"{SCANNER_MODULE}.py")])
    for source in copy.rglob("*.py"):
        assert (
            source.read_bytes()
            == (
                REFERENCE_SCANNER
                if source.name == f"{SCANNER_MODULE}.py"
                else sim_dir / "hwrepo_sim" / source.name
            ).read_bytes()
        )
        compiled = Path(importlib.util.cache_from_source(str(source)))
        assert compiled.is_file(), compiled
        # readable by the sandbox's uid, writable by nobody but the worker
        for path in (source, compiled, compiled.parent):
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode & 0o004 and not mode & 0o022, (path, oct(mode))


def test_made_once_and_again_when_a_source_changes(tmp_path: Path) -> None:
    sim_dir = _sim_dir(tmp_path)
    cache = tmp_path / "cache"
    first = sim_code(cache, sim_dir, REFERENCE_SCANNER)
    assert sim_code(cache, sim_dir, REFERENCE_SCANNER) == first
    with (sim_dir / "hwrepo_sim" / "run_job.py").open("a", encoding="utf-8") as fh:
        fh.write("\n# changed\n")
    second = sim_code(cache, sim_dir, REFERENCE_SCANNER)
    assert second.mount.source != first.mount.source
    assert (second.mount.source / "hwrepo_sim" / "run_job.py").read_text().endswith("# changed\n")
    assert not list((cache / "sim-code").glob(".build-*"))


def test_without_a_usable_cache_the_sources_themselves(tmp_path: Path) -> None:
    sim_dir = _sim_dir(tmp_path)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache directory would be")
    code = sim_code(blocked, sim_dir, REFERENCE_SCANNER)
    assert code.mount.source == sim_dir and code.mount.target is None
    assert code.scanner == REFERENCE_SCANNER
