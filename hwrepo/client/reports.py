"""Reports of a revision's checks for other CI systems: one JUnit XML (junitparser) that test
report views show — every simulation test as a test case; DRC, ERC and lint findings that block
as failed cases, one per violation type per check — and one SARIF 2.1.0 log of every check's
findings, for code-scanning views."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from junitparser import Error, Failure, JUnitXml, Skipped, TestCase, TestSuite

from hwrepo.client.api import Api

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def _violations(api: Api, check: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    page = 1
    while True:
        body = api.json(
            "GET",
            check["url"].removeprefix("/api/v1") + "/violations",
            params={"page": page, "per_page": 1000},
        )
        found += body["items"]
        if page * body["per_page"] >= body["total"]:
            return found
        page += 1


def _blocking(v: dict[str, Any], fail_on: list[str]) -> bool:
    return v.get("severity") in fail_on and not v.get("waived") and not v.get("excluded")


def details_of(api: Api, checks: dict[str, Any]) -> list[dict[str, Any]]:
    return [api.json("GET", c["url"].removeprefix("/api/v1")) for c in checks["checks"]]


def junit(api: Api, project: str, number: int, checks: dict[str, Any]) -> JUnitXml:
    xml = JUnitXml(f"{project} revision {number}")
    for check in details_of(api, checks):
        suite = TestSuite(f"{check['kind']}: {check['name']}")
        details = check.get("details") or {}
        state = check["state"]
        tests = details.get("tests") if check["kind"] == "simulation" else None
        if tests:
            for t in tests:
                case = TestCase(t["name"], classname=t.get("module") or check["name"])
                case.time = float(t.get("wall_s") or 0)
                if t["status"] == "failed":
                    case.result = [_with_text(Failure(t.get("message") or "failed"), t)]
                elif t["status"] in {"errored", "not_run"}:
                    case.result = [_with_text(Error(t.get("message") or t["status"]), t)]
                elif t["status"] == "skipped":
                    case.result = [Skipped(t.get("message") or "skipped")]
                suite.add_testcase(case)
        elif "violations" in details and state in {"passed", "failed"}:
            fail_on = list(details.get("fail_on") or ["error"])
            by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for v in _violations(api, check) if state == "failed" else []:
                if _blocking(v, fail_on):
                    by_type[v["type"]].append(v)
            for type_, found in sorted(by_type.items()):
                case = TestCase(type_, classname=f"{check['kind']}.{check['name']}")
                failure = Failure(f"{len(found)} x {type_}: {found[0].get('description', '')}")
                failure.text = "\n".join(_where(v) for v in found)
                case.result = [failure]
                suite.add_testcase(case)
            if not by_type:
                suite.add_testcase(TestCase("no blocking findings", classname=check["kind"]))
        else:
            case = TestCase(check["name"], classname=check["kind"])
            if state == "failed":
                case.result = [Failure(check.get("summary") or "failed")]
            elif state != "passed":
                case.result = [Error(f"{state}: {check.get('summary', '')}")]
            suite.add_testcase(case)
        suite.update_statistics()
        xml.add_testsuite(suite)
    xml.update_statistics()
    return xml


def _with_text(result: Failure | Error, test: dict[str, Any]) -> Failure | Error:
    if test.get("traceback"):
        result.text = test["traceback"]
    return result


def _where(v: dict[str, Any]) -> str:
    if v.get("file"):
        return f"{v['file']}:{v.get('line') or 0}: {v.get('description', '')}"
    items = ", ".join(i.get("description") or i.get("uuid") or "" for i in v.get("items") or [])
    return f"{v.get('description', '')} ({items})" if items else v.get("description", "")


def sarif(api: Api, checks: dict[str, Any]) -> dict[str, Any]:
    """Every check's own SARIF runs in one log, each run named after its check."""
    runs: list[dict[str, Any]] = []
    for check in details_of(api, checks):
        if not any(a["name"] == "result.sarif" for a in check.get("artifacts") or []):
            continue
        doc = json.loads(
            api.request("GET", check["url"].removeprefix("/api/v1") + "/sarif").content
        )
        for run in doc.get("runs", []):
            run["automationDetails"] = {"id": f"{check['kind']}/{check['name']}/"}
            runs.append(run)
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": runs}


def write_junit(xml: JUnitXml, path: Path) -> None:
    xml.write(str(path), pretty=True)


def write_sarif(doc: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
