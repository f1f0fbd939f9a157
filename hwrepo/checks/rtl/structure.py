"""Check kind `rtl-structure`: the modules, ports, parameters, instances and hierarchy of an RTL
design, read with pyverilog (Verilog-2001).

Verdicts: `passed` with the structure; `failed` when a file has a syntax error (pyverilog's or the
preprocessor's, with file:line), a module is defined twice, or no module is found; `errored` when
a file is SystemVerilog (pyverilog reads Verilog-2001 only; there is no fallback to another
reader, the Verilog-2001 files' structure is still reported) or a tool fails.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from typing import Any

from hwrepo.checks.core.kind import (
    Artifact,
    CheckKind,
    CheckResult,
    Job,
    PlannedJob,
    RevisionFiles,
    Workspace,
)
from hwrepo.checks.rtl.common import (
    DesignParams,
    ParsedDesign,
    Unit,
    evaluate,
    expr_text,
    int_or_text,
    module_parameters,
    module_ports,
    parse_design,
    plan_rtl_jobs,
    pyverilog_version,
)

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


class RtlStructure(CheckKind):
    name = "rtl-structure"
    description = (
        "Modules, ports, parameters, instances and the hierarchy of each RTL design (pyverilog)."
    )

    def available(self) -> str | None:
        if shutil.which("iverilog") is None:
            return "iverilog (Icarus Verilog, pyverilog's preprocessor) is not on PATH"
        try:
            import pyverilog  # noqa: F401
        except ImportError:
            return "the Python package pyverilog is not installed"
        return None

    def plan(self, revision: RevisionFiles) -> list[PlannedJob]:
        return plan_rtl_jobs(revision, self.name)

    def run(self, job: Job, ws: Workspace, heartbeat: Callable[[], None]) -> CheckResult:
        start = time.monotonic()
        params = DesignParams.from_params(job.params)
        ws.log.parent.mkdir(parents=True, exist_ok=True)
        with ws.log.open("a", encoding="utf-8") as fh:
            fh.write(f"rtl-structure of {params.root or '.'}: {', '.join(params.sources)}\n\n")
        parsed = parse_design(
            params, src=ws.src, tmp=ws.tmp, cache=ws.cache, log=ws.log, timeout_s=job.timeout_s
        )
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
        with ws.log.open("a", encoding="utf-8") as fh:
            for err in found["errors"]:
                fh.write(f"error: {err['file']}:{err['line']}: {err['message']}\n")
            for sv in parsed.systemverilog:
                fh.write(f"SystemVerilog: {sv.file}: {sv.message}\n")
            fh.write(f"{len(found['modules'])} modules, tops: {found['tops']}\n")
        artifacts = [
            Artifact("structure.json", out, "application/json", "modules, ports, hierarchy"),
            Artifact("log.txt", ws.log, "text/plain", "preprocessor and parser log"),
        ]
        if time.monotonic() - start > job.timeout_s or any(
            "timed out" in e.message for e in parsed.tool_errors
        ):
            return CheckResult("timed_out", "reading the design took too long", details, artifacts)
        state, summary = "passed", _summary(found)
        if parsed.tool_errors:
            state, summary = "errored", str(parsed.tool_errors[0])
        elif parsed.systemverilog:
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
        return CheckResult(state, summary, details, artifacts)
