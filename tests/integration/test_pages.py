"""The pages, without a browser: what each page shows, signing in (passwords, sessions, CSRF),
the tokens page, private projects as 404 pages, HTML errors for browsers and problem+json for
API clients, and the session cookie on the API (reads; changes only with the CSRF token)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from hwrepo.config import Settings
from hwrepo.entrypoints.api.app import create_app
from hwrepo.service_layer import users
from hwrepo.service_layer.backends import Backends
from hwrepo.service_layer.reindex import reindex
from tests.conftest import Actor
from tests.integration.helpers import PROBLEM_JSON, assert_problem, create_project, uploaded

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
PASSWORD = "correct horse battery"


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page[:2000]
    return found.group(1)


def sign_in(client: TestClient, name: str, password: str = PASSWORD) -> None:
    form = client.get("/login", headers=HTML)
    assert form.status_code == 200
    r = client.post(
        "/login",
        data={"user": name, "password": password, "csrf": csrf_of(form.text), "next": "/"},
        headers=HTML,
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    cookie = r.headers["set-cookie"]
    assert "hwrepo_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie


def test_the_catalogue_filters_and_shows_states(api: TestClient, alice: Actor) -> None:
    create_project(api, alice, "board", topics=["pcb"], licence="CERN-OHL-S-2.0")
    create_project(api, alice, "fw", kind="software", licence="MIT", description="firmware")
    uploaded(api, alice, "alice/board", {"README.md": b"# board\n"})
    page = api.get("/", headers=HTML)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert 'data-project="alice/board"' in page.text and 'data-project="alice/fw"' in page.text
    # the latest revision's state beside it (planned by nobody here: pending)
    assert 'revision 1</a> <span class="state state-pending">pending' in page.text
    only_software = api.get("/?kind=software", headers=HTML).text
    assert 'data-project="alice/fw"' in only_software
    assert 'data-project="alice/board"' not in only_software
    by_licence = api.get("/?licence=MIT", headers=HTML).text
    assert 'data-project="alice/fw"' in by_licence and "alice/board" not in by_licence
    assert '<option value="MIT"' in by_licence  # the licences there are, for the filter
    by_topic = api.get("/?topic=pcb", headers=HTML).text
    assert 'data-project="alice/board"' in by_topic and 'data-project="alice/fw"' not in by_topic
    searched = api.get("/?q=firmware", headers=HTML).text
    assert 'data-project="alice/fw"' in searched and 'data-project="alice/board"' not in searched


def test_project_revision_and_file_pages(api: TestClient, alice: Actor, bob: Actor) -> None:
    create_project(api, alice, "blinky", description="An LED that blinks")
    create_project(
        api,
        bob,
        "blinky-fw",
        kind="software",
        links=[{"project": "alice/blinky", "relation": "board"}],
    )
    api.put(
        "/api/v1/projects/alice/blinky/members/bob",
        json={"role": "reviewer"},
        headers=alice.headers,
    )
    source = b"module counter;\n  // line two <b>not bold</b>\nendmodule\n"
    uploaded(
        api,
        alice,
        "alice/blinky",
        {"rtl/counter.v": source, "logo.bin": b"\0\1\2"},
        message="first",
    )
    project = api.get("/alice/blinky", headers=HTML).text
    assert "An LED that blinks" in project
    assert "bob/blinky-fw</a> links here as its board" in project  # links both ways
    assert 'bob <span class="muted">(reviewer)</span>' in project
    assert 'id="open-reviews"' in project
    assert 'href="/alice/blinky/revisions/1"' in project
    revision = api.get("/alice/blinky/revisions/1", headers=HTML).text
    assert 'href="/alice/blinky/revisions/1/files/rtl/counter.v"' in revision
    assert 'id="review-state"' in revision and "/static/live.js" in revision
    file = api.get("/alice/blinky/revisions/1/files/rtl/counter.v", headers=HTML)
    assert file.status_code == 200
    # every line numbered with an anchor, the text escaped
    assert '<span class="ln" id="L2"><a href="#L2">2</a>  // line two &lt;b&gt;' in file.text
    assert 'id="L3"' in file.text and 'id="L4"' not in file.text
    binary = api.get("/alice/blinky/revisions/1/files/logo.bin", headers=HTML).text
    assert "Not shown here (a binary file)" in binary
    missing = api.get("/alice/blinky/revisions/1/files/nope.v", headers=HTML)
    assert missing.status_code == 404 and "has no file" in missing.text
    assert "text/html" in missing.headers["content-type"]


def test_errors_are_pages_for_browsers_and_problems_for_clients(api: TestClient) -> None:
    page = api.get("/nobody/nothing", headers=HTML)
    assert page.status_code == 404 and "text/html" in page.headers["content-type"]
    assert "there is no project nobody/nothing" in page.text and "<h1>404" in page.text
    assert_problem(api.get("/api/v1/projects/nobody/nothing"), 404)
    r = api.get("/api/v1/projects/nobody/nothing", headers={"Accept": "application/json"})
    assert r.headers["content-type"] == PROBLEM_JSON
    invalid = api.get("/?page=0", headers=HTML)
    assert invalid.status_code == 422 and "text/html" in invalid.headers["content-type"]


def test_private_projects_are_the_same_404_page_for_outsiders(
    api: TestClient, backends: Backends, alice: Actor, bob: Actor
) -> None:
    create_project(api, alice, "secret", visibility="private")
    uploaded(api, alice, "alice/secret", {"a.v": b"module a; endmodule\n"})
    missing = api.get("/alice/nothing", headers=HTML)
    users.set_password(backends, "alice", PASSWORD)
    users.set_password(backends, "bob", PASSWORD)
    for path in (
        "/alice/secret",
        "/alice/secret/revisions/1",
        "/alice/secret/revisions/1/files/a.v",
    ):
        r = api.get(path, headers=HTML)
        assert r.status_code == 404, path
        assert "text/html" in r.headers["content-type"]
        # the same words as a project that does not exist, but for its name
        assert r.text.replace("secret", "nothing") == missing.text.replace("/nothing", "/nothing")
    assert "alice/secret" not in api.get("/", headers=HTML).text
    sign_in(api, "bob")
    assert api.get("/alice/secret", headers=HTML).status_code == 404
    api.cookies.clear()
    sign_in(api, "alice")
    assert api.get("/alice/secret", headers=HTML).status_code == 200
    assert 'data-project="alice/secret"' in api.get("/", headers=HTML).text
    # the session cookie reads the API too (the pages' scripts use it)
    assert api.get("/api/v1/projects/alice/secret/revisions/1").status_code == 200


def test_sign_in_sessions_and_csrf(api: TestClient, backends: Backends, alice: Actor) -> None:
    users.set_password(backends, "alice", PASSWORD)
    form = api.get("/login", headers=HTML)
    token = csrf_of(form.text)
    assert "HttpOnly" in form.headers["set-cookie"] and "hwrepo_csrf=" in form.headers["set-cookie"]
    wrong = api.post(
        "/login", data={"user": "alice", "password": "nope", "csrf": token}, headers=HTML
    )
    assert wrong.status_code == 401 and "the user name or the password is wrong" in wrong.text
    nobody = api.post(
        "/login", data={"user": "zed", "password": "nope", "csrf": token}, headers=HTML
    )
    assert nobody.status_code == 401 and "the user name or the password is wrong" in nobody.text
    forged = api.post(
        "/login",
        data={"user": "alice", "password": PASSWORD, "csrf": "forged"},
        headers=HTML,
        follow_redirects=False,
    )
    assert forged.status_code == 403 and "came from another site" in forged.text
    assert "hwrepo_session" not in forged.headers.get("set-cookie", "")
    sign_in(api, "alice")
    home = api.get("/", headers=HTML).text
    assert '<span class="muted" id="signed-in-as">alice</span>' in home
    session_csrf = csrf_of(home)
    create_project(api, alice, "mine")
    # a change through the API with the cookie alone is refused; with the page's token it works
    no_token = api.post("/api/v1/projects/alice/mine/revisions", files=[("files", ("a.txt", b"a"))])
    assert_problem(no_token, 403)
    assert "CSRF" in no_token.json()["detail"]
    with_token = api.post(
        "/api/v1/projects/alice/mine/revisions",
        files=[("files", ("a.txt", b"a"))],
        headers={"X-CSRF-Token": session_csrf},
    )
    assert with_token.status_code == 201, with_token.text
    assert with_token.json()["author"] == "alice"
    # sign out: the session is gone on the server, not only in this browser
    cookie = api.cookies.get("hwrepo_session")
    out = api.post("/logout", data={"csrf": session_csrf}, headers=HTML, follow_redirects=False)
    assert out.status_code == 303
    assert users.session_user(backends, cookie) is None
    api.cookies.set("hwrepo_session", cookie)
    assert "signed-in-as" not in api.get("/", headers=HTML).text
    # a new password signs the user out everywhere
    api.cookies.clear()
    sign_in(api, "alice")
    cookie = api.cookies.get("hwrepo_session")
    users.set_password(backends, "alice", "another long password")
    assert users.session_user(backends, cookie) is None


def test_the_tokens_page_creates_and_revokes(
    api: TestClient, backends: Backends, alice: Actor
) -> None:
    assert api.get("/settings/tokens", headers=HTML, follow_redirects=False).status_code == 303
    users.set_password(backends, "alice", PASSWORD)
    sign_in(api, "alice")
    page = api.get("/settings/tokens", headers=HTML)
    made = api.post(
        "/settings/tokens",
        data={
            "name": "laptop",
            "scope": "read",
            "expires_in_days": "30",
            "csrf": csrf_of(page.text),
        },
        headers=HTML,
    )
    assert made.status_code == 201
    secret = re.search(r'id="token-secret">(hwr_[^<]+)<', made.text).group(1)  # type: ignore[union-attr]
    me = api.get("/api/v1/user", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200 and me.json()["name"] == "alice"
    token_id = next(
        t.id
        for t in users.tokens_of(backends, users.authenticate(backends, secret).user)
        if t.name == "laptop"
    )
    revoked = api.post(
        f"/settings/tokens/{token_id}/revoke",
        data={"csrf": csrf_of(made.text)},
        headers=HTML,
        follow_redirects=False,
    )
    assert revoked.status_code == 303
    again = api.get("/api/v1/user", headers={"Authorization": f"Bearer {secret}"})
    assert_problem(again, 401)
    assert "was revoked" in again.json()["detail"]
    forged = api.post(f"/settings/tokens/{token_id}/revoke", data={"csrf": "x"}, headers=HTML)
    assert forged.status_code == 403


@pytest.fixture
def open_site(settings: Settings, backends: Backends) -> Iterator[TestClient]:
    """The same site (bucket, database) with registration on."""
    own = Backends.from_settings(settings.model_copy(update={"registration": True}))
    with TestClient(create_app(own.settings, own, relay=False)) as client:
        yield client
    own.close()


def test_registration_only_where_the_site_allows_it(
    api: TestClient, open_site: TestClient, backends: Backends
) -> None:
    assert api.get("/register", headers=HTML).status_code == 403
    form = open_site.get("/register", headers=HTML)
    assert form.status_code == 200
    short = open_site.post(
        "/register",
        data={
            "user": "dora",
            "password": "short",
            "password2": "short",
            "csrf": csrf_of(form.text),
        },
        headers=HTML,
    )
    assert short.status_code == 422 and "at least 10 characters" in short.text
    made = open_site.post(
        "/register",
        data={
            "user": "dora",
            "password": PASSWORD,
            "password2": PASSWORD,
            "csrf": csrf_of(form.text),
        },
        headers=HTML,
        follow_redirects=False,
    )
    assert made.status_code == 303 and "hwrepo_session=" in made.headers["set-cookie"]
    assert users.verify_password(backends, "dora", PASSWORD).name == "dora"
    # the password is kept with the user in the bucket (an argon2 hash, never the password)
    document = backends.store.get_json("users/dora.json")
    assert document["password_hash"].startswith("$argon2") and PASSWORD not in str(document)


def test_review_state_and_open_reviews(api: TestClient, alice: Actor, bob: Actor) -> None:
    create_project(api, alice, "reviewed")
    changed = api.patch(
        "/api/v1/projects/alice/reviewed", json={"required_approvals": 1}, headers=alice.headers
    )
    assert changed.status_code == 200, changed.text
    api.put(
        "/api/v1/projects/alice/reviewed/members/bob",
        json={"role": "reviewer"},
        headers=alice.headers,
    )
    uploaded(api, alice, "alice/reviewed", {"rtl/a.v": b"module a;\nendmodule\n"})
    base = "/api/v1/projects/alice/reviewed/revisions/1"
    thread = api.post(
        f"{base}/threads",
        json={"anchor": {"kind": "file", "path": "rtl/a.v", "line_start": 2}, "body": "why?"},
        headers=bob.headers,
    )
    assert thread.status_code == 201, thread.text
    project = api.get("/alice/reviewed", headers=HTML).text
    opened = project[project.index('id="open-reviews"') :]
    assert 'data-revision="1"' in opened and "0 of 1 approvals" in opened
    assert "1 open thread<" in opened
    revision = api.get("/alice/reviewed/revisions/1", headers=HTML).text
    review = revision[revision.index('id="review-state"') :]
    assert "review-pending" in review and "0 of 1 required approval" in review
    verdict = api.post(f"{base}/review", json={"verdict": "approve"}, headers=bob.headers)
    assert verdict.status_code == 200, verdict.text
    revision = api.get("/alice/reviewed/revisions/1", headers=HTML).text
    review = revision[revision.index('id="review-state"') :]
    assert "review-approved" in review and "approved by bob" in review


def test_a_password_survives_a_reindex_and_sessions_do_not(
    api: TestClient, backends: Backends, settings: Settings, fresh_database: str, alice: Actor
) -> None:
    users.set_password(backends, "alice", PASSWORD)
    sign_in(api, "alice")
    cookie = api.cookies.get("hwrepo_session")
    rebuilt = Backends.from_settings(settings.model_copy(update={"database_url": fresh_database}))
    try:
        reindex(rebuilt)
        assert users.verify_password(rebuilt, "alice", PASSWORD).name == "alice"
        assert users.session_user(rebuilt, cookie) is None  # sign in again
    finally:
        rebuilt.close()


def test_review_threads_and_verdicts_through_the_pages(
    api: TestClient, backends: Backends, alice: Actor, bob: Actor
) -> None:
    create_project(api, alice, "blinky")
    api.put(
        "/api/v1/projects/alice/blinky/members/bob",
        json={"role": "reviewer"},
        headers=alice.headers,
    )
    api.patch(
        "/api/v1/projects/alice/blinky", json={"required_approvals": 1}, headers=alice.headers
    )
    uploaded(api, alice, "alice/blinky", {"rtl/a.v": b"module a;\n  wire x;\nendmodule\n"})
    file_page = "/alice/blinky/revisions/1/files/rtl/a.v"
    # signed out: no forms
    assert "new-thread" not in api.get(file_page, headers=HTML).text
    users.set_password(backends, "bob", PASSWORD)
    sign_in(api, "bob")
    page = api.get(file_page, headers=HTML).text
    assert 'id="new-line-thread"' in page
    posted = api.post(
        "/alice/blinky/revisions/1/threads",
        data={
            "csrf": csrf_of(page),
            "back": file_page,
            "kind": "file",
            "path": "rtl/a.v",
            "line_start": "2",
            "body": "Is *x* used? <script>alert(1)</script>",
        },
        headers=HTML,
        follow_redirects=False,
    )
    assert posted.status_code == 303, posted.text
    assert posted.headers["location"].startswith(f"{file_page}#thread-")
    page = api.get(file_page, headers=HTML).text
    # under line 2, the Markdown rendered, its raw HTML escaped
    under = page[page.index('id="L2"') : page.index('id="L3"')]
    assert 'class="threads-at" data-line="2"' in under
    assert "Is <em>x</em> used? &lt;script&gt;" in under and "<script>alert" not in page
    thread_id = re.search(r'data-thread-id="([^"]+)"', under).group(1)  # type: ignore[union-attr]
    comment_id = re.search(r'data-comment-id="([^"]+)"', under).group(1)  # type: ignore[union-attr]
    csrf = csrf_of(page)
    for path, data in (
        (f"/alice/blinky/threads/{thread_id}/comments", {"body": "a reply"}),
        (f"/alice/blinky/threads/{thread_id}/comments/{comment_id}", {"body": "Is **x** used?"}),
        (f"/alice/blinky/threads/{thread_id}/resolved", {"resolved": "true"}),
    ):
        r = api.post(
            path,
            data={"csrf": csrf, "back": file_page, **data},
            headers=HTML,
            follow_redirects=False,
        )
        assert r.status_code == 303, (path, r.text)
    page = api.get(file_page, headers=HTML).text
    assert "a reply" in page and "Is <strong>x</strong> used?" in page and "edited" in page
    assert 'class="thread resolved"' in page and "Unresolve" in page
    # without the form's token nothing changes
    forged = api.post(
        f"/alice/blinky/threads/{thread_id}/comments",
        data={"csrf": "forged", "body": "forged"},
        headers=HTML,
    )
    assert forged.status_code == 403 and "forged" not in api.get(file_page, headers=HTML).text
    # a bad anchor is an error page, and nothing is stored
    bad = api.post(
        "/alice/blinky/revisions/1/threads",
        data={"csrf": csrf, "kind": "file", "path": "rtl/a.v", "body": "no line"},
        headers=HTML,
    )
    assert bad.status_code == 422 and "line_start" in bad.text
    assert "text/html" in bad.headers["content-type"]
    # the verdict on the revision page
    revision = api.get("/alice/blinky/revisions/1", headers=HTML).text
    assert 'review-pending" id="review-badge">pending' in revision
    assert "0 of 1 required approval" in revision
    assert "rtl/a.v:2</a>" in revision  # the file's thread, linked from the revision
    r = api.post(
        "/alice/blinky/revisions/1/review",
        data={"csrf": csrf, "verdict": "approve"},
        headers=HTML,
        follow_redirects=False,
    )
    assert r.status_code == 303
    revision = api.get("/alice/blinky/revisions/1", headers=HTML).text
    assert 'review-approved" id="review-badge">approved' in revision
    assert "approved by bob" in revision

    # the comparison page: files, a diff on request, a thread on the comparison
    uploaded(api, alice, "alice/blinky", {"rtl/a.v": b"module a;\n  wire y;\nendmodule\n"})
    assert (
        'href="/alice/blinky/compare/1...2"'
        in api.get("/alice/blinky/revisions/2", headers=HTML).text
    )
    assert 'id="compare-form"' in api.get("/alice/blinky", headers=HTML).text
    chosen = api.get("/alice/blinky/compare?a=1&b=2", headers=HTML, follow_redirects=False)
    assert chosen.headers["location"] == "/alice/blinky/compare/1...2"
    compare = api.get("/alice/blinky/compare/2", headers=HTML)
    assert compare.status_code == 200
    assert 'class="file-changed" data-path="rtl/a.v"' in compare.text
    assert 'data-url="/api/v1/projects/alice/blinky/compare/1...2/files/rtl/a.v"' in compare.text
    r = api.post(
        "/alice/blinky/revisions/2/threads",
        data={
            "csrf": csrf,
            "kind": "revision",
            "compare_with": "1",
            "body": "y, not x",
            "back": "/alice/blinky/compare/1...2",
        },
        headers=HTML,
        follow_redirects=False,
    )
    assert r.status_code == 303
    compare = api.get("/alice/blinky/compare/1...2", headers=HTML).text
    shown = compare[compare.index('id="comparison-threads"') :]
    assert "y, not x" in shown
    for spec, status in (("1...1", 422), ("x", 422), ("1", 422), ("1...9", 404)):
        r = api.get(f"/alice/blinky/compare/{spec}", headers=HTML)
        assert r.status_code == status, spec
        assert "text/html" in r.headers["content-type"]


def test_a_private_comparison_is_the_404_page(api: TestClient, alice: Actor) -> None:
    create_project(api, alice, "secret", visibility="private")
    for n in (1, 2):
        uploaded(api, alice, "alice/secret", {"a.v": f"module a{n}; endmodule\n".encode()})
    missing = api.get("/alice/nothing/compare/1...2", headers=HTML)
    r = api.get("/alice/secret/compare/1...2", headers=HTML)
    assert r.status_code == 404 == missing.status_code
    assert r.text.replace("secret", "nothing") == missing.text
