"""Who may do what, for every endpoint the running API has: each path and method of its OpenAPI
document, its HTML pages and the documentation routes (listed from the app's routes), the event
stream (opened, its status read, closed), tried by every role on a public and on a private
project, against a real API process with real users, tokens, revisions, checks a worker ran, a
comparison and a review thread.

The expectations come from RULES below, stated once; an endpoint that no rule classifies fails
the test, naming the rule to add. A private project answers 404, in the words used for a
project that does not exist, to anyone without a role in it, on every endpoint."""

from __future__ import annotations

import itertools
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import httpx
import pytest

from hwrepo.checks.kicad.kind import unavailable
from hwrepo.checks.simulation.kind import SimulationKind
from hwrepo.config import Settings
from hwrepo.entrypoints.api.app import create_app
from hwrepo.service_layer import users
from hwrepo.service_layer.backends import Backends
from tests.conftest import Actor, make_actor
from tests.integration.helpers import PROBLEM_JSON, sha256
from tests.integration.test_comparisons import DESIGNS, board_revision_two
from tests.integration.test_pipeline import SIM_CACHE
from tests.pipeline import (
    api_process,
    new_project,
    pipeline_stack,
    running_worker,
    upload_dir,
    wait_for_checks,
)

pytestmark = [
    pytest.mark.needs(unavailable()),
    pytest.mark.needs(SimulationKind().available()),
]

PROJECT = "/api/v1/projects/{owner}/{name}"
SAFE = {"GET", "HEAD", "OPTIONS"}


# -- the rules ------------------------------------------------------------------------------------


class Need(Enum):
    """What an endpoint asks of its caller."""

    ANYONE = "anyone, signed in or not, whatever the project"
    SIGNED_IN = "any user with a token (not about one project)"
    SIGN_IN_PAGE = "a page for a signed-in user: anyone else is sent to /login (303)"
    BROWSER_FORM = "a browser's form: without its session and CSRF token refused (403)"
    SESSION_FORM = "a signed-in browser's form: without a browser session 401"
    READ = "read access to the project (public, or a role in it)"
    REVIEWER = "the reviewer role or higher"
    MAINTAINER = "the maintainer role or higher"
    OWNER = "the owner (or a site admin)"
    AUTHOR = "the reviewer role and being the comment's author"


@dataclass(frozen=True)
class Rule:
    methods: str  # a regular expression over the method
    path: str  # a regular expression over the path template (after PROJECT is put in)
    need: Need

    def matches(self, method: str, template: str) -> bool:
        path = self.path.replace("PROJECT", re.escape(PROJECT))
        return bool(re.fullmatch(self.methods, method) and re.fullmatch(path, template))


# First match wins. Any GET under a project is a read of it, so a new one is covered as such.
RULES = [
    Rule("GET", r"/healthz|/readyz|/metrics|/openapi\.json|/docs(/.*)?|/redoc", Need.ANYONE),
    Rule("GET", r"/|/api/v1/projects", Need.ANYONE),
    Rule("POST", r"/api/v1/projects", Need.SIGNED_IN),
    Rule(".*", r"/api/v1/user(/.*)?", Need.SIGNED_IN),
    Rule("GET", r"/login", Need.ANYONE),
    Rule("GET", r"/settings/tokens|/upload", Need.SIGN_IN_PAGE),
    # Registration is off unless the site turns it on: the page and its form refuse everyone.
    Rule("GET|POST", r"/register|/login|/logout", Need.BROWSER_FORM),
    Rule("POST", r"/settings/tokens(/\{token_id\}/revoke)?", Need.SESSION_FORM),
    # the pages' review forms (threads, replies, edits, resolve, verdicts): a browser session's
    Rule(
        "POST",
        r"/\{owner\}/\{name\}/(revisions/\{number\}/(threads|review)|threads/.*)",
        Need.SESSION_FORM,
    ),
    # The pages of a project show what its API shows the same caller.
    Rule("GET", r"/\{owner\}/\{name\}(/.*)?", Need.READ),
    Rule("GET", r"PROJECT(/.*)?", Need.READ),
    Rule("DELETE", r"PROJECT", Need.OWNER),
    Rule("PUT|DELETE", r"PROJECT/members/\{member\}", Need.OWNER),
    Rule("PATCH", r"PROJECT/threads/\{thread_id\}/comments/\{comment_id\}", Need.AUTHOR),
    Rule("POST", r"PROJECT/threads/\{thread_id\}/waiver", Need.MAINTAINER),
    Rule("POST|PATCH", r"PROJECT/threads/\{thread_id\}(/comments)?", Need.REVIEWER),
    Rule("POST", r"PROJECT/revisions/\{number\}/(threads|review)", Need.REVIEWER),
    Rule("PATCH", r"PROJECT", Need.MAINTAINER),
    Rule("POST|DELETE", r"PROJECT/waivers(/\{waiver_id\})?", Need.MAINTAINER),
    Rule(
        "POST|PUT",
        r"PROJECT/(blobs/missing|blobs/\{sha256\}|revisions|revisions/commit)",
        Need.MAINTAINER,
    ),
    Rule(
        "POST|PATCH",
        r"PROJECT/revisions/\{number\}/checks/(.*/)?(rerun|external.*)",
        Need.MAINTAINER,
    ),
]


def classify(method: str, template: str) -> Need:
    for rule in RULES:
        if rule.matches(method, template):
            return rule.need
    raise AssertionError(
        f"no rule says who may {method} {template}: add a Rule to RULES in "
        f"tests/integration/test_authz_matrix.py naming what it needs "
        f"({', '.join(n.name for n in Need)})"
    )


@dataclass(frozen=True)
class Role:
    label: str
    rank: int  # 0 outsider, 1 reader ... 4 owner, 5 site admin; -1 anonymous
    scope: str = "write"

    @property
    def member(self) -> bool:
        return self.rank >= 1


ROLES = [
    Role("anonymous", -1),
    Role("outsider", 0),
    Role("reader", 1),
    Role("reviewer", 2),
    Role("maintainer", 3),
    Role("owner", 4),
    Role("admin", 5),
    Role("maintainer (read token)", 3, "read"),
    Role("maintainer (checks token)", 3, "checks"),
]
RANK = {Need.REVIEWER: 2, Need.MAINTAINER: 3, Need.OWNER: 4}
ALLOWED = "allowed"


def expected(need: Need, role: Role, private: bool, method: str, template: str) -> int | str:
    """The status the rules give, or ALLOWED (one of the operation's documented successes)."""
    if need is Need.ANYONE:
        return ALLOWED
    if need is Need.BROWSER_FORM:
        return 403
    if need is Need.SESSION_FORM:
        return 401
    if need is Need.SIGN_IN_PAGE:
        return 303 if role.rank < 0 else ALLOWED
    if method not in SAFE and role.scope == "read":
        return 403
    if method not in SAFE and role.scope == "checks" and "/checks/external" not in template:
        return 403
    if need is Need.SIGNED_IN:
        return 401 if role.rank < 0 else ALLOWED
    if private and not role.member:
        return 404
    if need is Need.READ:
        return ALLOWED
    if role.rank < 0:
        return 401
    if need is Need.AUTHOR:  # the comment was written by the reviewer
        return ALLOWED if role.label == "reviewer" else 403
    return ALLOWED if role.rank >= RANK[need] else 403


def test_every_route_is_classified_and_an_unknown_one_fails(tmp_path: Path) -> None:
    """No network: the rules against the app's own routes, and an endpoint nobody classified."""
    for method, template, _ in endpoints(tmp_path):
        classify(method, template)
    with pytest.raises(AssertionError, match="add a Rule to RULES"):
        classify("POST", PROJECT + "/launch-missiles")


# -- the endpoints --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    method: str
    template: str
    successes: frozenset[int]
    stream: bool = False


def endpoints(tmp_path: Path, spec: dict[str, Any] | None = None) -> list[tuple[str, str, Any]]:
    """(method, template, operation or None) for every OpenAPI operation, and for every GET
    route the app leaves out of its document (HTML pages, the documentation)."""
    app = create_app(Settings(data_dir=tmp_path / "routes", seed_demo_projects=False))
    spec = spec or app.openapi()
    found = [
        (method.upper(), path, op)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
    ]
    documented = {path for path in spec["paths"]}
    for route in _routes(app.routes):
        if route.path not in documented:
            found += [(m, route.path, None) for m in sorted(route.methods or ()) if m != "HEAD"]
    return found


def _routes(routes: list[Any]) -> Iterator[Any]:
    """The app's routes, also those inside included routers."""
    for route in routes:
        if hasattr(route, "effective_candidates"):
            yield from _routes(route.effective_candidates())
        elif hasattr(route, "path") and hasattr(route, "methods"):
            yield route


def _endpoint(method: str, template: str, op: dict[str, Any] | None) -> Endpoint:
    if op is None:  # a page: shown, or a form's redirect to the page it leads to
        return Endpoint(method, template, frozenset({200, 303}))
    codes = frozenset(int(c) for c in op["responses"] if c.isdigit() and c.startswith("2"))
    content = op["responses"].get("200", {}).get("content", {})
    return Endpoint(method, template, codes, stream="text/event-stream" in content)


# -- the world: users, projects, revisions, checks, threads ---------------------------------------


@dataclass
class World:
    http: httpx.Client
    backends: Backends
    actors: dict[str, Actor | None]
    params: dict[str, dict[str, str]] = field(default_factory=dict)  # by project name
    spare_threads: dict[str, list[str]] = field(default_factory=dict)  # one per waiving call
    counter: Iterator[int] = field(default_factory=itertools.count)

    @property
    def owner(self) -> Actor:
        actor = self.actors["owner"]
        assert actor is not None
        return actor

    def ok(self, method: str, url: str, **kw: Any) -> dict[str, Any]:
        r = self.http.request(method, url, headers=self.owner.headers, **kw)
        assert r.status_code < 300, (method, url, r.status_code, r.text)
        return r.json() if r.content else {}

    def project(self, name: str, visibility: str) -> str:
        """A project of the owner with the reader, reviewer and maintainer as members."""
        full = new_project(self.http, self.owner.headers, name, visibility=visibility)
        for label in ("reader", "reviewer", "maintainer"):
            actor = self.actors[label]
            assert actor is not None
            self.ok("PUT", f"/api/v1/projects/{full}/members/{actor.name}", json={"role": label})
        return full


BLOB = b"module blob; endmodule\n"


def _bodies(n: int, world: World, project: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Valid requests, so that an answer comes from authorization, not from validation."""
    blob = {"path": f"blob-{n}.v", "size": len(BLOB), "sha256": sha256(BLOB)}
    return {
        ("POST", "/api/v1/projects"): {
            "json": {"name": f"new-{n}", "kind": "hardware", "licence": "MIT"}
        },
        ("PATCH", PROJECT): {"json": {"description": f"changed {n}"}},
        ("PUT", PROJECT + "/members/{member}"): {"json": {"role": "reader"}},
        ("POST", PROJECT + "/waivers"): {"json": {"type": "clearance", "reason": "matrix"}},
        ("POST", PROJECT + "/blobs/missing"): {"json": {"files": [blob]}},
        ("PUT", PROJECT + "/blobs/{sha256}"): {"content": BLOB},
        ("POST", PROJECT + "/revisions/commit"): {"json": {"files": [blob], "message": "m"}},
        ("POST", PROJECT + "/revisions"): {
            "files": [("files", (f"up-{n}.v", BLOB))],
            "data": {"message": "matrix"},
        },
        ("POST", PROJECT + "/revisions/{number}/checks/external"): {
            "json": {"name": "ci", "state": "passed"}
        },
        ("PATCH", PROJECT + "/revisions/{number}/checks/external/{check_id}"): {
            "json": {"state": "running"}
        },
        ("POST", PROJECT + "/revisions/{number}/threads"): {
            "json": {"anchor": {"kind": "revision"}, "body": f"matrix {n}"}
        },
        ("PATCH", PROJECT + "/threads/{thread_id}"): {"json": {"resolved": True}},
        ("POST", PROJECT + "/threads/{thread_id}/comments"): {"json": {"body": "reply"}},
        ("PATCH", PROJECT + "/threads/{thread_id}/comments/{comment_id}"): {
            "json": {"body": f"edited {n}"}
        },
        ("POST", PROJECT + "/threads/{thread_id}/waiver"): {"json": {"reason": "intended"}},
        ("POST", PROJECT + "/revisions/{number}/review"): {
            "json": {"verdict": "request_changes", "comment": "matrix"}
        },
        ("POST", "/api/v1/user/tokens"): {"json": {"name": f"matrix-{n}"}},
        ("GET", PROJECT + "/revisions/{number}/checks/{check_id}/waveform/changes"): {
            "params": {"signal": world.params[project]["signal"], "end": 10}
        },
        ("POST", "/login"): {"data": {"user": "olive", "password": "x"}},
        ("POST", "/register"): {"data": {"user": f"new{n}", "password": "p", "password2": "p"}},
        ("POST", "/logout"): {"data": {}},
        ("POST", "/settings/tokens"): {"data": {"name": f"form-{n}"}},
        ("POST", "/settings/tokens/{token_id}/revoke"): {"data": {}},
        ("GET", "/{owner}/{name}/compare"): {"params": {"a": 1, "b": 2}},
        ("POST", "/{owner}/{name}/revisions/{number}/threads"): {
            "data": {"anchor_kind": "revision", "body": f"form {n}"}
        },
        ("POST", "/{owner}/{name}/threads/{thread_id}/comments"): {"data": {"body": "reply"}},
        ("POST", "/{owner}/{name}/threads/{thread_id}/comments/{comment_id}"): {
            "data": {"body": f"edited {n}"}
        },
        ("POST", "/{owner}/{name}/threads/{thread_id}/resolved"): {"data": {"resolved": "true"}},
        ("POST", "/{owner}/{name}/revisions/{number}/review"): {
            "data": {"verdict": "request_changes"}
        },
    }


def _fresh(world: World, method: str, template: str, project: str, role: Role) -> dict[str, str]:
    """For an endpoint that uses its target up (deletes it, or waives a thread's violation for
    good), a target of its own for this one call."""
    owner_path = f"/api/v1/projects/{project}"
    n = next(world.counter)
    private = world.params[project]["visibility"] == "private"
    if method == "DELETE" and template == PROJECT:
        name = world.project(f"doomed-{n}", "private" if private else "public")
        return {"name": name.split("/")[1]}
    if method == "DELETE" and template.endswith("/members/{member}"):
        user = f"guest{n}"
        users.create_user(world.backends, user)
        world.ok("PUT", f"{owner_path}/members/{user}", json={"role": "reader"})
        return {"member": user}
    if method == "DELETE" and template.endswith("/waivers/{waiver_id}"):
        waiver = world.ok("POST", f"{owner_path}/waivers", json={"type": "x", "reason": "r"})
        return {"waiver_id": waiver["id"]}
    if template.endswith(("/tokens/{token_id}", "/{token_id}/revoke")):
        actor = world.actors[role.label]
        if actor is None:
            return {"token_id": "0" * 32}
        name = actor.name
        _, token = users.issue_token(world.backends, name, f"fresh-{n}")
        return {"token_id": token.id}
    if template.endswith("/threads/{thread_id}/waiver"):
        return {"thread_id": world.spare_threads[project].pop()}
    return {}


# -- the fixture ----------------------------------------------------------------------------------


def _revision_one(tmp_path: Path) -> Path:
    root = tmp_path / "rev-1"
    shutil.copytree(DESIGNS / "kicad-violations", root / "board")
    shutil.copytree(DESIGNS / "rtl-counter", root / "counter")
    return root


def _revision_two(tmp_path: Path) -> Path:
    root = tmp_path / "rev-2"
    shutil.copytree(board_revision_two(tmp_path), root / "board")
    shutil.copytree(DESIGNS / "rtl-counter", root / "counter")
    return root


def _wait_for_comparison(world: World, project: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = world.http.get(f"/api/v1/projects/{project}/compare/1...2", headers=world.owner.headers)
        if r.status_code == 200:
            pictured = [c for c in r.json()["checks"] if c.get("artifacts")]
            if pictured:
                return pictured[0]  # type: ignore[no-any-return]
        time.sleep(0.5)
    raise AssertionError(f"no comparison with difference pictures for {project}: {r.text}")


def _first_signal(found: dict[str, Any]) -> str:
    signals = found.get("signals") or []
    assert signals, found
    first = signals[0]
    return str(first.get("name") or first.get("full_name")) if isinstance(first, dict) else first


def _prepare(world: World, project: str) -> None:
    """Revisions 1 and 2 checked, and a value for every path parameter."""
    headers = world.owner.headers
    checks = wait_for_checks(world.http, project, 2, timeout_s=240, headers=headers)
    assert not checks["waiting_for"], checks
    by_kind = {c["kind"]: c for c in checks["checks"]}
    assert {"simulation", "drc", "render"} <= set(by_kind), checks
    drc = world.http.get(by_kind["drc"]["url"], headers=headers).json()
    violation = drc["details"]["violations"][0]
    anchor = {
        "anchor": {
            "kind": "violation",
            "check_kind": "drc",
            "check_name": drc["name"],
            "identity": violation["identity"],
        },
        "body": "is this intended?",
    }
    reviewer = world.actors["reviewer"]
    assert reviewer is not None
    r = world.http.post(
        f"/api/v1/projects/{project}/revisions/2/threads", json=anchor, headers=reviewer.headers
    )
    assert r.status_code == 201, r.text
    thread = r.json()
    world.spare_threads[project] = [
        world.ok("POST", f"/api/v1/projects/{project}/revisions/2/threads", json=anchor)["id"]
        for _ in ROLES
    ]
    external = world.ok(
        "POST",
        f"/api/v1/projects/{project}/revisions/2/checks/external",
        json={"name": "ci-running", "state": "running"},
    )
    world.ok("PUT", f"/api/v1/projects/{project}/blobs/{sha256(BLOB)}", content=BLOB)
    render = _wait_for_comparison(world, project)
    waves = world.http.get(
        f"/api/v1/projects/{project}/revisions/2/checks/{by_kind['simulation']['id']}"
        "/waveform/signals",
        headers=headers,
    )
    assert waves.status_code == 200, waves.text
    owner, name = project.split("/")
    world.params[project] = {
        "owner": owner,
        "name": name,
        "visibility": "private" if "closed" in name else "public",
        "number": "2",
        "path": "counter/rtl/counter.v",
        "check_id": by_kind["simulation"]["id"],
        "artifact": "log.txt",  # of the simulation
        "spec": "1...2",
        "pair": render["id"],
        "file_name": render["artifacts"][0]["name"],
        "thread_id": thread["id"],
        "comment_id": thread["comments"][0]["id"],
        "member": "guest",
        "sha256": sha256(BLOB),
        "external_id": external["id"],
        "drc_id": by_kind["drc"]["id"],
        "signal": _first_signal(waves.json()),
    }


@pytest.fixture
def world(settings: Settings, tmp_path: Path) -> Iterator[World]:
    # Both revisions are checked to the end: a comparison needs the checks of each.
    tuned = settings.model_copy(update={"worker_cache_dir": SIM_CACHE, "cancel_superseded": False})
    with pipeline_stack(tuned, tmp_path) as (own, backends, _client):
        actors: dict[str, Actor | None] = {"anonymous": None}
        for label, user in [
            ("outsider", "otto"),
            ("reader", "rhea"),
            ("reviewer", "remy"),
            ("maintainer", "mona"),
            ("owner", "olive"),
        ]:
            actors[label] = make_actor(backends, user)
        actors["admin"] = make_actor(backends, "ada", admin=True)
        for scope in ("read", "checks"):
            token = users.create_token(backends, "mona", f"{scope}-only", scope=scope)
            actors[f"maintainer ({scope} token)"] = Actor("mona", token)
        users.create_user(backends, "guest")
        with (
            api_process(own, tmp_path / "api-data", tmp_path / "api.log") as url,
            httpx.Client(base_url=url, timeout=60) as http,
        ):
            world = World(http, backends, actors)
            projects = [world.project("open", "public"), world.project("closed", "private")]
            # Both revisions are checked to the end: a comparison needs the checks of each.
            with running_worker(own, concurrency=2, cancel_superseded=False):
                one, two = _revision_one(tmp_path), _revision_two(tmp_path)
                for project in projects:
                    upload_dir(http, world.owner.headers, project, one)
                for project in projects:
                    upload_dir(http, world.owner.headers, project, two)
                for project in projects:
                    _prepare(world, project)

            yield world


# -- the matrix -----------------------------------------------------------------------------------


def _call(world: World, ep: Endpoint, project: str, role: Role) -> tuple[httpx.Response, str]:
    """The response, and the project (owner/name) it was asked about."""
    params = {**world.params[project], **_fresh(world, ep.method, ep.template, project, role)}
    # A check of the kind the endpoint is about: the simulation's log and waveform, the
    # DRC's violations and SARIF, an external check's report.
    if ep.template.endswith("/external/{check_id}"):
        params["check_id"] = params["external_id"]
    elif ep.template.endswith(("/violations", "/sarif")):
        params["check_id"] = params["drc_id"]
    names = re.findall(r"\{(\w+)(?::\w+)?\}", ep.template)
    missing = [n for n in names if n not in params]
    assert not missing, f"{ep.template}: give the matrix a real value for {missing} in _prepare"
    url = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: str(params[m.group(1)]), ep.template)
    bodies = _bodies(next(world.counter), world, project)
    kwargs = bodies.get((ep.method, ep.template), {})
    assert kwargs or ep.method in SAFE or ep.method == "DELETE" or "rerun" in ep.template, (
        f"{ep.method} {ep.template}: add a valid request to _bodies"
    )
    actor = world.actors[role.label]
    headers = actor.headers if actor is not None else {}
    if ep.stream:
        with world.http.stream(ep.method, url, headers=headers, **kwargs) as r:
            if r.status_code != 200:
                r.read()
    else:
        r = world.http.request(ep.method, url, headers=headers, **kwargs)
    return r, f"{params['owner']}/{params['name']}"


def test_every_endpoint_role_and_visibility(world: World, tmp_path: Path) -> None:
    spec = world.http.get("/openapi.json").json()
    # Re-runs last: they take the checks' results away from the endpoints that read them.
    found = sorted(
        (_endpoint(m, t, op) for m, t, op in endpoints(tmp_path, spec)),
        key=lambda ep: ep.template.endswith("/rerun"),
    )
    assert len(found) >= 50
    assert any(ep.stream for ep in found), "the event stream is not in the document"
    assert any(ep.template == "/{owner}/{name}" for ep in found), "the project page is missing"
    assert any(ep.method == "POST" and ep.template == "/login" for ep in found), "forms missing"
    failures: list[str] = []
    tried = 0
    for ep, private, role in itertools.product(found, (False, True), ROLES):
        need = classify(ep.method, ep.template)
        project = "olive/closed" if private else "olive/open"
        want = expected(need, role, private, ep.method, ep.template)
        seen = "private" if private else "public"
        where = f"{ep.method} {ep.template} as {role.label} on a {seen} project"
        tried += 1
        try:
            r, asked = _call(world, ep, project, role)
        except httpx.TransportError as exc:
            failures.append(f"{where}: no answer ({exc!r})")
            continue
        ok = r.status_code in ep.successes if want == ALLOWED else r.status_code == want
        if not ok:
            failures.append(
                f"{where}: {r.status_code}, expected {want} ({need.value}): {r.text[:200]}"
            )
            continue
        if want != ALLOWED and ep.template.startswith("/api/"):
            if r.headers.get("content-type") != PROBLEM_JSON:
                failures.append(f"{where}: {r.status_code} is not problem+json")
            elif want == 404 and r.json()["detail"] != (
                f"there is no project {asked}, or you have no access to it"
            ):
                failures.append(f"{where}: 404 in other words than a missing project's")
    assert tried == len(found) * 2 * len(ROLES)
    assert not failures, f"{len(failures)} of {tried}:\n" + "\n".join(failures)
