"""hwrepo's design rules on the pyverilog AST (inside the sandbox, with rtl-lint).

All `warning`, type prefixed `hwrepo-`:

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

from collections.abc import Iterator
from typing import Any

from hwrepo.checks.core.violations import Violation
from hwrepo.checks.rtl.parse import (
    ParsedDesign,
    Unit,
    evaluate,
    int_value,
    module_ports,
    parameter_env,
    walk,
    width_bits,
)

HWREPO_RULES = {
    "hwrepo-latch": "latch inferred in a combinational always block",
    "hwrepo-blocking-in-clocked": "blocking assignment in a clocked always block",
    "hwrepo-multiple-drivers": "signal driven from more than one always block or assignment",
    "hwrepo-implicit-net": "undeclared identifier in a continuous assignment or port connection",
    "hwrepo-unused-input": "input port that is never read",
}


def _ast() -> Any:
    import pyverilog.vparser.ast as ast

    return ast


def _items(node: Any, skip: tuple[type, ...]) -> Iterator[Any]:
    """Descendants of `node` (itself included), not entering nodes of the `skip` types."""
    return walk(node, skip)


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
