"""Numbers in paths and query strings out of every range: each endpoint answers problem+json —
422 for what is out of range, 404 for a revision number beyond any — never a plain-text 500
from the database. And whatever error escapes a handler is a problem+json 500 that is logged."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hwrepo.adapters.objectstore import result_prefix
from hwrepo.config import Settings
from hwrepo.domain import events
from hwrepo.domain.checks import Job
from hwrepo.domain.model import MAX_REVISION
from hwrepo.entrypoints.api.app import create_app
from hwrepo.service_layer import checks, jobs
from hwrepo.service_layer.backends import Backends
from tests.conftest import Actor
from tests.integration.helpers import (
    PROBLEM_JSON,
    assert_problem,
    create_project,
    upload,
    uploaded,
)

HUGE = [2**63 - 1, 2**63, 10**30]
NEGATIVE = [-1, -(2**63) - 1]
LOG = b"line one\nline two\n"
# A waveform the viewer's endpoints read (in a sandbox): valid, so that what is refused is the
# number.
VCD = b"$timescale 1ns $end\n$scope module top $end\n$var wire 1 ! b $end\n$upscope $end\n"
VCD += b"$enddefinitions $end\n#0\n0!\n#5\n1!\n"
QUERIES = {
    "/api/v1/projects/{owner}/{name}/revisions/{number}/checks/{check_id}/waveform/changes": {
        "signal": "top.b",
        "end": "10",
    }
}


@pytest.fixture
def quiet_api(settings: Settings, backends: Backends) -> Iterator[TestClient]:
    """The API answering server errors as a client sees them (not raised into the test)."""
    app = create_app(settings, backends, relay=False)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _with_a_check(api: TestClient, backends: Backends, alice: Actor) -> dict[str, str]:
    """alice/blinky with one revision and one finished check (a log, two violations)."""
    project = create_project(api, alice, "blinky")
    revision = uploaded(api, alice, "alice/blinky", {"rtl/top.v": b"module top; endmodule\n"})
    check_id = str(uuid.uuid4())
    job = Job(
        check_id=check_id,
        kind="rtl-lint",
        name="lint",
        inputs=[],
        project="alice/blinky",
        project_id=project["id"],
        revision=1,
        revision_id=revision["id"],
    )
    assert checks.record(backends, jobs.queued_event(job, {}))
    prefix = result_prefix(project["id"], 1, check_id, 1)
    backends.store.put_bytes(prefix + "artifacts/log.txt", LOG, "text/plain")
    backends.store.put_bytes(prefix + "artifacts/dump.vcd", VCD, "text/x-vcd")
    violations = [{"type": "LATCH", "severity": "warning"}, {"type": "X", "severity": "error"}]
    backends.store.put_json(prefix + "check.json", {"details": {"violations": violations}})
    finished = events.make_event(
        events.CheckFinished(
            check_id=check_id,
            run=1,
            revision_id=revision["id"],
            project_id=project["id"],
            number=1,
            kind="rtl-lint",
            name="lint",
            state="failed",
            summary="two findings",
            details=prefix + "check.json",
            artifacts=[
                {
                    "name": "log.txt",
                    "key": prefix + "artifacts/log.txt",
                    "media_type": "text/plain",
                    "size": len(LOG),
                },
                {
                    "name": "result.sarif",
                    "key": prefix + "artifacts/log.txt",
                    "media_type": "application/sarif+json",
                    "size": len(LOG),
                },
                {
                    "name": "dump.vcd",
                    "key": prefix + "artifacts/dump.vcd",
                    "media_type": "text/x-vcd",
                    "size": len(VCD),
                },
            ],
        ),
        id=str(uuid.uuid4()),
        project="alice/blinky",
        project_id=project["id"],
        revision=1,
    )
    assert checks.record(backends, finished)
    return {
        "owner": "alice",
        "name": "blinky",
        "number": "1",
        "check_id": check_id,
        "path": "rtl/top.v",
        "artifact": "log.txt",
        "member": "alice",
        "waiver_id": "w",
        "sha256": "0" * 64,
    }


def _integer_parameters(api: TestClient) -> list[tuple[str, str, str, str]]:
    """(method, path template, where, name) of every integer path or query parameter."""
    found = []
    for path, operations in api.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        for method, operation in operations.items():
            for param in operation.get("parameters", []):
                schema = param.get("schema", {})
                types = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", [])}
                if "integer" in types:
                    found.append((method, path, param["in"], param["name"]))
    return found


# Valid bodies of the endpoints that need one, so that what is refused is the number.
_EXTERNAL = "/api/v1/projects/{owner}/{name}/revisions/{number}/checks/external"
BODIES = {
    ("post", _EXTERNAL): {"name": "ci", "state": "queued"},
    ("patch", _EXTERNAL + "/{check_id}"): {"state": "running"},
    ("post", "/api/v1/projects/{owner}/{name}/revisions/{number}/threads"): {
        "anchor": {"kind": "revision"},
        "body": "a word on the revision",
    },
    ("post", "/api/v1/projects/{owner}/{name}/revisions/{number}/review"): {
        "verdict": "request_changes"
    },
}


def _expected(where: str, name: str, value: int) -> int:
    if where == "path" and name == "number" and value > MAX_REVISION:
        return 404  # a revision number beyond any: not there
    return 422


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_every_number_out_of_range_is_a_problem_never_a_500(
    quiet_api: TestClient, backends: Backends, alice: Actor
) -> None:
    api = quiet_api
    valid = _with_a_check(api, backends, alice)
    params = _integer_parameters(api)
    named = {(m, p, n) for m, p, _, n in params}
    prefix = "/api/v1/projects/{owner}/{name}/revisions/{number}"
    for expected in [
        ("get", "/api/v1/projects", "page"),
        ("get", "/api/v1/projects", "per_page"),
        ("get", "/api/v1/projects/{owner}/{name}/revisions", "page"),
        ("get", prefix, "number"),
        ("get", prefix + "/files/{path}", "number"),
        ("get", prefix + "/archive.zip", "number"),
        ("get", prefix + "/checks", "number"),
        ("post", prefix + "/checks/rerun", "number"),
        ("get", prefix + "/checks/{check_id}", "number"),
        ("get", prefix + "/checks/{check_id}/log", "number"),
        ("get", prefix + "/checks/{check_id}/log", "offset"),
        ("get", prefix + "/checks/{check_id}/log", "limit"),
        ("get", prefix + "/checks/{check_id}/violations", "page"),
        ("get", prefix + "/checks/{check_id}/violations", "per_page"),
        ("get", prefix + "/checks/{check_id}/sarif", "number"),
    ]:
        assert expected in named, expected

    def valid_calls(methods: set[str]) -> None:
        """Every one answers with valid values (so a 404 below is the number's)."""
        for method, template, _, _ in params:
            if template.endswith(("/events", "/external/{check_id}")):
                # a live stream answers 200 and never ends (503 without NATS here); the check
                # here is built-in, not one an outside system reported
                continue
            if method in methods:
                r = api.request(
                    method.upper(),
                    template.format(**valid),
                    params=QUERIES.get(template),
                    headers=alice.headers,
                    json=BODIES.get((method, template)),
                )
                assert r.status_code in {200, 201, 202}, (method, template, r.status_code, r.text)

    valid_calls({"get"})
    for method, template, where, name in params:
        for value in [*HUGE, *NEGATIVE, *([0] if name not in ("offset", "start") else [])]:
            url = template.format(**({**valid, name: str(value)} if where == "path" else valid))
            query = {
                **QUERIES.get(template, {}),
                **({name: str(value)} if where == "query" else {}),
            }
            r = api.request(
                method.upper(),
                url,
                params=query,
                headers=alice.headers,
                json=BODIES.get((method, template)),
            )
            call = f"{method.upper()} {url} {query or ''}"
            if (name, value) == ("offset", 2**63 - 1):  # the largest offset: past the end
                assert (r.status_code, r.content) == (200, b""), call
                continue
            if (name, value) == ("end", 2**63 - 1):  # a waveform window to the end of time
                assert r.status_code == 200, call
                continue
            assert r.headers.get("content-type") == PROBLEM_JSON, (call, r.status_code, r.text)
            problem = assert_problem(r, _expected(where, name, value))
            if problem["status"] == 404:
                assert problem["detail"] == f"alice/blinky has no revision {value}", call
            else:
                assert name in problem["detail"], (call, problem)
    valid_calls({"post"})  # the re-runs, last: they queue the check again

    # The server-rendered pages and the upload's base revision, likewise.
    for value in [*HUGE, *NEGATIVE, 0]:
        for url, query in [("/", {"page": value}), ("/alice/blinky", {"page": value})]:
            r = api.get(url, params=query)
            assert r.headers.get("content-type") != "text/plain; charset=utf-8", (url, r.text)
            assert r.status_code in {404, 422}, (url, query, r.status_code, r.text)
            assert r.headers["content-type"] == PROBLEM_JSON
        r = upload(api, alice, "alice/blinky", {"b.txt": b"b"}, base=value)
        problem = assert_problem(r, 422)
        assert re.search(r"base revision -?\d+ does not exist", problem["detail"]), problem
    assert uploaded(api, alice, "alice/blinky", {"b.txt": b"b"})["number"] == 2


def test_an_unexpected_error_is_a_logged_problem_json_500(
    quiet_api: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> Any:
        raise RuntimeError("a bug in a handler")

    quiet_api.app.add_api_route("/api/v1/broken", broken)  # type: ignore[attr-defined]
    with caplog.at_level(logging.ERROR, logger="hwrepo.entrypoints.api.problems"):
        r = quiet_api.get("/api/v1/broken")
    problem = assert_problem(r, 500)
    assert problem["title"] == "Internal server error"
    assert "a bug in a handler" not in r.text  # its words stay in the log
    (record,) = [r for r in caplog.records if r.name == "hwrepo.entrypoints.api.problems"]
    assert "GET /api/v1/broken" in record.getMessage()
    assert record.exc_info is not None and "a bug in a handler" in str(record.exc_info[1])
