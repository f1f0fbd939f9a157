"""The client's file list: digests kept between pushes by each file's stat, and never trusted
once anything a write changes has changed."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from hwrepo.client import files
from hwrepo.client.files import HashCache, collect


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _aged(path: Path, data: bytes) -> None:
    """Write `data` with an mtime long ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    old = time.time_ns() - 60 * 10**9
    os.utime(path, ns=(old, old))


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


@pytest.fixture
def no_racy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files written by the test are kept at once (their ctime is always now: no call sets it
    back), instead of a second after they were written."""
    monkeypatch.setattr(files, "RACY_NS", 0)


def _digests(root: Path) -> dict[str, str]:
    files, _ = collect(root)
    return {f.path: f.sha256 for f in files}


@pytest.mark.usefixtures("no_racy_window")
def test_a_kept_digest_is_used_while_the_stat_is_the_same(tmp_path: Path) -> None:
    root = tmp_path / "design"
    _aged(root / "rtl/top.v", b"module top; endmodule\n")
    _aged(root / "doc.md", b"# doc\n")
    assert _digests(root) == {
        "doc.md": _sha(b"# doc\n"),
        "rtl/top.v": _sha(b"module top; endmodule\n"),
    }
    cache = HashCache(root)
    assert set(cache.old) == {"doc.md", "rtl/top.v"}

    # The kept digest is what the next push uses (it reads no byte of the file): a digest
    # planted for the same stat comes back.
    planted = dict(cache.old)
    planted["doc.md"] = [*planted["doc.md"][:5], "0" * 64]
    cache.path.write_text(json.dumps({"files": planted}), encoding="utf-8")
    assert _digests(root)["doc.md"] == "0" * 64
    assert collect(root, cache=False)[0][0].sha256 == _sha(b"# doc\n")


@pytest.mark.usefixtures("no_racy_window")
def test_a_rewritten_file_is_hashed_again_even_with_its_size_and_mtime_put_back(
    tmp_path: Path,
) -> None:
    root = tmp_path / "design"
    path = root / "rtl/top.v"
    _aged(path, b"module top; endmodule\n")
    assert _digests(root)["rtl/top.v"] == _sha(b"module top; endmodule\n")
    before = path.stat()
    time.sleep(0.05)  # past a tick of the file system's clock (the window RACY_NS guards)
    path.write_bytes(b"module pot; endmodule\n")  # the same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the same mtime
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    # the ctime moved (no call sets it back), so the kept digest is not used
    assert after.st_ctime_ns != before.st_ctime_ns
    assert _digests(root)["rtl/top.v"] == _sha(b"module pot; endmodule\n")


def test_a_file_written_just_now_is_not_kept(tmp_path: Path) -> None:
    root = tmp_path / "design"
    _aged(root / "rtl/top.v", b"module top; endmodule\n")
    assert _digests(root)["rtl/top.v"] == _sha(b"module top; endmodule\n")
    # changed within the last second (its ctime): a change made in the same tick of the
    # file system's clock would not show in its stat, so its digest is not kept
    assert HashCache(root).old == {}


@pytest.mark.usefixtures("no_racy_window")
def test_an_unreadable_cache_is_no_cache(tmp_path: Path) -> None:
    root = tmp_path / "design"
    _aged(root / "doc.md", b"# doc\n")
    path = HashCache(root).path
    path.parent.mkdir(parents=True)
    path.write_text("{not json", encoding="utf-8")
    assert _digests(root) == {"doc.md": _sha(b"# doc\n")}
    assert set(HashCache(root).old) == {"doc.md"}  # and it is written anew
