"""The files of a directory as a revision: what a person would not want sent is left out
(`.git/`, `sim_build/`, `__pycache__/`, … and the patterns of a `.hwrepoignore` in gitignore
syntax), each kept file with its size and SHA-256."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
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


def cache_dir() -> Path:
    """Where the client keeps what it knows of local files: `$XDG_CACHE_HOME/hwrepo` (else
    `~/.cache/hwrepo`)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hwrepo"


# A file changed within this long before it was hashed may change again within its own
# timestamp's granularity, unseen: its digest is not kept (git's "racily clean" files).
RACY_NS = 1_000_000_000


class HashCache:
    """The SHA-256 of each file of one directory as it was last hashed, kept by what a change
    to the file changes: size, mtime_ns, ctime_ns, inode and device. A file whose stat differs
    in any of them is hashed again, so an unchanged push reads no file's bytes.

    One JSON file per directory (named by the SHA-256 of its absolute path) under
    `cache_dir()/push-hashes/`; a cache that cannot be read or written is simply not used."""

    def __init__(self, root: Path) -> None:
        name = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:32]
        self.path = cache_dir() / "push-hashes" / f"{name}.json"
        self.old: dict[str, list[int | str]] = {}
        self.new: dict[str, list[int | str]] = {}
        self.started_ns = time.time_ns()
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("files"), dict):
                self.old = data["files"]
        except (OSError, ValueError):
            pass

    @staticmethod
    def _key(st: os.stat_result) -> list[int | str]:
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]

    def known(self, rel: str, st: os.stat_result) -> str | None:
        """The digest kept for the file, if its stat is the one it was hashed with."""
        known = self.old.get(rel)
        if isinstance(known, list) and len(known) == 6 and known[:5] == self._key(st):
            return str(known[5])
        return None

    def remember(self, rel: str, st: os.stat_result, digest: str) -> None:
        if self.started_ns - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_NS:
            self.new[rel] = [*self._key(st), digest]

    def save(self) -> None:
        if self.new == self.old:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            part = self.path.with_name(f"{self.path.name}.{os.getpid()}.part")
            part.write_text(json.dumps({"files": self.new}), encoding="utf-8")
            os.replace(part, self.path)
        except OSError:
            pass


def collect(root: Path, *, cache: bool = True) -> tuple[list[LocalFile], list[str]]:
    """The files to push and the paths left out (for the log). With `cache`, a file whose
    stat is what it was when last hashed keeps its digest (HashCache)."""
    patterns = list(DEFAULT_IGNORES)
    ignore_file = root / IGNORE_FILE
    if ignore_file.is_file():
        patterns += ignore_file.read_text(encoding="utf-8", errors="replace").splitlines()
    spec = pathspec.GitIgnoreSpec.from_lines(patterns)
    hashes = HashCache(root) if cache else None
    found: list[tuple[str, Path, os.stat_result]] = []
    left_out: list[str] = []
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) and not (stat.S_ISLNK(st.st_mode) and not path.is_dir()):
            continue  # a directory (or a link to one), a socket, a device…
        rel = path.relative_to(root).as_posix()
        if spec.match_file(rel):
            left_out.append(rel)
            continue
        if stat.S_ISLNK(st.st_mode):
            left_out.append(rel)  # a link is not content: its target may lie anywhere
            continue
        found.append((rel, path, st))
    digests = {rel: hashes.known(rel, st) for rel, _, st in found} if hashes else {}
    unknown = [(rel, path) for rel, path, _ in found if digests.get(rel) is None]
    if len(unknown) > 1:  # hashlib lets go of the GIL: one file per core at a time
        with ThreadPoolExecutor(max_workers=min(len(unknown), os.cpu_count() or 1)) as pool:
            hashed = list(pool.map(sha256_of, [path for _, path in unknown]))
    else:
        hashed = [sha256_of(path) for _, path in unknown]
    digests.update(zip([rel for rel, _ in unknown], hashed, strict=True))
    kept = []
    for rel, path, st in found:
        digest = str(digests[rel])
        if hashes:
            hashes.remember(rel, st, digest)
        kept.append(LocalFile(rel, path, st.st_size, digest))
    if hashes:
        hashes.save()
    return kept, left_out


def idempotency_key(files: list[LocalFile], message: str) -> str:
    """Derived from the content: a CI retry of the same push returns the same revision."""
    body = json.dumps(
        {"files": sorted((f.path, f.sha256) for f in files), "message": message},
        sort_keys=True,
    )
    return "push-" + hashlib.sha256(body.encode()).hexdigest()[:48]
