"""Reading a design's Verilog with pyverilog, inside the sandbox.

The sources are preprocessed together by Icarus Verilog's preprocessor `ivlpp` with line
directives (`-L`), so every AST line maps back to its file and line even across
`` `include ``s; the output is split per source file and each file is parsed on its own, so one
file's syntax error does not hide the others' modules. If `ivlpp` cannot be found next to
`iverilog`, each file is preprocessed alone by `iverilog -E` (pyverilog's own way; line numbers
after an `` `include `` are then off by the header's length). `.sv` files and `.v` files that
use SystemVerilog keywords are not given to pyverilog at all. Two Verilog-2001 forms pyverilog
does not take are rewritten first, within their lines (`pyverilog_text`): spaces inside based
literals, and attribute instances.

pyverilog builds its parser tables once per worker (`ensure_tables`, no design involved); jobs
read them from the kind's cache, mounted read-only.
"""

from __future__ import annotations

import importlib.util
import math
import operator
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwrepo.checks.rtl.job import DesignParams
from hwrepo.checks.rtl.verilog import arg_path, revision_path, systemverilog_reason
from hwrepo.checks.run.inside import tool
from hwrepo.checks.run.installed import find_ivlpp


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


# Verilog-2001 that pyverilog's lexer and grammar do not take, rewritten within each line so
# that line numbers stay: a based literal with spaces where the standard allows them (between
# the size and the apostrophe, between the base and the digits: `32'h 0000_0000`, `8 'b1010`),
# joined; an attribute instance (`(* parallel_case *)`), which says nothing of the structure,
# blanked. `@(*)` is no attribute.
_SPACED_LITERAL = re.compile(
    r"(?<![\w$])(\d[\d_]*)?[ \t]*'([sS]?[bBoOdDhH])[ \t]+(?=[0-9a-fA-FxXzZ?])"
    r"|(?<![\w$])(\d[\d_]*)[ \t]+'([sS]?[bBoOdDhH])"
)
_ATTRIBUTE = re.compile(r"\(\*(?![ \t]*\))(?:.|\n)*?\*\)")


def pyverilog_text(text: str) -> str:
    """`text` as pyverilog's parser reads it: based literals without the spaces Verilog allows
    in them, attribute instances blanked (their newlines kept)."""
    text = _SPACED_LITERAL.sub(
        lambda m: f"{m.group(1) or m.group(3) or ''}'{m.group(2) or m.group(4)}", text
    )
    return _ATTRIBUTE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


_PARSER_LOCK = threading.Lock()
_PARSER: Any = None


def pyverilog_version() -> str:
    import pyverilog

    return str(getattr(pyverilog, "__version__", "unknown")).strip()


TABLES = "pyverilog"
_TABLE_MODULE = "pyverilog.vparser.parsetab"


def ensure_tables(cache: Path) -> Path:
    """Build pyverilog's parser tables into `cache` (once; on the worker, from pyverilog's
    grammar alone: no design is read). Jobs load them from there instead of rebuilding them
    (~0.4 s each)."""
    outdir = cache / TABLES
    if not (outdir / "parsetab.py").is_file():
        from pyverilog.vparser.parser import VerilogParser

        with _PARSER_LOCK:
            outdir.mkdir(parents=True, exist_ok=True)
            VerilogParser(outputdir=str(outdir), debug=False)
    for path in (cache, outdir, *outdir.iterdir()):  # readable by the sandbox's uid
        path.chmod(0o755 if path.is_dir() else 0o644)
    return outdir


def _parser(cache: Path) -> Any:
    """One pyverilog parser per process, from the tables `ensure_tables` built (PLY looks for
    them inside pyverilog's package: they are handed to it under that name). Call with
    _PARSER_LOCK held."""
    global _PARSER
    if _PARSER is None:
        table = cache / TABLES / "parsetab.py"
        if table.is_file() and _TABLE_MODULE not in sys.modules:
            spec = importlib.util.spec_from_file_location(_TABLE_MODULE, table)
            if spec is not None and spec.loader is not None:
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                sys.modules[_TABLE_MODULE] = module
        from pyverilog.vparser.parser import VerilogParser

        outdir = tempfile.mkdtemp(prefix="pyverilog-")  # where PLY may write, if it must
        _PARSER = VerilogParser(outputdir=outdir, debug=False)
    return _PARSER


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
        run = tool(
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
        run = tool([*argv, arg_path(path)], cwd=src, timeout_s=timeout_s, log=log)
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
                ast = parser.parse(pyverilog_text(text))
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


def walk(node: Any, skip: tuple[type, ...] = ()) -> Iterator[Any]:
    """The node and all its descendants, depth first, in source order; nodes of the `skip`
    types (other than `node`) are yielded but not entered."""
    stack = [node]
    while stack:
        n = stack.pop()
        if n is None:
            continue
        yield n
        if skip and isinstance(n, skip) and n is not node:
            continue
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
