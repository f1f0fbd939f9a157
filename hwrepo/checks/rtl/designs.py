"""Finding the RTL designs of a revision (the planner's part: pure, no tool).

Every `.v`/`.sv` file of the revision belongs to exactly one design, named by its *design root*:

* files under a test-bench directory (a path segment named `tb`, `test`, `tests`, `testbench`,
  `sim`, `bench`, `verif`, ... see `TESTBENCH_DIRS`) or under a hidden directory are not design
  sources and are skipped;
* otherwise the design root is the parent of the nearest enclosing source directory, i.e. the
  closest path segment named `rtl`, `hdl`, `src`, `verilog`, `sv`, ... (`SOURCE_DIRS`):
  `designs/rtl-counter/rtl/counter.v` and `designs/rtl-counter/rtl/sub/x.v` both belong to
  `designs/rtl-counter`; `rtl/top.v` belongs to the revision root (`.`);
* a file with no such segment belongs to its own directory: `cores/uart/uart.v` → `cores/uart`.

A design's sources are its `.v`/`.sv` files in path order, minus the files another source pulls in
with `` `include `` (those are headers). Its include directories are the directories of all its
HDL files (sources and `.vh`/`.svh` headers), the directories of headers that belong to no design
(a shared `include/` directory: its "design" has no source), and the configured ones.

The `[rtl]` table of `hwrepo.toml` (`core/manifest.py`) may list the sources instead (one
design rooted at "."), add include directories and defines, name the top and the severities
that fail the lint. Patterns in `sources` are revision paths where `*` and `?` stay within one
path segment and `**` matches any number of segments.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from hwrepo.checks.core.kind import PlannedJob, RevisionFiles
from hwrepo.checks.core.manifest import MANIFEST, Manifest, ManifestError, RtlTable
from hwrepo.checks.core.paths import glob_regex
from hwrepo.checks.rtl.job import DesignParams
from hwrepo.checks.rtl.verilog import SV_SUFFIXES

SOURCE_SUFFIXES = (".v", ".sv")
HEADER_SUFFIXES = (".vh", ".svh")

SOURCE_DIRS = frozenset(
    {"rtl", "hdl", "src", "source", "sources", "verilog", "systemverilog", "sv", "vsrc"}
)
TESTBENCH_DIRS = frozenset(
    {
        "tb",
        "tbs",
        "test",
        "tests",
        "testbench",
        "testbenches",
        "sim",
        "simulation",
        "bench",
        "verif",
        "verification",
        "cocotb",
    }
)
JOB_TIMEOUT_S = 300.0
MAX_SCAN_BYTES = 2 * 1024 * 1024

_INCLUDE = re.compile(r'^\s*`include\s+"([^"\n]+)"', re.MULTILINE)
# --------------------------------------------------------------------------------------------
# Designs


def _is_source(path: str) -> bool:
    return path.lower().endswith(SOURCE_SUFFIXES)


def _is_header(path: str) -> bool:
    return path.lower().endswith(HEADER_SUFFIXES)


def design_root(path: str) -> str | None:
    """The design root of an HDL file (see the module's docstring); None: not a design file."""
    parts = PurePosixPath(path).parts[:-1]
    if any(p.startswith(".") or p.lower() in TESTBENCH_DIRS for p in parts):
        return None
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].lower() in SOURCE_DIRS:
            return "/".join(parts[:i])
    return "/".join(parts)


@dataclass
class RtlDesign:
    """One design found in a revision."""

    root: str  # "" for the revision root
    sources: list[str]
    headers: list[str]
    include_dirs: list[str]
    inputs: list[str]
    rule: str  # how the files were chosen

    @property
    def name(self) -> str:
        return self.root or "(revision root)"

    @property
    def language(self) -> str:
        sv = [s for s in self.sources if s.lower().endswith(SV_SUFFIXES)]
        if not sv:
            return "verilog"
        return "systemverilog" if len(sv) == len(self.sources) else "mixed"


def _included_names(revision: RevisionFiles, sources: list[str]) -> set[str]:
    """The names the sources `include (files over MAX_SCAN_BYTES are not read at plan time)."""
    sizes = {f.path: f.size for f in revision.files}
    names: set[str] = set()
    for path in sources:
        if sizes.get(path, 0) > MAX_SCAN_BYTES:
            continue
        try:
            text = revision.read(path).decode("utf-8", errors="replace")
        except OSError:
            continue
        names.update(_INCLUDE.findall(text))
    return names


def _finish_design(
    revision: RevisionFiles,
    root: str,
    files: list[str],
    headers: list[str],
    config: RtlTable,
    rule: str,
    all_paths: list[str],
) -> RtlDesign:
    included = _included_names(revision, files)
    sources = [
        f
        for f in files
        if not any(f == name or f.endswith("/" + name.lstrip("./")) for name in included)
    ]
    pulled_in = [f for f in files if f not in sources]
    dirs = {posixpath.dirname(p) for p in files + headers}
    include_dirs = sorted(dirs) + [d for d in config.include_dirs if d not in dirs]
    wanted_dirs = set(config.include_dirs)
    inputs = set(files + headers)
    inputs.update(p for p in all_paths if posixpath.dirname(p) in wanted_dirs)
    return RtlDesign(
        root=root,
        sources=sources,
        headers=sorted(headers + pulled_in),
        include_dirs=include_dirs,
        inputs=sorted(inputs),
        rule=rule,
    )


def find_designs(revision: RevisionFiles, config: RtlTable) -> list[RtlDesign]:
    """The RTL designs of a revision (see the module's docstring for the rule)."""
    paths = sorted(f.path for f in revision.files)
    known = set(paths)
    for d in config.include_dirs:
        if d and not any(p.startswith(d + "/") for p in paths):
            raise DesignError(
                f"{MANIFEST}: [rtl] include_dirs: {d!r} is not a directory of the revision"
            )
    if config.sources is not None:
        chosen: list[str] = []
        for pattern in config.sources:
            if pattern in known:
                matched = [pattern]
            else:
                rx = glob_regex(pattern)
                matched = [p for p in paths if rx.fullmatch(p) and _is_source(p)]
            if not matched:
                raise DesignError(f"{MANIFEST}: [rtl] sources: {pattern!r} matches no file")
            chosen.extend(m for m in matched if m not in chosen)
        dirs = {posixpath.dirname(p) for p in chosen}
        headers = [p for p in paths if _is_header(p) and posixpath.dirname(p) in dirs]
        rule = f"the files listed by `sources` in the [rtl] table of {MANIFEST}"
        return [_finish_design(revision, "", chosen, headers, config, rule, paths)]
    groups: dict[str, tuple[list[str], list[str]]] = {}
    for path in paths:
        if not (_is_source(path) or _is_header(path)):
            continue
        root = design_root(path)
        if root is None:
            continue
        sources, headers = groups.setdefault(root, ([], []))
        (sources if _is_source(path) else headers).append(path)
    # Headers of no design (e.g. a shared include/ directory) are on every design's path.
    shared = sorted(h for srcs, hdrs in groups.values() if not srcs for h in hdrs)
    designs = []
    for root, (sources, headers) in sorted(groups.items()):
        if not sources:
            continue
        rule = (
            "the .v/.sv files whose nearest source directory "
            f"({'/'.join(sorted(SOURCE_DIRS))}) lies in {root or 'the revision root'}, "
            "or that lie in it directly; test-bench directories skipped"
        )
        designs.append(
            _finish_design(revision, root, sources, headers + shared, config, rule, paths)
        )
    return designs


def plan_rtl_jobs(revision: RevisionFiles, kind: str) -> list[PlannedJob]:
    """One job per RTL design of the revision (both RTL kinds plan the same way)."""
    try:
        config = load_config(revision)
        designs = find_designs(revision, config or RtlTable())
    except (ManifestError, DesignError) as exc:
        has_hdl = any(_is_source(f.path) for f in revision.files)
        if not has_hdl and not _mentions_rtl(revision):
            return []
        return [PlannedJob(name=f"{MANIFEST} [rtl]", error=str(exc), inputs=[])]
    table = config or RtlTable()
    jobs = []
    for design in designs:
        params = DesignParams(
            root=design.root,
            sources=design.sources,
            include_dirs=design.include_dirs,
            defines=table.defines,
            top=table.top,
            fail_on=table.fail_on,
        )
        jobs.append(
            PlannedJob(
                name=design.name,
                params=params.to_params(),
                inputs=design.inputs,
                timeout_s=JOB_TIMEOUT_S,
                detected={
                    "kind": kind,
                    "design_root": design.name,
                    "rule": design.rule,
                    "sources": design.sources,
                    "headers": design.headers,
                    "language": design.language,
                    "config": MANIFEST if config is not None else None,
                },
            )
        )
    return jobs


def _mentions_rtl(revision: RevisionFiles) -> bool:
    if not any(f.path == MANIFEST for f in revision.files):
        return False
    return b"[rtl" in revision.read(MANIFEST)


class DesignError(ValueError):
    """The [rtl] table names files or directories the revision does not have."""


def load_config(revision: RevisionFiles) -> RtlTable | None:
    """The `[rtl]` table of the revision's hwrepo.toml (None: there is none); raises
    ManifestError when it is invalid."""
    present = any(f.path == MANIFEST for f in revision.files)
    manifest = Manifest.parse(MANIFEST, revision.read(MANIFEST) if present else None)
    return manifest.table("rtl")
