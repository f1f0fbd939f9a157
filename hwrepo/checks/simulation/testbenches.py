"""What the `simulation` kind runs: the `hwrepo.toml` schema, its validation, and the detection
of cocotb testbenches in revisions without one.

The manifest: `hwrepo.toml`
===========================

Optional. At the revision root, or in any sub-directory (one per design). A manifest describes
the design in its own directory; every path and glob in it is relative to that directory. A
testbench file belongs to the deepest manifest above it; testbenches under no manifest are
detected (below). Other top-level tables (`[rtl]`, `[kicad]`, ...) belong to other kinds.

    [simulation]                      # the design; every key optional: the rest is detected
    sources = ["rtl/**/*.v"]          # globs of Verilog/SystemVerilog sources, compile order kept
    includes = ["rtl/include"]        # include directories
    defines = { USE_FAST_PATH = 1 }   # `define NAME VALUE (a string, an integer or a boolean)
    toplevel = "counter"              # the HDL toplevel module
    parameters = { WIDTH = 8 }        # toplevel parameters (build-time)
    timescale = "1ns/1ps"             # default `timescale for modules without one
    build_args = { verilator = ["-Wno-WIDTHEXPAND"], icarus = [] }  # extra compiler flags

    [[testbench]]                     # one or more (then no other testbench of this directory
                                      # is detected); none: testbenches are detected
    name = "counter"                  # shown in the job name (default: the first module's path)
    modules = ["tests/test_counter.py"]   # cocotb test modules (required); the first one's
                                      # directory is the simulator's working directory
    toplevel = "counter"              # default: simulation.toplevel, else detected
    simulators = ["icarus", "verilator"]  # default ["icarus"]
    parameters = { WIDTH = 4 }        # merged over simulation.parameters
    defines = {}                      # merged over simulation.defines
    env = { MY_KNOB = "1" }           # extra environment of the simulation
    timeout = 600                     # seconds for build + test (default 900, at most 14400)
    requirements = ["cocotbext-axi==0.1.28"]  # pip requirements (no URLs, no options)
    requirements_file = "tests/requirements.txt"  # same, from a file (default: a
                                      # requirements.txt beside the first module, if any)
    cocotb = "2.1"                    # release: 2.1 (the default, i.e. 2.1.0), 2.0, 1.9, or x.y.z
    seed = 1234                       # COCOTB_RANDOM_SEED (default: cocotb picks one, recorded)
    tests = ["test_wrap_pulse"]       # run only these tests (default: all)
    waves = true                      # record a waveform (FST; VCD for Verilator without lz4)
    python_path = ["common"]          # extra directories on the testbench's sys.path
    files = ["tests/vectors/*.hex"]   # extra files the job needs (globs)

Detection (no manifest, or a manifest without `[[testbench]]`)
===============================================================

* Testbenches: Python files containing `@cocotb.test`; each file is one testbench.
* Design directory: the nearest directory, from the testbench's own upwards, whose subtree
  holds Verilog/SystemVerilog sources (`.v`, `.sv`); a manifest's directory bounds the search.
* Sources: every `.v`/`.sv` file in that subtree, except files another source `include`s.
  Include directories: every directory of the subtree that holds HDL files (`.vh`/`.svh` too).
* Toplevel, first that applies: a name given in the testbench or a Makefile beside it
  (`TOPLEVEL = x`, `hdl_toplevel="x"`); the test module's name `test_<module>.py`; the only
  module no other module instantiates (hierarchy from pyverilog, or a plain scan of the text
  when pyverilog cannot parse the sources, e.g. SystemVerilog).
* Requirements: a `requirements.txt` beside the testbench, else in the design directory; a
  `cocotb` line in it chooses the cocotb release. Requirements are installed from wheels only.
* Defaults: Icarus only; cocotb 2.1.0; timescale 1ns/1ps unless every source declares one.

Everything found, and why, goes into `PlannedJob.detected`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version
from pydantic import BaseModel, ConfigDict, Field

from hwrepo.checks.core.manifest import (
    _TIMESCALE_VALUE_RE,
    COCOTB_RELEASES,
    DEFAULT_COCOTB,
    DEFAULT_TIMEOUT_S,
    MANIFEST,
    SIMULATORS,
    DesignConfig,
    Manifest,
    ManifestError,
    Simulator,
    TestbenchConfig,
    _hdl_value,
    parse_requirement,
    resolve_cocotb_release,
)
from hwrepo.checks.core.paths import glob_regex
from hwrepo.checks.rtl.verilog import (
    defined_modules,
    instantiates,
    roots,
    scan_hierarchy,
    strip_comments,
)

DEFAULT_TIMESCALE = ("1ns", "1ps")
SOURCE_SUFFIXES = (".v", ".sv")
HEADER_SUFFIXES = (".vh", ".svh")
HDL_SUFFIXES = SOURCE_SUFFIXES + HEADER_SUFFIXES
# Non-HDL files beside the sources that simulations read at run time ($readmemh and friends).
DATA_SUFFIXES = (".hex", ".mem", ".bin", ".dat", ".mif", ".coe", ".txt")
MAX_SCAN_BYTES = 1024 * 1024
IGNORED_PARTS = {"__pycache__", ".git", ".venv", "venv", "site-packages", "node_modules"}

# How tests are made: the decorator (with or without arguments, as `cocotb.test` or imported
# as `test`), `cocotb.parametrize`, `TestFactory(...).generate_tests()`.
_TEST_RE = re.compile(
    r"^\s*@(?:cocotb\.)?(?:test|parametrize)\b|\bTestFactory\s*\(|\.generate_tests\s*\(",
    re.MULTILINE,
)
_IMPORTS_COCOTB = re.compile(r"^\s*(?:import\s+cocotb\b|from\s+cocotb(?:\.\w+)*\s+import\b)", re.M)
MAKEFILES = ("Makefile", "makefile", "GNUmakefile")
_COCOTB_MAKEFILE = re.compile(r"^\s*-?include\s+.*Makefile\.sim\b", re.MULTILINE)
_MAKE_VAR = r"^\s*(?:export\s+|override\s+)?{name}\s*(?:\?|:|::|\+)?=\s*(.*?)\s*$"
# What a Makefile's variables decide, shown in `detected` as make evaluated them.
MAKE_VARIABLES = (
    "SIM",
    "TOPLEVEL_LANG",
    "VERILOG_SOURCES",
    "VHDL_SOURCES",
    "TOPLEVEL",
    "COCOTB_TOPLEVEL",
    "MODULE",
    "COCOTB_TEST_MODULES",
    "COMPILE_ARGS",
    "EXTRA_ARGS",
    "SIM_ARGS",
    "PLUSARGS",
    "COCOTB_PLUSARGS",
    "COCOTB_HDL_TIMEUNIT",
    "COCOTB_HDL_TIMEPRECISION",
    "WAVES",
    "FST",
    "TESTCASE",
    "COCOTB_TEST_FILTER",
    "SIM_BUILD",
)
_TIMESCALE_RE = re.compile(r"^\s*`timescale\b", re.MULTILINE)
_INCLUDE_RE = re.compile(r'`include\s+"([^"]+)"')
_MAKEFILE_TOP_RE = re.compile(r"^\s*(?:COCOTB_)?TOPLEVEL\s*[:?+]?=\s*(\w+)", re.MULTILINE)
_PY_TOP_RES = (
    ("hdl_toplevel", re.compile(r"\bhdl_toplevel\s*=\s*[\"'](\w+)[\"']")),
    ("TOPLEVEL", re.compile(r"\b(?:COCOTB_)?TOPLEVEL\b[\"']?\s*[\]:=,]\s*[\"'](\w+)[\"']")),
)


# ----------------------------------------------------------------------------- the job's params


class JobParams(BaseModel):
    """What `run()` needs, as planned (`PlannedJob.params`). Paths are revision paths."""

    model_config = ConfigDict(extra="forbid")

    simulator: Simulator
    toplevel: str
    sources: list[str]
    includes: list[str] = Field(default_factory=list)
    defines: dict[str, str] = Field(default_factory=dict)
    parameters: dict[str, str] = Field(default_factory=dict)
    timescale: tuple[str, str] | None = None
    build_args: list[str] = Field(default_factory=list)
    test_modules: list[str]
    test_dir: str
    python_path: list[str] = Field(default_factory=list)
    requirements: list[str] = Field(default_factory=list)
    cocotb: str = DEFAULT_COCOTB
    env: dict[str, str] = Field(default_factory=dict)
    seed: int | None = None
    tests: list[str] = Field(default_factory=list)
    waves: bool = True
    detected: dict[str, Any] = Field(default_factory=dict)  # what the planner found, and why


# ----------------------------------------------------------------------------- the manifest


class ConfigError(Exception):
    """A problem with a manifest or a detected testbench, worded for the project's people."""


@dataclass
class SimulationTables:
    """What a manifest says about simulations: its `[simulation]` and `[[testbench]]`es."""

    simulation: DesignConfig
    testbench: list[TestbenchConfig]


def load_manifest(path: str, data: bytes) -> SimulationTables:
    manifest = Manifest.parse(path, data)
    try:
        return SimulationTables(manifest.table("simulation"), manifest.table("testbench"))
    except ManifestError as exc:
        raise ConfigError(str(exc)) from None


# ----------------------------------------------------------------------------- the revision


class FileSource:
    """The revision as the planner sees it: paths and a way to read small files."""

    def __init__(self, paths: list[str], read: Any, sizes: dict[str, int] | None = None) -> None:
        self.paths = sorted(paths)
        self._read = read
        self._sizes = sizes or {}
        self._cache: dict[str, str | None] = {}

    def text(self, path: str) -> str | None:
        """The file as text, or None when too big or unreadable."""
        if path not in self._cache:
            if self._sizes.get(path, 0) > MAX_SCAN_BYTES:
                self._cache[path] = None
            else:
                try:
                    self._cache[path] = self._read(path).decode("utf-8", errors="replace")
                except (OSError, KeyError):
                    self._cache[path] = None
        return self._cache[path]

    def under(self, directory: str) -> list[str]:
        if not directory:
            return list(self.paths)
        prefix = directory.rstrip("/") + "/"
        return [p for p in self.paths if p.startswith(prefix)]

    def glob(self, directory: str, pattern: str) -> list[str]:
        """Revision paths under `directory` matching `pattern` (`**` spans directories)."""
        base = directory.rstrip("/") + "/" if directory else ""
        regex = glob_regex(pattern)
        return [p for p in self.under(directory) if regex.fullmatch(p[len(base) :])]


def _parent(path: str) -> str:
    parent = str(PurePosixPath(path).parent)
    return "" if parent == "." else parent


def _join(directory: str, rel: str) -> str:
    joined = PurePosixPath(directory) / rel if directory else PurePosixPath(rel)
    parts: list[str] = []
    for part in joined.parts:
        if part == "..":
            if not parts:
                raise ConfigError(f"{rel!r} points outside the revision")
            parts.pop()
        elif part not in {".", ""}:
            parts.append(part)
    return "/".join(parts)


def _ignored(path: str) -> bool:
    return any(part in IGNORED_PARTS for part in PurePosixPath(path).parts)


# ----------------------------------------------------------------------------- the hierarchy


def hierarchy(files: dict[str, str]) -> tuple[dict[str, list[str]], str]:
    """The hierarchy of the sources and how it was found: a scan of their text (planning runs
    no tool; the build in the sandbox is where a real parser reads them)."""
    return scan_hierarchy(files), "text scan"


# ----------------------------------------------------------------------------- testbenches


@dataclass
class Testbench:
    """One resolved testbench of one design: everything a job needs, and why."""

    name: str
    design_dir: str
    simulators: list[str]
    params: dict[str, Any]  # JobParams fields except `simulator`
    inputs: list[str]
    timeout_s: float
    detected: dict[str, Any] = field(default_factory=dict)


def find_manifests(revision: FileSource) -> list[str]:
    return [p for p in revision.paths if PurePosixPath(p).name == MANIFEST and not _ignored(p)]


def find_test_files(revision: FileSource, directory: str = "") -> list[str]:
    found = []
    for path in revision.under(directory):
        if not path.endswith(".py") or _ignored(path):
            continue
        text = revision.text(path)
        if text is not None and _TEST_RE.search(text):
            found.append(path)
    return found


def find_cocotb_makefiles(revision: FileSource) -> list[str]:
    """Makefiles that include cocotb's Makefile.sim (directly or through cocotb-config)."""
    found = []
    for path in revision.paths:
        if PurePosixPath(path).name in MAKEFILES and not _ignored(path):
            text = revision.text(path)
            if text is not None and _COCOTB_MAKEFILE.search(text):
                found.append(path)
    return found


def make_variable(text: str, name: str) -> str | None:
    """A variable's value as last written in a Makefile's own text (not evaluated: planning
    runs no make), e.g. `SIM ?= verilator`."""
    values = re.findall(_MAKE_VAR.format(name=re.escape(name)), text, re.MULTILINE)
    return values[-1].split("#", 1)[0].strip() if values else None


def resolve_makefile(
    revision: FileSource, makefile: str, bench: TestbenchConfig | None, manifest: str | None
) -> Testbench:
    """A testbench driven by a project's own cocotb Makefile: make decides the sources, the
    toplevel, the modules and the arguments, in the sandbox; only the simulator, the Python
    environment and the time limit are planned here."""
    directory = _parent(makefile)
    text = revision.text(makefile) or ""
    detected: dict[str, Any] = {
        "manifest": manifest is not None,
        "flow": "make",
        "makefile": makefile,
        "design_dir": directory or ".",
        "makefile_as_written": {
            k: v
            for k in ("SIM", "TOPLEVEL", "COCOTB_TOPLEVEL", "MODULE", "COCOTB_TEST_MODULES")
            if (v := make_variable(text, k)) is not None
        },
    }
    written_sim = make_variable(text, "SIM")
    if bench is not None and "simulators" in bench.model_fields_set:
        simulators = list(bench.simulators)
        detected["simulators_reason"] = "listed in hwrepo.toml"
    elif written_sim in SIMULATORS:
        simulators = [written_sim]
        detected["simulators_reason"] = f"{makefile} sets SIM {written_sim!r}"
    else:
        simulators = ["icarus"]
        reason = "default (Icarus)"
        if written_sim:
            reason += f"; {makefile} names SIM {written_sim!r}, which hwrepo does not run"
        detected["simulators_reason"] = reason
    detected["simulators"] = simulators
    req_file = None
    for candidate in (
        _join(directory, "requirements.txt"),
        _join(_parent(directory), "requirements.txt"),
    ):
        if candidate in revision.paths:
            req_file = candidate
            break
    reqs: list[str] = []
    release, release_why = None, None
    if req_file is not None:
        reqs, release, release_why = _requirements_from_file(revision, req_file)
        detected["requirements_file"] = req_file
    if bench is not None:
        reqs += bench.requirements
        if bench.cocotb is not None:
            release, release_why = resolve_cocotb_release(bench.cocotb), "asked in hwrepo.toml"
    if release is None:
        release, release_why = DEFAULT_COCOTB, f"default (cocotb {DEFAULT_COCOTB})"
    reqs = normalise_requirements(reqs)
    detected.update(requirements=reqs, cocotb=release, cocotb_reason=release_why)
    params: dict[str, Any] = {
        "flow": "make",
        "makefile_dir": directory,
        "makefile": PurePosixPath(makefile).name,
        "requirements": reqs,
        "cocotb": release,
        "env": dict(bench.env) if bench else {},
        "seed": bench.seed if bench else None,
        "tests": list(bench.tests) if bench else [],
    }
    return Testbench(
        name=bench.name if bench is not None and bench.name else makefile,
        design_dir=directory,
        simulators=simulators,
        params=params,
        inputs=list(revision.paths),  # a Makefile may reach any file of the revision
        timeout_s=bench.timeout if bench else DEFAULT_TIMEOUT_S,
        detected=detected,
    )


def design_dir_for(revision: FileSource, test_file: str, bound: str | None) -> str | None:
    """The nearest directory from the testbench's own upwards holding HDL sources below it,
    not above `bound` (a manifest's directory)."""
    directory = _parent(test_file)
    while True:
        if any(p.endswith(SOURCE_SUFFIXES) and not _ignored(p) for p in revision.under(directory)):
            return directory
        if directory == "" or directory == bound:
            return None
        directory = _parent(directory)


def _included_names(revision: FileSource, paths: list[str]) -> set[str]:
    names: set[str] = set()
    for path in paths:
        text = revision.text(path) or ""
        for inc in _INCLUDE_RE.findall(strip_comments(text)):
            names.add(PurePosixPath(inc).name)
    return names


def _requirements_from_file(
    revision: FileSource, path: str
) -> tuple[list[str], str | None, str | None]:
    """(requirements, cocotb release or None, why the release)."""
    text = revision.text(path)
    if text is None:
        raise ConfigError(f"{path}: cannot read the requirements file")
    reqs: list[str] = []
    release = None
    why = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            req = parse_requirement(line)
        except ValueError as exc:
            raise ConfigError(f"{path}:{number}: {exc}") from None
        if canonicalize_name(req.name) == "cocotb":
            spec = SpecifierSet(str(req.specifier))
            matching = [r for r in COCOTB_RELEASES if spec.contains(r)]
            if not matching:
                raise ConfigError(
                    f"{path}:{number}: {line!r} matches no supported cocotb release "
                    f"({', '.join(COCOTB_RELEASES)})"
                )
            release = max(matching, key=Version)
            why = f"{path}:{number} asks for {line}"
            continue
        reqs.append(str(req))
    return reqs, release, why


def normalise_requirements(reqs: list[str]) -> list[str]:
    return sorted({str(Requirement(r)) for r in reqs}, key=str.lower)


def _timescale_rule(
    revision: FileSource, sources: list[str], configured: str | None
) -> tuple[tuple[str, str] | None, str]:
    if configured is not None:
        m = _TIMESCALE_VALUE_RE.match(configured)
        assert m is not None
        return (f"{m.group(1)}{m.group(2)}", f"{m.group(3)}{m.group(4)}"), "set in hwrepo.toml"
    without = [
        s for s in sources if not _TIMESCALE_RE.search(strip_comments(revision.text(s) or ""))
    ]
    if not without:
        return None, "every source declares its own `timescale"
    if len(without) == len(sources):
        return DEFAULT_TIMESCALE, "no source declares a `timescale: default 1ns/1ps"
    return DEFAULT_TIMESCALE, (
        f"{', '.join(without)} declare no `timescale: default 1ns/1ps for modules without one"
    )


def _toplevel_hint(
    revision: FileSource, test_file: str, modules: set[str]
) -> tuple[str, str] | None:
    text = revision.text(test_file) or ""
    for label, regex in _PY_TOP_RES:
        for name in regex.findall(text):
            if name in modules:
                return name, f"named in {test_file} ({label} = {name!r})"
    directory = _parent(test_file)
    for makefile in ("Makefile", "makefile", "GNUmakefile"):
        path = _join(directory, makefile)
        if path in revision.paths:
            for name in _MAKEFILE_TOP_RE.findall(revision.text(path) or ""):
                if name in modules:
                    return name, f"named in {path} (TOPLEVEL = {name})"
    return None


def choose_toplevel(
    revision: FileSource,
    test_file: str,
    modules: dict[str, list[str]],
    how: str,
) -> tuple[str, str]:
    """(toplevel, why) — or ConfigError when it cannot be told."""
    names = set(modules)
    hint = _toplevel_hint(revision, test_file, names)
    if hint is not None:
        return hint
    top = roots(modules)
    stem = PurePosixPath(test_file).stem
    by_name = stem[len("test_") :] if stem.startswith("test_") else None
    if by_name in names:
        assert by_name is not None
        if top == [by_name]:
            return by_name, (
                f"the only module no other module instantiates ({how}), and the test "
                f"module is named after it"
            )
        return by_name, f"the test module {PurePosixPath(test_file).name} is named after it"
    if len(top) == 1:
        return top[0], f"the only module no other module instantiates ({how})"
    if not top:
        raise ConfigError(f"{test_file}: no Verilog module found in the sources")
    raise ConfigError(
        f"{test_file}: cannot tell the toplevel: modules {', '.join(top)} are instantiated by "
        f"no other module; name it with `toplevel` in hwrepo.toml ([simulation] or [[testbench]])"
    )


def _inputs_for(
    revision: FileSource,
    design_dir: str,
    sources: list[str],
    includes: list[str],
    dirs: list[str],
    extra: list[str],
) -> list[str]:
    wanted = set(sources) | set(extra)
    for inc in includes:
        wanted.update(
            p for p in revision.under(inc) if p.endswith(HDL_SUFFIXES) and _parent(p) == inc
        )
    for src_dir in {_parent(s) for s in sources}:
        wanted.update(
            p
            for p in revision.under(src_dir)
            if _parent(p) == src_dir and p.endswith(DATA_SUFFIXES)
        )
    for directory in dirs:
        wanted.update(p for p in revision.under(directory) if not _ignored(p))
    return sorted(wanted)


def resolve_testbench(
    revision: FileSource,
    design_dir: str,
    design: DesignConfig,
    bench: TestbenchConfig | None,
    test_file: str | None,
    manifest: str | None,
) -> Testbench:
    """Everything about one testbench, from the manifest where given, else detected."""
    detected: dict[str, Any] = {"manifest": manifest is not None}
    if manifest is not None:
        detected["manifest_path"] = manifest
    detected["design_dir"] = design_dir or "."

    if bench is not None:
        modules = [_join(design_dir, m) for m in bench.modules]
        for m in modules:
            if m not in revision.paths:
                raise ConfigError(f"{manifest}: testbench module {m} is not in the revision")
    else:
        assert test_file is not None
        modules = [test_file]
    first = modules[0]
    test_dir = _parent(first)
    detected["test_modules"] = modules

    # Sources
    if design.sources is not None:
        sources: list[str] = []
        for pattern in design.sources:
            matched = [p for p in revision.glob(design_dir, pattern) if p.endswith(HDL_SUFFIXES)]
            if not matched:
                raise ConfigError(f"{manifest}: [simulation] sources: {pattern!r} matches no file")
            sources.extend(p for p in matched if p not in sources)
        detected["sources_reason"] = "listed in hwrepo.toml"
    else:
        hdl = [
            p for p in revision.under(design_dir) if p.endswith(HDL_SUFFIXES) and not _ignored(p)
        ]
        included = _included_names(revision, hdl)
        sources = [
            p for p in hdl if p.endswith(SOURCE_SUFFIXES) and PurePosixPath(p).name not in included
        ]
        skipped = [p for p in hdl if p.endswith(SOURCE_SUFFIXES) and p not in sources]
        reason = f"every .v/.sv file under {design_dir or 'the revision root'}"
        if skipped:
            reason += f", except those `included by others ({', '.join(skipped)})"
        detected["sources_reason"] = reason
    if not sources:
        raise ConfigError(f"{first}: no Verilog sources found for this testbench")
    if design.sources is None:
        detected["searched"] = [
            f for f in revision.paths if f.endswith(SOURCE_SUFFIXES) and not _ignored(f)
        ][:200]
        found_elsewhere = modules_elsewhere(revision, sources)
        if found_elsewhere:
            sources += [f for _, f in found_elsewhere]
            detected["found_elsewhere"] = [
                {"module": m, "file": f, "why": "instantiated by the sources, defined here"}
                for m, f in found_elsewhere
            ]
    detected["sources"] = sources

    # Include directories
    if design.includes is not None:
        includes = [_join(design_dir, inc) for inc in design.includes]
        detected["includes_reason"] = "listed in hwrepo.toml"
    else:
        includes = sorted(
            {
                _parent(p)
                for p in revision.under(design_dir)
                if p.endswith(HDL_SUFFIXES) and not _ignored(p)
            }
        )
        detected["includes_reason"] = "every directory holding HDL files"
    for found in detected.get("found_elsewhere", []):
        if _parent(found["file"]) not in includes:
            includes.append(_parent(found["file"]))
    detected["includes"] = includes

    defines = {k: _hdl_value(v) for k, v in design.defines.items()}
    parameters = {k: _hdl_value(v) for k, v in design.parameters.items()}
    if bench is not None:
        defines.update({k: _hdl_value(v) for k, v in bench.defines.items()})
        parameters.update({k: _hdl_value(v) for k, v in bench.parameters.items()})

    # Toplevel
    if bench is not None and bench.toplevel:
        toplevel, why = bench.toplevel, "set in hwrepo.toml ([[testbench]] toplevel)"
    elif design.toplevel:
        toplevel, why = design.toplevel, "set in hwrepo.toml ([simulation] toplevel)"
    else:
        texts = {
            p: revision.text(p) or ""
            for p in sorted(set(sources) | set(_include_files(revision, includes)))
        }
        modules_found, how = hierarchy(texts)
        detected["hierarchy"] = modules_found
        detected["hierarchy_method"] = how
        toplevel, why = choose_toplevel(revision, first, modules_found, how.split(";")[0])
    detected["toplevel"] = toplevel
    detected["toplevel_reason"] = why

    # Timescale
    timescale, ts_why = _timescale_rule(revision, sources, design.timescale)
    detected["timescale"] = "/".join(timescale) if timescale else None
    detected["timescale_reason"] = ts_why

    # Requirements and the cocotb release
    reqs: list[str] = []
    release: str | None = None
    release_why: str | None = None
    req_file: str | None = None
    if bench is not None and bench.requirements_file:
        req_file = _join(design_dir, bench.requirements_file)
        if req_file not in revision.paths:
            raise ConfigError(f"{manifest}: requirements_file {req_file} is not in the revision")
    else:
        for candidate in (
            _join(test_dir, "requirements.txt"),
            _join(design_dir, "requirements.txt"),
        ):
            if candidate in revision.paths:
                req_file = candidate
                break
    if req_file is not None:
        reqs, release, release_why = _requirements_from_file(revision, req_file)
        detected["requirements_file"] = req_file
    if bench is not None:
        reqs += bench.requirements
        if bench.cocotb is not None:
            chosen = resolve_cocotb_release(bench.cocotb)
            if release is not None and release != chosen:
                raise ConfigError(
                    f"{manifest}: cocotb = {bench.cocotb!r} but {release_why} (cocotb {release})"
                )
            release, release_why = chosen, f"hwrepo.toml asks for cocotb {bench.cocotb}"
    if release is None:
        release, release_why = DEFAULT_COCOTB, f"default (cocotb {DEFAULT_COCOTB})"
    reqs = normalise_requirements(reqs)
    detected["requirements"] = reqs
    detected["cocotb"] = release
    detected["cocotb_reason"] = release_why

    # Simulators
    if bench is not None:
        simulators = list(bench.simulators)
        detected["simulators_reason"] = (
            "listed in hwrepo.toml"
            if "simulators" in bench.model_fields_set
            else "default (Icarus only)"
        )
    else:
        simulators = ["icarus"]
        detected["simulators_reason"] = (
            "default (Icarus only); list simulators in a [[testbench]] of hwrepo.toml for more"
        )
    detected["simulators"] = simulators

    python_path = [test_dir]
    extra_files: list[str] = []
    if bench is not None:
        for module in modules[1:]:
            if _parent(module) not in python_path:
                python_path.append(_parent(module))
        python_path += [_join(design_dir, p) for p in bench.python_path]
        for pattern in bench.files:
            matched = revision.glob(design_dir, pattern)
            if not matched:
                raise ConfigError(f"{manifest}: files: {pattern!r} matches no file")
            extra_files += matched
    if manifest is not None:
        extra_files.append(manifest)
    if req_file is not None:
        extra_files.append(req_file)

    build_args = {"icarus": design.build_args.icarus, "verilator": design.build_args.verilator}
    params: dict[str, Any] = {
        "toplevel": toplevel,
        "sources": sources,
        "includes": includes,
        "defines": defines,
        "parameters": parameters,
        "timescale": list(timescale) if timescale else None,
        "build_args_by_simulator": build_args,
        "test_modules": [PurePosixPath(m).stem for m in modules],
        "test_dir": test_dir,
        "python_path": python_path,
        "requirements": reqs,
        "cocotb": release,
        "env": dict(bench.env) if bench else {},
        "seed": bench.seed if bench else None,
        "tests": list(bench.tests) if bench else [],
        "waves": bench.waves if bench else True,
    }
    inputs = _inputs_for(revision, design_dir, sources, includes, python_path, extra_files)
    name = bench.name if bench is not None and bench.name else ", ".join(modules)
    return Testbench(
        name=name,
        design_dir=design_dir,
        simulators=simulators,
        params=params,
        inputs=inputs,
        timeout_s=bench.timeout if bench else DEFAULT_TIMEOUT_S,
        detected=detected,
    )


def modules_elsewhere(revision: FileSource, sources: list[str]) -> list[tuple[str, str]]:
    """(module, file) for the modules the sources instantiate that are defined only outside
    them, elsewhere in the revision (e.g. `src/` beside a testbench's own `test/tb.v`), and
    what those modules instantiate in turn."""
    defined_in: dict[str, str] = {}
    for path in revision.paths:
        if path.endswith(SOURCE_SUFFIXES) and not _ignored(path) and path not in sources:
            for module in defined_modules(revision.text(path) or ""):
                defined_in.setdefault(module, path)
    have = {m for s in sources for m in defined_modules(revision.text(s) or "")}
    texts = [strip_comments(revision.text(s) or "") for s in sources]
    found: list[tuple[str, str]] = []
    changed = True
    while changed:
        changed = False
        for module, path in sorted(defined_in.items()):
            if module in have or any(path == f for _, f in found):
                continue
            if any(instantiates(t, module) for t in texts):
                found.append((module, path))
                have.update(defined_modules(revision.text(path) or ""))
                texts.append(strip_comments(revision.text(path) or ""))
                changed = True
    return found


def _include_files(revision: FileSource, includes: list[str]) -> list[str]:
    return [
        p
        for inc in includes
        for p in revision.under(inc)
        if _parent(p) == inc and p.endswith(HDL_SUFFIXES)
    ]


@dataclass
class PlanItem:
    """A testbench to plan jobs for, or an error to report under `name`."""

    name: str
    testbench: Testbench | None = None
    error: str | None = None
    detected: dict[str, Any] = field(default_factory=dict)


def plan_testbenches(revision: FileSource) -> list[PlanItem]:
    """Every testbench of the revision (manifests first), or the errors that stop them."""
    items: list[PlanItem] = []
    manifests = find_manifests(revision)
    manifest_dirs = sorted((_parent(m) for m in manifests), key=lambda d: -len(d))
    configs: dict[str, SimulationTables] = {}
    for path in manifests:
        text = revision.text(path)
        try:
            if text is None:
                raise ConfigError(f"{path}: cannot read it")
            configs[_parent(path)] = load_manifest(path, text.encode("utf-8"))
        except ConfigError as exc:
            items.append(PlanItem(name=path, error=str(exc), detected={"manifest": True}))

    def owner(path: str) -> str | None:
        for d in manifest_dirs:
            if d == "" or path.startswith(d + "/"):
                return d
        return None

    # Manifests that name their testbenches
    for directory, manifest in sorted(configs.items()):
        mpath = _join(directory, MANIFEST)
        for index, bench in enumerate(manifest.testbench):
            label = bench.name or ", ".join(_join(directory, m) for m in bench.modules)
            try:
                tb = resolve_testbench(revision, directory, manifest.simulation, bench, None, mpath)
            except (ConfigError, ValueError) as exc:
                msg = str(exc)
                if not msg.startswith(mpath):
                    msg = f"{mpath}: [[testbench]] {index + 1}: {msg}"
                items.append(PlanItem(name=label, error=msg, detected={"manifest": True}))
                continue
            items.append(PlanItem(name=tb.name, testbench=tb))

    # Projects' own cocotb Makefiles (unless a manifest names the testbenches of their tree)
    bad_manifests = {_parent(m) for m in manifests if _parent(m) not in configs}
    make_dirs: set[str] = set()
    for makefile in find_cocotb_makefiles(revision):
        directory = owner(makefile)
        manifest = configs.get(directory) if directory is not None else None
        if directory in bad_manifests or (manifest is not None and manifest.testbench):
            continue
        make_dirs.add(_parent(makefile))
        mpath = _join(directory, MANIFEST) if directory is not None and manifest else None
        try:
            tb = resolve_makefile(revision, makefile, None, mpath)
        except (ConfigError, ValueError) as exc:
            items.append(PlanItem(name=makefile, error=str(exc), detected={"flow": "make"}))
            continue
        items.append(PlanItem(name=tb.name, testbench=tb))

    # Detected testbenches (under a manifest without [[testbench]], or under none)
    for test_file in find_test_files(revision):
        directory = owner(test_file)
        if directory in bad_manifests or _parent(test_file) in make_dirs:
            continue
        manifest = configs.get(directory) if directory is not None else None
        if manifest is not None and manifest.testbench:
            continue
        design = manifest.simulation if manifest is not None else DesignConfig()
        mpath = (
            _join(directory, MANIFEST) if manifest is not None and directory is not None else None
        )
        try:
            if manifest is not None and design.sources is not None:
                design_dir = directory or ""
            else:
                found = design_dir_for(revision, test_file, directory)
                if found is None:
                    raise ConfigError(
                        f"{test_file}: no Verilog sources (.v, .sv) beside the testbench "
                        f"or in a directory above it"
                    )
                design_dir = found
            tb = resolve_testbench(revision, design_dir, design, None, test_file, mpath)
        except (ConfigError, ValueError) as exc:
            items.append(PlanItem(name=test_file, error=str(exc), detected={"manifest": False}))
            continue
        items.append(PlanItem(name=tb.name, testbench=tb))
    items += unplanned_cocotb_files(revision, items, bad_manifests)
    return items


def unplanned_cocotb_files(
    revision: FileSource, items: list[PlanItem], skipped_dirs: set[str]
) -> list[PlanItem]:
    """Python files that import cocotb in a directory no testbench covers: never a silent
    green. A helper module beside (or below) a planned testbench is covered by it."""
    covered: set[str] = set()
    for item in items:
        if item.testbench is not None:
            covered.add(item.testbench.design_dir)
            covered.update(item.testbench.params.get("python_path") or [])
            covered.add(item.testbench.params.get("test_dir") or item.testbench.design_dir)
        elif item.error is not None:
            covered.add(_parent(item.name))  # already reported, with its own reason
    errors = []
    for path in revision.paths:
        if not path.endswith(".py") or _ignored(path):
            continue
        here = _parent(path)
        if any(here == d or here.startswith(d + "/") for d in covered if d) or "" in covered:
            continue
        if any(here == d or here.startswith(d + "/") for d in skipped_dirs if d):
            continue
        text = revision.text(path) or ""
        if not _IMPORTS_COCOTB.search(text):
            continue
        errors.append(
            PlanItem(
                name=path,
                error=(
                    f"{path} imports cocotb, but no cocotb test was found in it or beside it "
                    "(tests are made with @cocotb.test, cocotb.parametrize or "
                    "TestFactory(...).generate_tests(), or named by a Makefile that includes "
                    "cocotb's Makefile.sim); name its tests in a [[testbench]] of hwrepo.toml"
                ),
                detected={"manifest": False, "unplanned": True},
            )
        )
    return errors


class MakeJobParams(BaseModel):
    """What `run()` needs for a testbench driven by the project's own Makefile."""

    model_config = ConfigDict(extra="forbid")

    flow: Literal["make"]
    simulator: Simulator
    makefile_dir: str
    makefile: str
    requirements: list[str] = Field(default_factory=list)
    cocotb: str = DEFAULT_COCOTB
    env: dict[str, str] = Field(default_factory=dict)
    seed: int | None = None
    tests: list[str] = Field(default_factory=list)
    detected: dict[str, Any] = Field(default_factory=dict)


def job_params(tb: Testbench, simulator: str) -> dict[str, Any]:
    """The JSON params of the job running `tb` on `simulator` (validated by JobParams)."""
    if tb.params.get("flow") == "make":
        made = {**tb.params, "simulator": simulator}
        made["detected"] = {**tb.detected, "simulator": simulator}
        return MakeJobParams.model_validate(made).model_dump(mode="json")
    params = {k: v for k, v in tb.params.items() if k != "build_args_by_simulator"}
    params["simulator"] = simulator
    params["build_args"] = list(tb.params["build_args_by_simulator"].get(simulator, []))
    params["detected"] = {**tb.detected, "simulator": simulator}
    return JobParams.model_validate(params).model_dump(mode="json")
