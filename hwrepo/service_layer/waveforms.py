"""The waveform viewer's server side: a check's waveform, read in a sandbox.

A waveform is an artifact the testbench wrote, so it is hostile input to its reader like any
revision content: it is parsed by `hwrepo.checks.simulation.waves` in a bubblewrap sandbox of
its own (no network, nothing of the machine but the installations, bounded CPU time, memory and
wall time), never in the API process. The file is fetched from the bucket once into the API's
cache (artifacts never change under their key) and mounted read-only into each sandbox; the
answers are kept in memory, so that the same question about the same waveform (its signals, a
window of changes) starts no second sandbox.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from hwrepo.checks.core.kind import Workspace
from hwrepo.checks.run.runner import CACHE_ROOT, Sandbox, SandboxUnavailable
from hwrepo.checks.run.sandbox import SandboxLimits
from hwrepo.domain.checks import Check
from hwrepo.domain.errors import Invalid, NotFound, ServiceUnavailable
from hwrepo.service_layer.backends import Backends
from hwrepo.service_layer.readcache import ReadCache

WAVE_SUFFIXES = (".fst", ".vcd", ".ghw")
TIMEOUT_S = 60.0
LIMITS = SandboxLimits(
    wall_s=TIMEOUT_S,
    cpu_s=int(TIMEOUT_S),
    memory_bytes=4 * 1024**3,
    job_memory_bytes=3 * 1024**3,
    file_size_bytes=64 * 1024**2,
    processes=16,
)
INSIDE = "hwrepo.checks.simulation.waves"
# Sandboxes reading waveforms at once in one API process (each may take a core and gigabytes):
# more wait, and a request that waits too long is told to come back.
AT_ONCE = threading.BoundedSemaphore(2)
WAIT_S = 30.0
# The API's copies of waveforms: the least recently used go beyond this size.
CACHE_BYTES = 4 * 1024**3
# Answers kept in memory (an artifact never changes under its key, so an answer never goes
# stale): the least recently used go beyond this many bytes of JSON.
ANSWER_BYTES = 64 * 1024**2
_answers = ReadCache(ANSWER_BYTES)
_ALWAYS = 0  # the answers' generation: they never change


def waveform_artifact(check: Check) -> dict[str, Any]:
    for item in check.artifacts:
        if str(item.get("name", "")).endswith(WAVE_SUFFIXES):
            return item
    raise NotFound(f"check {check.name!r} stored no waveform")


def _cache_root(backends: Backends) -> Path:
    return backends.settings.data_dir / "api" / "waveforms"


def _cached(backends: Backends, item: dict[str, Any]) -> Path:
    """A directory holding the artifact as `waves<suffix>`, readable by the sandbox's user
    (mounted read-only: the sandbox cannot change it)."""
    digest = hashlib.sha256(str(item["key"]).encode()).hexdigest()
    directory = _cache_root(backends) / digest
    suffix = Path(str(item["name"])).suffix
    target = directory / f"waves{suffix}"
    if target.is_file() and target.stat().st_size == int(item["size"]):
        return directory
    _cache_root(backends).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="fetch-", dir=_cache_root(backends)))
    try:
        with (staging / target.name).open("wb") as fh:
            for chunk in backends.store.stream(str(item["key"])):
                fh.write(chunk)
        os.chmod(staging / target.name, 0o444)
        os.chmod(staging, 0o755)
        try:
            staging.rename(directory)
        except OSError:  # another request put it there first
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _prune(_cache_root(backends), keep=directory)
    return directory


def _prune(root: Path, keep: Path) -> None:
    """Forget the least recently used copies while the cache holds more than CACHE_BYTES."""
    entries = []
    for entry in root.iterdir():
        if entry == keep or entry.name.startswith("fetch-") or not entry.is_dir():
            continue
        files = [f for f in entry.iterdir() if f.is_file()]
        entries.append((max((f.stat().st_atime for f in files), default=0), entry, files))
    total = sum(f.stat().st_size for _, _, files in entries for f in files)
    total += sum(f.stat().st_size for f in keep.iterdir() if f.is_file())
    for _, entry, files in sorted(entries, key=lambda e: e[0]):
        if total <= CACHE_BYTES:
            break
        total -= sum(f.stat().st_size for f in files)
        shutil.rmtree(entry, ignore_errors=True)


def _run(backends: Backends, check: Check, function: str, request: dict[str, Any]) -> dict:
    """The answer of `function` for this check's waveform: kept from an earlier request for
    the same artifact, else read in a sandbox (failures are not kept)."""
    item = waveform_artifact(check)
    key = json.dumps([item["key"], item["size"], function, request], sort_keys=True)
    kept = _answers.get(key, _ALWAYS)
    if kept is not None:
        return kept  # type: ignore[no-any-return]
    answer = _read(backends, item, function, request)
    size = len(json.dumps(answer))
    if size <= ANSWER_BYTES // 8:
        _answers.put(key, _ALWAYS, answer, size)
    return answer


def _read(
    backends: Backends, item: dict[str, Any], function: str, request: dict[str, Any]
) -> dict[str, Any]:
    directory = _cached(backends, item)
    scratch = backends.settings.data_dir / "api" / "sandboxes"
    scratch.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="waves-", dir=scratch))
    ws = Workspace(root=root, cache=directory)
    file = CACHE_ROOT / f"waves{Path(str(item['name'])).suffix}"
    if not AT_ONCE.acquire(timeout=WAIT_S):
        shutil.rmtree(root, ignore_errors=True)
        raise ServiceUnavailable(
            "the waveform reader", "it reads other waveforms; retry in a moment", state="is busy"
        )
    try:
        run = Sandbox(ws, LIMITS).python(
            f"{INSIDE}:{function}", {**request, "file": str(file)}, timeout_s=TIMEOUT_S
        )
    except SandboxUnavailable as exc:
        raise ServiceUnavailable("the waveform sandbox", str(exc), state="cannot start") from exc
    finally:
        AT_ONCE.release()
        shutil.rmtree(root, ignore_errors=True)
    if run.response is None:
        raise Invalid(f"the waveform {item['name']!r} could not be read: {run.error}")
    return run.response


def signals(backends: Backends, check: Check) -> dict[str, Any]:
    """The waveform's signals (full names, widths) and its timescale and end time."""
    return _run(backends, check, "signals", {})


def changes(
    backends: Backends, check: Check, names: list[str], start: int, end: int, pixels: int
) -> dict[str, Any]:
    """Value changes of the named signals between `start` and `end` (in the waveform's time
    units), at most one per pixel of `pixels`."""
    if not names:
        raise Invalid("name at least one signal (signal=...)")
    if end <= start:
        raise Invalid("the window's end must lie after its start")
    return _run(
        backends,
        check,
        "changes",
        {"signals": names, "start": start, "end": end, "pixels": pixels},
    )
