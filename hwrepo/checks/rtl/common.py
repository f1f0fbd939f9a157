"""What the RTL check kinds (`rtl-structure`, `rtl-lint`) share: finding the RTL designs of a
revision, the optional `[rtl]` table of `hwrepo.toml`, and reading Verilog with pyverilog.

Finding designs
---------------
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

`[rtl]` in `hwrepo.toml` (at the revision root), every key optional:

    [rtl]
    sources = ["rtl/*.v", "ip/**/*.v"]  # exactly these files, as one design rooted at "."
    include_dirs = ["rtl/include"]      # added to every design's include path
    defines = { WIDTH = 16, SIM = true } # or ["WIDTH=16", "SIM"]; false leaves a name undefined
    top = "soc_top"                     # --top-module for Verilator
    fail_on = ["error", "warning"]      # lint severities that fail the check (default ["error"])

Patterns in `sources` are revision paths where `*` and `?` stay within one path segment and `**`
matches any number of segments.

Reading Verilog
---------------
pyverilog reads Verilog-2001. The sources are preprocessed together by Icarus Verilog's
preprocessor `ivlpp` with line directives (`-L`), so every AST line maps back to its file and line
even across `` `include ``s; the output is split per source file and each file is parsed on its
own, so one file's syntax error does not hide the others' modules. If `ivlpp` cannot be found next
to `iverilog`, each file is preprocessed alone by `iverilog -E` (pyverilog's own way; line numbers
after an `` `include `` are then off by the header's length). `.sv` files and `.v` files that use
SystemVerilog keywords are not given to pyverilog at all.
"""

from __future__ import annotations

import contextlib
import math
import operator
import posixpath
import re
import shutil
import threading
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from hwrepo.checks.core.kind import PlannedJob, RevisionFiles
from hwrepo.checks.run.tools import run_tool

CONFIG_FILE = "hwrepo.toml"
SOURCE_SUFFIXES = (".v", ".sv")
HEADER_SUFFIXES = (".vh", ".svh")
SV_SUFFIXES = (".sv", ".svh")
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
SEVERITIES = ("error", "warning", "info")
DEFAULT_FAIL_ON = ("error",)
CONFIG_KEYS = ("sources", "include_dirs", "defines", "top", "fail_on")
JOB_TIMEOUT_S = 300.0
MAX_SCAN_BYTES = 2 * 1024 * 1024

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_INCLUDE = re.compile(r'^\s*`include\s+"([^"\n]+)"', re.MULTILINE)


# --------------------------------------------------------------------------------------------
# Configuration


class RtlConfigError(ValueError):
    """An invalid `[rtl]` table (the message names the key and what was expected)."""


@dataclass
class RtlConfig:
    sources: list[str] | None = None
    include_dirs: list[str] = field(default_factory=list)
    defines: dict[str, str | None] = field(default_factory=dict)
    top: str | None = None
    fail_on: list[str] = field(default_factory=lambda: list(DEFAULT_FAIL_ON))
    present: bool = False  # the revision has an [rtl] table


def _where(key: str) -> str:
    return f"{CONFIG_FILE}: [rtl] {key}"


def _string_list(table: dict[str, Any], key: str) -> list[str] | None:
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RtlConfigError(f"{_where(key)}: expected a list of non-empty strings, got {value!r}")
    return list(value)


def _clean_relpath(key: str, value: str) -> str:
    if "\\" in value or value.startswith("/") or any(c in value for c in "\n\r\0"):
        raise RtlConfigError(f"{_where(key)}: {value!r} is not a relative revision path")
    norm = posixpath.normpath(value)
    if norm == ".." or norm.startswith("../"):
        raise RtlConfigError(f"{_where(key)}: {value!r} points outside the revision")
    return "" if norm == "." else norm


def _define_value(key: str, name: str, value: object) -> str | None:
    if not _IDENT.fullmatch(name):
        raise RtlConfigError(f"{_where(key)}: {name!r} is not a macro name")
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        if any(c in value for c in "\n\r\0"):
            raise RtlConfigError(f"{_where(key)}: the value of {name} spans lines")
        return value
    raise RtlConfigError(
        f"{_where(key)}: the value of {name} must be a string, number or boolean, got {value!r}"
    )


def parse_config(data: bytes | None) -> RtlConfig:
    """The `[rtl]` table of a `hwrepo.toml` (None: no such file)."""
    config = RtlConfig()
    if data is None:
        return config
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RtlConfigError(f"{CONFIG_FILE}: not valid TOML: {exc}") from exc
    if "rtl" not in doc:
        return config
    table = doc["rtl"]
    if not isinstance(table, dict):
        raise RtlConfigError(f"{CONFIG_FILE}: [rtl] must be a table, got {table!r}")
    config.present = True
    for key in table:
        if key not in CONFIG_KEYS:
            raise RtlConfigError(f"{_where(key)}: unknown key (expected one of {CONFIG_KEYS})")
    sources = _string_list(table, "sources")
    if sources is not None:
        if not sources:
            raise RtlConfigError(f"{_where('sources')}: expected at least one path or pattern")
        config.sources = [_clean_relpath("sources", s) for s in sources]
    config.include_dirs = [
        _clean_relpath("include_dirs", d) for d in _string_list(table, "include_dirs") or []
    ]
    defines = table.get("defines", {})
    if isinstance(defines, dict):
        config.defines = {
            n: _define_value("defines", n, v) for n, v in defines.items() if v is not False
        }
    elif isinstance(defines, list) and all(isinstance(d, str) for d in defines):
        for item in defines:
            name, eq, value = item.partition("=")
            config.defines[name.strip()] = _define_value(
                "defines", name.strip(), value if eq else True
            )
    else:
        raise RtlConfigError(
            f"{_where('defines')}: expected a table of NAME = value or a list of "
            f'"NAME=value" strings, got {defines!r}'
        )
    if "top" in table:
        top = table["top"]
        if not isinstance(top, str) or not _IDENT.fullmatch(top):
            raise RtlConfigError(f"{_where('top')}: expected a module name, got {top!r}")
        config.top = top
    fail_on = _string_list(table, "fail_on")
    if fail_on is not None:
        bad = [s for s in fail_on if s not in SEVERITIES]
        if bad or not fail_on:
            raise RtlConfigError(
                f"{_where('fail_on')}: expected a non-empty list of {SEVERITIES}, got {fail_on!r}"
            )
        config.fail_on = sorted(set(fail_on), key=SEVERITIES.index)
    return config


def load_config(revision: RevisionFiles) -> RtlConfig:
    present = any(f.path == CONFIG_FILE for f in revision.files)
    return parse_config(revision.read(CONFIG_FILE) if present else None)


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


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


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
    config: RtlConfig,
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


def find_designs(revision: RevisionFiles, config: RtlConfig) -> list[RtlDesign]:
    """The RTL designs of a revision (see the module's docstring for the rule)."""
    paths = sorted(f.path for f in revision.files)
    known = set(paths)
    for d in config.include_dirs:
        if d and not any(p.startswith(d + "/") for p in paths):
            raise RtlConfigError(
                f"{_where('include_dirs')}: {d!r} is not a directory of the revision"
            )
    if config.sources is not None:
        chosen: list[str] = []
        for pattern in config.sources:
            if pattern in known:
                matched = [pattern]
            else:
                rx = _glob_regex(pattern)
                matched = [p for p in paths if rx.fullmatch(p) and _is_source(p)]
            if not matched:
                raise RtlConfigError(f"{_where('sources')}: {pattern!r} matches no file")
            chosen.extend(m for m in matched if m not in chosen)
        dirs = {posixpath.dirname(p) for p in chosen}
        headers = [p for p in paths if _is_header(p) and posixpath.dirname(p) in dirs]
        rule = f"the files listed by `sources` in the [rtl] table of {CONFIG_FILE}"
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


@dataclass
class DesignParams:
    """What an RTL job carries (its `params`)."""

    root: str
    sources: list[str]
    include_dirs: list[str] = field(default_factory=list)
    defines: dict[str, str | None] = field(default_factory=dict)
    top: str | None = None
    fail_on: list[str] = field(default_factory=lambda: list(DEFAULT_FAIL_ON))

    def to_params(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "sources": self.sources,
            "include_dirs": self.include_dirs,
            "defines": self.defines,
            "top": self.top,
            "fail_on": self.fail_on,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> DesignParams:
        return cls(
            root=str(params.get("root", "")),
            sources=[str(s) for s in params.get("sources", [])],
            include_dirs=[str(d) for d in params.get("include_dirs", [])],
            defines={
                str(k): None if v is None else str(v) for k, v in params.get("defines", {}).items()
            },
            top=params.get("top"),
            fail_on=[str(s) for s in params.get("fail_on", DEFAULT_FAIL_ON)],
        )


def plan_rtl_jobs(revision: RevisionFiles, kind: str) -> list[PlannedJob]:
    """One job per RTL design of the revision (both RTL kinds plan the same way)."""
    try:
        config = load_config(revision)
        designs = find_designs(revision, config)
    except RtlConfigError as exc:
        has_hdl = any(_is_source(f.path) for f in revision.files)
        if not has_hdl and not _mentions_rtl(revision):
            return []
        return [PlannedJob(name=f"{CONFIG_FILE} [rtl]", error=str(exc), inputs=[])]
    jobs = []
    for design in designs:
        params = DesignParams(
            root=design.root,
            sources=design.sources,
            include_dirs=design.include_dirs,
            defines=config.defines,
            top=config.top,
            fail_on=config.fail_on,
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
                    "config": CONFIG_FILE if config.present else None,
                },
            )
        )
    return jobs


def _mentions_rtl(revision: RevisionFiles) -> bool:
    if not any(f.path == CONFIG_FILE for f in revision.files):
        return False
    return b"[rtl" in revision.read(CONFIG_FILE)


def arg_path(path: str) -> str:
    """A revision path as a tool argument (never mistaken for an option)."""
    return "./" + path if path.startswith("-") else path


def revision_path(raw: str, src: Path) -> str:
    """A path a tool printed (relative to `src`, or absolute inside it) as a revision path."""
    if raw.startswith("file://"):
        from urllib.parse import unquote, urlparse

        raw = unquote(urlparse(raw).path)
    p = Path(raw)
    if p.is_absolute():
        with contextlib.suppress(ValueError, OSError):
            return p.resolve().relative_to(src.resolve()).as_posix()
        return raw
    return posixpath.normpath(raw)


# --------------------------------------------------------------------------------------------
# SystemVerilog detection

SV_KEYWORDS = (
    "always_ff",
    "always_comb",
    "always_latch",
    "logic",
    "interface",
    "endinterface",
    "modport",
    "package",
    "endpackage",
    "import",
    "typedef",
    "struct",
    "union",
    "enum",
    "unique",
    "priority",
    "class",
    "endclass",
    "program",
    "endprogram",
    "covergroup",
    "clocking",
)
_SV_WORD = re.compile(r"\b(" + "|".join(SV_KEYWORDS) + r")\b")
_COMMENT_OR_STRING = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"', re.DOTALL)


def _blank(match: re.Match[str]) -> str:
    return re.sub(r"[^\n]", " ", match.group(0))


def systemverilog_reason(path: str, text: str) -> tuple[int, str] | None:
    """(line, why) when a file is SystemVerilog rather than Verilog-2001, else None."""
    if path.lower().endswith(SV_SUFFIXES):
        return 1, "is a SystemVerilog file (.sv)"
    code = _COMMENT_OR_STRING.sub(_blank, text)
    m = _SV_WORD.search(code)
    if m is None:
        return None
    line = code.count("\n", 0, m.start()) + 1
    return line, f"uses the SystemVerilog keyword '{m.group(1)}' (line {line})"


# --------------------------------------------------------------------------------------------
# Parsing with pyverilog


@dataclass
class SourceError:
    file: str | None
    line: int | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "message": self.message}

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else (self.file or "")
        return f"{where}: {self.message}" if where else self.message


@dataclass
class Unit:
    """One source file, preprocessed and parsed: its module definitions and a map from the
    preprocessed line numbers the AST carries to (file, line) of the revision."""

    file: str
    modules: list[Any] = field(default_factory=list)  # pyverilog ModuleDef
    linemap: list[tuple[str, int]] = field(default_factory=list)

    def locate(self, lineno: int) -> tuple[str, int]:
        if 1 <= lineno <= len(self.linemap):
            return self.linemap[lineno - 1]
        return self.file, max(lineno, 1)


@dataclass
class ParsedDesign:
    units: list[Unit] = field(default_factory=list)
    syntax_errors: list[SourceError] = field(default_factory=list)  # the design's fault
    tool_errors: list[SourceError] = field(default_factory=list)  # the tools' fault
    systemverilog: list[SourceError] = field(default_factory=list)  # files pyverilog cannot read
    preprocessor: str = ""

    def modules(self) -> Iterator[tuple[Any, Unit]]:
        for unit in self.units:
            for mod in unit.modules:
                yield mod, unit

    @property
    def parsed_files(self) -> list[str]:
        return [u.file for u in self.units]


_PARSER_LOCK = threading.Lock()
_PARSER: Any = None


def pyverilog_version() -> str:
    import pyverilog

    return str(getattr(pyverilog, "__version__", "unknown")).strip()


def _parser(cache: Path) -> Any:
    """One pyverilog parser per process (building it takes ~0.7 s); its tables are written to
    `cache`, never to the working directory. Call with _PARSER_LOCK held."""
    global _PARSER
    if _PARSER is None:
        from pyverilog.vparser.parser import VerilogParser

        outdir = cache / "pyverilog"
        outdir.mkdir(parents=True, exist_ok=True)
        _PARSER = VerilogParser(outputdir=str(outdir), debug=False)
    return _PARSER


def find_ivlpp() -> Path | None:
    """Icarus Verilog's preprocessor, which (unlike `iverilog -E`) can emit line directives."""
    iverilog = shutil.which("iverilog")
    if iverilog is None:
        return None
    prefix = Path(iverilog).resolve().parent.parent
    candidates = [prefix / "lib" / "ivl" / "ivlpp", prefix / "lib64" / "ivl" / "ivlpp"]
    candidates += sorted(prefix.glob("lib/*/ivl/ivlpp"))
    return next((c for c in candidates if c.is_file()), None)


_LINE_DIRECTIVE = re.compile(r'^`line\s+(\d+)\s+"([^"]*)"\s+(\d)\s*$')
_IVLPP_MESSAGE = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+): (?P<msg>.*)$")
_PARSE_LINE = re.compile(r"line:(\d+)")


def _split_units(
    text: str, sources: list[str], src: Path
) -> list[tuple[str, str, list[tuple[str, int]]]]:
    """Split ivlpp -L output into (file, text, linemap) per top-level source file. Lines are
    split at "\n" only, as pyverilog counts them; a CR before it is dropped (pyverilog does not
    accept CR)."""
    units: list[tuple[str, list[str], list[tuple[str, int]]]] = []
    wanted = set(sources)
    cur_file, cur_line = "", 1
    for raw in text.removesuffix("\n").split("\n"):
        raw = raw.removesuffix("\r")
        m = _LINE_DIRECTIVE.match(raw)
        if m:
            path = revision_path(m.group(2), src)
            if m.group(3) == "0" and path in wanted and m.group(1) == "1":
                units.append((path, [], []))
            cur_file, cur_line = path, int(m.group(1))
            if units:
                units[-1][1].append(raw)
                units[-1][2].append((cur_file, cur_line))
            continue
        if units:
            units[-1][1].append(raw)
            units[-1][2].append((cur_file, cur_line))
        cur_line += 1
    return [(f, "\n".join(lines) + "\n", lmap) for f, lines, lmap in units]


def _ivlpp_errors(output: str, src: Path) -> list[SourceError]:
    errors = []
    for raw in output.splitlines():
        m = _IVLPP_MESSAGE.match(raw.strip())
        if m and "warning:" not in m.group("msg"):
            errors.append(
                SourceError(
                    revision_path(m.group("file"), src), int(m.group("line")), m.group("msg")
                )
            )
    return errors


def _preprocess(
    params: DesignParams,
    files: list[str],
    *,
    src: Path,
    tmp: Path,
    log: Path | None,
    timeout_s: float,
    parsed: ParsedDesign,
) -> list[tuple[str, str, list[tuple[str, int]]]]:
    ivlpp = find_ivlpp()
    defines = [f"{n}={'1' if v is None else v}" for n, v in params.defines.items()]
    tmp.mkdir(parents=True, exist_ok=True)
    if ivlpp is not None:
        flags = tmp / "ivlpp.flags"
        lines = [f"I:{d or '.'}" for d in params.include_dirs] + [f"D:{d}" for d in defines]
        flags.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        out = tmp / "ivlpp.out"
        run = run_tool(
            [str(ivlpp), "-L", f"-F{flags}", f"-o{out}", *map(arg_path, files)],
            cwd=src,
            timeout_s=timeout_s,
            log=log,
        )
        parsed.preprocessor = f"{ivlpp} -L"
        if run.timed_out:
            parsed.tool_errors.append(SourceError(None, None, "the preprocessor timed out"))
            return []
        if not run.ok:
            errors = _ivlpp_errors(run.output, src)
            if errors:
                parsed.syntax_errors.extend(errors)
            else:
                parsed.tool_errors.append(
                    SourceError(None, None, f"ivlpp exited {run.exit_code}: {run.last_lines(5)}")
                )
            return []
        text = out.read_text(encoding="utf-8", errors="replace")
        return _split_units(text, files, src)
    # Fallback: pyverilog's own way, one file at a time.
    units = []
    parsed.preprocessor = "iverilog -E (per file, without line directives)"
    for path in files:
        out = tmp / "iverilog-E.out"
        argv = ["iverilog", "-E", "-o", str(out)]
        argv += [f"-I{d or '.'}" for d in params.include_dirs] + [f"-D{d}" for d in defines]
        run = run_tool([*argv, arg_path(path)], cwd=src, timeout_s=timeout_s, log=log)
        if run.timed_out:
            parsed.tool_errors.append(SourceError(path, None, "the preprocessor timed out"))
            return []
        if not run.ok:
            errors = _ivlpp_errors(run.output, src)
            if errors:
                parsed.syntax_errors.extend(errors)
            else:
                message = f"iverilog -E exited {run.exit_code}: {run.last_lines(5)}"
                parsed.tool_errors.append(SourceError(path, None, message))
            continue
        text = out.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
        n = text.count("\n") + 1
        units.append((path, text, [(path, i) for i in range(1, n + 1)]))
    return units


def parse_design(
    params: DesignParams,
    *,
    src: Path,
    tmp: Path,
    cache: Path,
    log: Path | None = None,
    timeout_s: float = 120.0,
) -> ParsedDesign:
    """Preprocess and parse a design's Verilog-2001 sources (see the module's docstring)."""
    from pyverilog.vparser.ast import ModuleDef
    from pyverilog.vparser.parser import ParseError

    parsed = ParsedDesign()
    verilog = []
    for path in params.sources:
        try:
            text = (src / path).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            parsed.tool_errors.append(SourceError(path, None, f"cannot read: {exc.strerror}"))
            continue
        reason = systemverilog_reason(path, text)
        if reason is not None:
            parsed.systemverilog.append(SourceError(path, reason[0], reason[1]))
        else:
            verilog.append(path)
    if not verilog:
        return parsed
    units = _preprocess(
        params, verilog, src=src, tmp=tmp, log=log, timeout_s=timeout_s, parsed=parsed
    )
    with _PARSER_LOCK:
        parser = _parser(cache)
        for path, text, linemap in units:
            unit = Unit(file=path, linemap=linemap)
            parser.lexer.reset_lineno()
            parser.lexer.directives = []
            parser.lexer.default_nettype = "wire"
            try:
                ast = parser.parse(text)
            except ParseError as exc:
                message = str(exc)
                m = _PARSE_LINE.search(message)
                detail = message.split(": ", 1)[1] if ": " in message else message
                if m:
                    file, line = unit.locate(int(m.group(1)))
                else:
                    file, line = path, len([1 for f, _ in linemap if f == path]) or None
                parsed.syntax_errors.append(SourceError(file, line, f"syntax error {detail}"))
                continue
            except Exception as exc:  # pyverilog's own failure, not the design's
                parsed.tool_errors.append(
                    SourceError(path, None, f"pyverilog failed: {type(exc).__name__}: {exc}")
                )
                continue
            unit.modules = [d for d in ast.description.definitions if isinstance(d, ModuleDef)]
            parsed.units.append(unit)
    return parsed


# --------------------------------------------------------------------------------------------
# AST helpers


def walk(node: Any) -> Iterator[Any]:
    """The node and all its descendants, depth first, in source order."""
    stack = [node]
    while stack:
        n = stack.pop()
        if n is None:
            continue
        yield n
        stack.extend(reversed([c for c in n.children() if c is not None]))


_CODEGEN: Any = None


def expr_text(node: Any) -> str:
    """Verilog text of an expression (pyverilog's code generator)."""
    global _CODEGEN
    if node is None:
        return ""
    if _CODEGEN is None:
        from pyverilog.ast_code_generator.codegen import ASTCodeGenerator

        _CODEGEN = ASTCodeGenerator()
    try:
        text = str(_CODEGEN.visit(node)).strip()
    except Exception:  # the generator does not know every node
        return type(node).__name__
    return _strip_parens(text)


def _strip_parens(text: str) -> str:
    """`(A + 1)` → `A + 1` when the outer parentheses enclose the whole expression."""
    while text.startswith("(") and text.endswith(")"):
        depth = 0
        for i, c in enumerate(text):
            depth += {"(": 1, ")": -1}.get(c, 0)
            if depth == 0 and i < len(text) - 1:
                return text
        text = text[1:-1].strip()
    return text


_BASES = {"b": 2, "o": 8, "d": 10, "h": 16}
_SIZED = re.compile(r"(\d*)'([sS]?)([bBoOdDhH])([0-9a-fA-F_]+)")


def int_value(text: str) -> int | None:
    """The value of a Verilog integer literal; None for x/z digits or anything else."""
    s = text.replace("_", "").replace(" ", "")
    if s.isdigit():
        return int(s)
    m = _SIZED.fullmatch(s)
    if m is None:
        return None
    value = int(m.group(4), _BASES[m.group(3).lower()])
    if m.group(1):
        value &= (1 << int(m.group(1))) - 1
    return value


def _clog2(x: int) -> int:
    return 0 if x <= 1 else (x - 1).bit_length()


def _div(a: int, b: int) -> int:
    return int(a / b)


def _mod(a: int, b: int) -> int:
    return int(math.fmod(a, b))


_BINARY: dict[str, Callable[[int, int], int]] = {
    "Plus": operator.add,
    "Minus": operator.sub,
    "Times": operator.mul,
    "Divide": _div,
    "Mod": _mod,
    "Power": operator.pow,
    "Sll": operator.lshift,
    "Sla": operator.lshift,
    "Srl": operator.rshift,
    "Sra": operator.rshift,
    "And": operator.and_,
    "Or": operator.or_,
    "Xor": operator.xor,
    "Land": lambda a, b: int(bool(a) and bool(b)),
    "Lor": lambda a, b: int(bool(a) or bool(b)),
    "LessThan": lambda a, b: int(a < b),
    "GreaterThan": lambda a, b: int(a > b),
    "LessEq": lambda a, b: int(a <= b),
    "GreaterEq": lambda a, b: int(a >= b),
    "Eq": lambda a, b: int(a == b),
    "NotEq": lambda a, b: int(a != b),
    "Eql": lambda a, b: int(a == b),
    "NotEql": lambda a, b: int(a != b),
}


def evaluate(node: Any, env: dict[str, int | None]) -> int | None:
    """The integer value of a constant expression in `env` (parameter values), or None."""
    name = type(node).__name__
    try:
        if name in ("Rvalue", "Lvalue"):
            return evaluate(node.var, env)
        if name == "IntConst":
            return int_value(node.value)
        if name == "Identifier":
            return None if node.scope is not None else env.get(node.name)
        if name in _BINARY:
            a = evaluate(node.left, env)
            b = evaluate(node.right, env)
            if a is None or b is None:
                return None
            if name in ("Divide", "Mod") and b == 0:
                return None
            if name == "Power" and (b < 0 or b > 64):
                return None
            if name in ("Sll", "Sla") and not 0 <= b <= 64:
                return None
            return _BINARY[name](a, b)
        if name in ("Uminus", "Uplus", "Ulnot", "Unot"):
            v = evaluate(node.right, env)
            if v is None:
                return None
            return {"Uminus": -v, "Uplus": v, "Ulnot": int(not v), "Unot": ~v}[name]
        if name == "Cond":
            c = evaluate(node.cond, env)
            if c is None:
                return None
            return evaluate(node.true_value if c else node.false_value, env)
        if name == "SystemCall" and node.syscall == "clog2" and len(node.args) == 1:
            v = evaluate(node.args[0], env)
            return None if v is None else _clog2(v)
    except (ArithmeticError, ValueError, OverflowError):
        return None
    return None


def width_bits(width: Any, env: dict[str, int | None]) -> int | None:
    """Bits of a `[msb:lsb]` range (None: no range = 1 bit is the caller's call)."""
    msb = evaluate(width.msb, env)
    lsb = evaluate(width.lsb, env)
    if msb is None or lsb is None:
        return None
    return abs(msb - lsb) + 1


def width_text(width: Any) -> str:
    """`[WIDTH-1:0]` (pyverilog's code generator prints a range without spaces)."""
    return expr_text(width)


@dataclass
class ParamInfo:
    name: str
    default: str
    value: int | None
    local: bool
    lineno: int


@dataclass
class PortInfo:
    name: str
    direction: str  # input | output | inout | (unknown)
    net: str | None  # wire | reg | ...
    signed: bool
    width: str | None
    bits: int | None
    lineno: int


def module_parameters(mod: Any, overrides: dict[str, int | None] | None = None) -> list[ParamInfo]:
    """The parameters of a module in declaration order, evaluated (with `overrides` for the
    non-local ones)."""
    from pyverilog.vparser.ast import Decl, Localparam, Parameter

    decls = []
    if mod.paramlist is not None:
        decls.extend(mod.paramlist.params)
    decls.extend(item for item in mod.items if isinstance(item, Decl))
    env: dict[str, int | None] = {}
    out = []
    for decl in decls:
        for p in getattr(decl, "list", [decl]):
            if not isinstance(p, Parameter):
                continue
            local = isinstance(p, Localparam)
            if not local and overrides is not None and p.name in overrides:
                value = overrides[p.name]
            else:
                value = evaluate(p.value, env)
            env[p.name] = value
            out.append(ParamInfo(p.name, expr_text(p.value.var), value, local, p.lineno))
    return out


def parameter_env(
    mod: Any, overrides: dict[str, int | None] | None = None
) -> dict[str, int | None]:
    return {p.name: p.value for p in module_parameters(mod, overrides)}


_DIRECTIONS = {"Input": "input", "Output": "output", "Inout": "inout"}
_NETS = {"Wire": "wire", "Reg": "reg", "Tri": "tri", "Integer": "integer", "Real": "real"}


def module_ports(mod: Any, env: dict[str, int | None] | None = None) -> list[PortInfo]:
    """The ports of a module in header order (ANSI and non-ANSI style)."""
    from pyverilog.vparser.ast import Decl, Ioport, Port

    env = parameter_env(mod) if env is None else env
    ports: list[PortInfo] = []
    by_name: dict[str, PortInfo] = {}

    def describe(info: PortInfo, var: Any) -> None:
        cls = type(var).__name__
        if cls in _DIRECTIONS:
            info.direction = _DIRECTIONS[cls]
        elif cls in _NETS:
            info.net = _NETS[cls]
        info.signed = info.signed or bool(getattr(var, "signed", False))
        if getattr(var, "width", None) is not None and info.width is None:
            info.width = width_text(var.width)
            info.bits = width_bits(var.width, env)

    for port in mod.portlist.ports if mod.portlist is not None else []:
        if isinstance(port, Ioport):
            info = PortInfo(port.first.name, "", None, False, None, 1, port.lineno)
            describe(info, port.first)
            if port.second is not None:
                describe(info, port.second)
        elif isinstance(port, Port):
            info = PortInfo(port.name, "", None, False, None, 1, port.lineno)
        else:
            continue
        ports.append(info)
        by_name[info.name] = info
    for item in mod.items:
        if not isinstance(item, Decl):
            continue
        for var in item.list:
            info = by_name.get(getattr(var, "name", None) or "")
            if info is None:
                continue
            if type(var).__name__ in _DIRECTIONS:
                info.lineno = var.lineno
            describe(info, var)
    for info in ports:
        if not info.direction:
            info.direction = "unknown"
    return ports


def int_or_text(value: int | None, text: str) -> int | str:
    return value if value is not None else text
