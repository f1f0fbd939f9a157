"""The RTL kinds inside the sandbox: pyverilog (with Icarus' preprocessor) for the structure,
`verilator --lint-only -Wall` and hwrepo's rules for the lint, and the paths a design names
that leave the revision.

The entry points `structure` and `lint` get the job's request (see `rtl.kind.RtlKind`) and
answer as `core/findings.py` describes. A `` `include `` or `$readmemh`-like file name that
points outside the revision is reported where it is written ("include outside the revision:
/x/y"): a syntax error of the structure check, a `path-outside-revision` error of the lint —
never looked for, never passed over.

Verilator's findings are read from its SARIF output (`--diagnostics-sarif`). Verilator 5.48 writes
invalid JSON when no diagnostic carries a rule code (a missing comma after an empty `rules`
array); that one defect is repaired, and when the SARIF still cannot be read, or disagrees with
the text output on the number of diagnostics, the text lines `%Warning-CODE: file:line:col: ...`
(with their continuation lines) are parsed instead. `details["source"]` says which was used.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwrepo.checks.core.kind import Workspace
from hwrepo.checks.core.violations import Violation
from hwrepo.checks.rtl.job import DesignParams
from hwrepo.checks.rtl.parse import (
    ParsedDesign,
    SourceError,
    Unit,
    evaluate,
    expr_text,
    int_or_text,
    module_parameters,
    module_ports,
    parse_design,
    pyverilog_version,
)
from hwrepo.checks.rtl.rules import HWREPO_RULES, design_rules
from hwrepo.checks.rtl.verilog import (
    HDL_SUFFIXES,
    arg_path,
    describe_reference,
    outside_references,
    revision_path,
)
from hwrepo.checks.run.inside import ToolRun, tool
from hwrepo.checks.run.installed import verilator_env, verilator_version

WORKSPACE = Workspace(Path("/job"), Path("/cache"))
OUTSIDE = "path-outside-revision"
SARIF = "application/sarif+json"


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


MAX_DEPTH = 64


MAX_NODES = 5000  # hierarchy nodes expanded in all; deeper nodes are marked "truncated"


def _instances(mod: Any) -> list[tuple[Any, Any, bool]]:
    """(InstanceList, Instance, inside a generate construct) for every instance of a module."""
    from pyverilog.vparser.ast import Function, GenerateStatement, InstanceList, Task

    out: list[tuple[Any, Any, bool]] = []

    def visit(node: Any, in_generate: bool) -> None:
        if isinstance(node, Function | Task):
            return
        if isinstance(node, InstanceList):
            out.extend((node, inst, in_generate) for inst in node.instances)
            return
        generate = in_generate or isinstance(node, GenerateStatement)
        for child in node.children():
            if child is not None:
                visit(child, generate)

    for item in mod.items:
        visit(item, False)
    return out


def _param_overrides(inst: Any) -> list[tuple[str | None, Any]]:
    return [(p.paramname, p.argname) for p in inst.parameterlist or []]


def describe_module(mod: Any, unit: Unit) -> dict[str, Any]:
    params = module_parameters(mod)
    env = {p.name: p.value for p in params}
    file, line = unit.locate(mod.lineno)
    instances = []
    for _ilist, inst, in_generate in _instances(mod):
        overrides = {
            (name if name else f"#{i}"): expr_text(value)
            for i, (name, value) in enumerate(_param_overrides(inst))
        }
        connections = {
            (p.portname if p.portname else f"#{i}"): expr_text(p.argname)
            for i, p in enumerate(inst.portlist or [])
        }
        record: dict[str, Any] = {
            "name": inst.name,
            "module": inst.module,
            "parameters": overrides,
            "connections": connections,
            "file": unit.locate(inst.lineno)[0],
            "line": unit.locate(inst.lineno)[1],
        }
        if inst.array is not None:
            record["array"] = expr_text(inst.array)
        if in_generate:
            record["generate"] = True
        instances.append(record)
    return {
        "name": mod.name,
        "file": file,
        "line": line,
        "parameters": [
            {
                "name": p.name,
                "default": p.default,
                "value": p.value,
                "local": p.local,
                "line": unit.locate(p.lineno)[1],
            }
            for p in params
        ],
        "ports": [
            {
                "name": p.name,
                "direction": p.direction,
                "type": p.net,
                "signed": p.signed,
                "width": p.width,
                "bits": p.bits,
                "line": unit.locate(p.lineno)[1],
            }
            for p in module_ports(mod, env)
        ],
        "instances": instances,
    }


def _child_overrides(
    child: Any, inst: Any, parent_env: dict[str, int | None]
) -> dict[str, tuple[int | None, str]]:
    """The parameter overrides of an instance: name -> (value in the parent, expression)."""
    public = [p.name for p in module_parameters(child) if not p.local]
    out: dict[str, tuple[int | None, str]] = {}
    for i, (name, value) in enumerate(_param_overrides(inst)):
        key = name if name else (public[i] if i < len(public) else None)
        if key is not None:
            out[key] = (evaluate(value, parent_env), expr_text(value))
    return out


def hierarchy(modules: dict[str, Any], tops: list[str]) -> dict[str, Any]:
    """{top: node}; a node is {"module", "parameters" (numbers where they resolve, else the
    expression), "children": [{"instance", ...node}]}; "generate": true for an instance inside a
    generate construct (shown once however often it is generated), "missing": true for modules
    the design does not define, "recursive": true where a module would contain itself,
    "truncated": true past MAX_NODES."""
    budget = [MAX_NODES]

    def node(name: str, overrides: dict[str, tuple[int | None, str]], path: list[str]) -> dict:
        mod = modules.get(name)
        if mod is None:
            return {"module": name, "missing": True, "children": []}
        params = module_parameters(mod, {k: v for k, (v, _text) in overrides.items()})
        env = {p.name: p.value for p in params}
        shown = {}
        for p in params:
            text = overrides[p.name][1] if p.name in overrides and not p.local else p.default
            shown[p.name] = int_or_text(p.value, text)
        out: dict[str, Any] = {"module": name, "parameters": shown, "children": []}
        if name in path or len(path) >= MAX_DEPTH:
            out["recursive"] = True
            return out
        budget[0] -= 1
        if budget[0] < 0:
            out["truncated"] = True
            return out
        for _ilist, inst, in_generate in _instances(mod):
            child_mod = modules.get(inst.module)
            child_over = _child_overrides(child_mod, inst, env) if child_mod is not None else {}
            child: dict[str, Any] = {"instance": inst.name}
            if in_generate:
                child["generate"] = True
            child.update(node(inst.module, child_over, [*path, name]))
            out["children"].append(child)
        return out

    return {top: node(top, {}, []) for top in tops}


def structure(parsed: ParsedDesign) -> dict[str, Any]:
    """The structure part of the details: modules, tops, hierarchy, missing modules, errors."""
    modules: dict[str, Any] = {}
    records = []
    errors = [e.as_dict() for e in parsed.syntax_errors + parsed.tool_errors]
    for mod, unit in parsed.modules():
        record = describe_module(mod, unit)
        if mod.name in modules:
            first = next(r for r in records if r["name"] == mod.name)
            errors.append(
                {
                    "file": record["file"],
                    "line": record["line"],
                    "message": f"module {mod.name} is already defined at "
                    f"{first['file']}:{first['line']}",
                }
            )
            continue
        modules[mod.name] = mod
        records.append(record)
    instantiated = {i["module"] for r in records for i in r["instances"]}
    tops = [r["name"] for r in records if r["name"] not in instantiated]
    missing = sorted(instantiated - set(modules))
    return {
        "modules": records,
        "tops": tops,
        "hierarchy": hierarchy(modules, tops),
        "missing_modules": missing,
        "errors": errors,
    }


def _summary(details: dict[str, Any]) -> str:
    n = len(details["modules"])
    tops = ", ".join(details["tops"]) or "none"
    text = f"{n} module{'s' if n != 1 else ''}, top: {tops}"
    if details["missing_modules"]:
        text += f"; not defined here: {', '.join(details['missing_modules'])}"
    return text


# -- paths that leave the revision -------------------------------------------------------------


def references(ws: Workspace, params: DesignParams) -> list[SourceError]:
    """The design's `` `include``s and file names that point outside the revision."""
    files: dict[str, str] = {}
    for path in sorted(p for p in ws.src.rglob("*") if p.is_file()):
        rel = path.relative_to(ws.src).as_posix()
        if rel.endswith(HDL_SUFFIXES):
            files[rel] = path.read_text(encoding="utf-8", errors="replace")
    return [
        SourceError(f, line, describe_reference(what, target))
        for f, line, what, target in outside_references(files, params.include_dirs)
    ]


def _log(ws: Workspace, text: str) -> None:
    ws.log.parent.mkdir(parents=True, exist_ok=True)
    with ws.log.open("a", encoding="utf-8") as fh:
        fh.write(text)


def _response(
    outcome: tuple[str, str] | None,
    details: dict[str, Any],
    artifacts: list[dict[str, str]],
    violations: list[Violation] | None = None,
) -> dict[str, Any]:
    return {
        "outcome": {"state": outcome[0], "summary": outcome[1]} if outcome else None,
        "details": details,
        "violations": [v.to_dict() for v in violations or []],
        "artifacts": artifacts,
    }


# -- rtl-structure -----------------------------------------------------------------------------


def structure_check(request: dict[str, Any]) -> dict[str, Any]:
    ws = WORKSPACE
    start = time.monotonic()
    timeout_s = float(request["timeout_s"])
    params = DesignParams.from_params(request["params"])
    _log(ws, f"rtl-structure of {params.root or '.'}: {', '.join(params.sources)}\n\n")
    outside = references(ws, params)
    parsed = parse_design(
        params, src=ws.src, tmp=ws.tmp, cache=ws.cache, log=ws.log, timeout_s=timeout_s
    )
    parsed.syntax_errors[:0] = outside
    found = structure(parsed)
    details: dict[str, Any] = {
        "tool": "pyverilog",
        "version": pyverilog_version(),
        "preprocessor": parsed.preprocessor,
        "files": params.sources,
        "parsed_files": parsed.parsed_files,
        "systemverilog_files": [e.as_dict() for e in parsed.systemverilog],
        "fallback": None,
        **found,
    }
    if params.top:
        details["configured_top"] = params.top
    out = ws.out / "structure.json"
    out.write_text(json.dumps(details, indent=2), encoding="utf-8")
    log = ""
    for err in found["errors"]:
        log += f"error: {err['file']}:{err['line']}: {err['message']}\n"
    for sv in parsed.systemverilog:
        log += f"SystemVerilog: {sv.file}: {sv.message}\n"
    _log(ws, log + f"{len(found['modules'])} modules, tops: {found['tops']}\n")
    artifacts = [
        {"name": "structure.json", "description": "modules, ports, hierarchy"},
        {"name": "log.txt", "description": "preprocessor and parser log"},
    ]
    if time.monotonic() - start > timeout_s or any(
        "timed out" in e.message for e in parsed.tool_errors
    ):
        return _response(("timed_out", "reading the design took too long"), details, artifacts)
    state, summary = "passed", _summary(found)
    if parsed.tool_errors and not outside:
        state, summary = "errored", str(parsed.tool_errors[0])
    elif parsed.systemverilog and not outside:
        files = "; ".join(f"{e.file} {e.message}" for e in parsed.systemverilog)
        state = "errored"
        summary = f"pyverilog reads Verilog-2001 only: {files}"
        if found["modules"]:
            summary += f" (read the other files: {_summary(found)})"
    elif found["errors"]:
        first = found["errors"][0]
        more = len(found["errors"]) - 1
        state = "failed"
        summary = f"{first['file']}:{first['line']}: {first['message']}" + (
            f" (and {more} more)" if more else ""
        )
    elif not found["modules"]:
        state, summary = "failed", "no module definition found"
    return _response((state, summary), details, artifacts)


# -- rtl-lint ----------------------------------------------------------------------------------


def lint_check(request: dict[str, Any]) -> dict[str, Any]:
    ws = WORKSPACE
    start = time.monotonic()
    timeout_s = float(request["timeout_s"])
    params = DesignParams.from_params(request["params"])
    sarif_in = ws.tmp / "verilator.sarif"
    argv = verilator_argv(params, sarif_in, ws.tmp / "verilator-obj")
    details: dict[str, Any] = {
        "tool": "verilator",
        "verilator_version": verilator_version(),
        "command": argv,
        "files": params.sources,
        "fail_on": params.fail_on,
    }
    artifacts = [{"name": "log.txt", "description": "Verilator and preprocessor log"}]
    ws.log.parent.mkdir(parents=True, exist_ok=True)
    outside = [
        Violation(
            type=OUTSIDE,
            severity="error",
            description=ref.message,
            file=ref.file,
            line=ref.line,
            rule=OUTSIDE,
        )
        for ref in references(ws, params)
    ]
    try:
        run = tool(argv, cwd=ws.src, timeout_s=timeout_s, env=verilator_env(), log=ws.log)
    except OSError as exc:
        return _response(("errored", f"cannot run verilator: {exc}"), details, artifacts)
    if run.timed_out:
        return _response(("timed_out", f"verilator ran over {timeout_s:.0f} s"), details, artifacts)
    sarif_text = sarif_in.read_text(errors="replace") if sarif_in.is_file() else None
    if sarif_text is not None:
        (ws.out / "verilator.sarif").write_text(sarif_text, encoding="utf-8")
        artifacts.append(
            {"name": "verilator.sarif", "description": "Verilator's own SARIF output, as written"}
        )
    found = interpret_verilator(run, sarif_text, ws.src)
    details["exit_code"] = run.exit_code
    details["source"] = found.source
    if found.problem is not None and not outside:
        return _response(("errored", found.problem), details, artifacts)
    violations = [
        *outside,
        *(v for v in found.violations if not _about_outside(v, outside)),
    ]
    details["hwrepo_rules"] = _rules(params, ws, timeout_s, start, violations)
    log = ""
    for v in violations:
        where = f"{v.file}:{v.line}" + (f":{v.column}" if v.column else "")
        log += f"{where}: {v.severity} {v.type}: {v.description.splitlines()[0]}\n"
    _log(ws, log)
    if time.monotonic() - start > timeout_s:
        return _response(("timed_out", "the lint ran over its time"), details, artifacts)
    return _response(None, details, artifacts, violations)


def _about_outside(v: Violation, outside: list[Violation]) -> bool:
    """Verilator's own error for an include that is not in the sandbox, already reported."""
    return any(o.file == v.file and o.line == v.line for o in outside) and v.severity == "error"


def _rules(
    params: DesignParams, ws: Workspace, timeout_s: float, start: float, into: list[Violation]
) -> dict[str, Any]:
    info: dict[str, Any] = {
        "tool": "pyverilog",
        "version": pyverilog_version(),
        "rules": HWREPO_RULES,
    }
    remaining = max(timeout_s - (time.monotonic() - start), 1.0)
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
