"""The files of a directory as a revision: what a person would not want sent is left out
(`.git/`, `sim_build/`, `__pycache__/`, … and the patterns of a `.hwrepoignore` in gitignore
syntax), each kept file with its size and SHA-256."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pathspec

IGNORE_FILE = ".hwrepoignore"
# Never part of a design: version control, simulation and Python build output, editors' leavings.
DEFAULT_IGNORES = [
    ".git/",
    ".hg/",
    ".svn/",
    "sim_build/",
    "__pycache__/",
    "*.pyc",
    ".venv/",
    ".pytest_cache/",
    "results.xml",
    "*-backups/",
    "_autosave-*",
    "*.kicad_prl",
    "fp-info-cache",
    "~*.lck",  # the lock KiCad keeps on an open board
    ".DS_Store",
]


@dataclass(frozen=True)
class LocalFile:
    path: str  # in the revision (posix)
    local: Path
    size: int
    sha256: str

    def ref(self) -> dict[str, object]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def collect(root: Path) -> tuple[list[LocalFile], list[str]]:
    """The files to push and the paths left out (for the log)."""
    patterns = list(DEFAULT_IGNORES)
    ignore_file = root / IGNORE_FILE
    if ignore_file.is_file():
        patterns += ignore_file.read_text(encoding="utf-8", errors="replace").splitlines()
    spec = pathspec.GitIgnoreSpec.from_lines(patterns)
    kept: list[LocalFile] = []
    left_out: list[str] = []
    for path in sorted(root.rglob("*")):
        if path.is_dir() or not (path.is_file() or path.is_symlink()):
            continue
        rel = path.relative_to(root).as_posix()
        if spec.match_file(rel):
            left_out.append(rel)
            continue
        if path.is_symlink():
            left_out.append(rel)  # a link is not content: its target may lie anywhere
            continue
        kept.append(LocalFile(rel, path, path.stat().st_size, sha256_of(path)))
    return kept, left_out


def idempotency_key(files: list[LocalFile], message: str) -> str:
    """Derived from the content: a CI retry of the same push returns the same revision."""
    body = json.dumps(
        {"files": sorted((f.path, f.sha256) for f in files), "message": message},
        sort_keys=True,
    )
    return "push-" + hashlib.sha256(body.encode()).hexdigest()[:48]
