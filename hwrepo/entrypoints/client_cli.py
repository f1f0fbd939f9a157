"""The client commands of `hwrepo`: they talk to a server only through its public HTTP API, as any
outside tool would (`hwrepo/client/`).

Exit codes of `hwrepo push --wait` (and of `hwrepo checks`):

    0  every check passed
    1  a check failed (a test failed, a blocking violation)
    2  a check errored, timed out, was cancelled, or cannot run (no live worker runs its kind),
       or --timeout passed with checks still pending (a required check that never came)
    3  the push itself failed: server unreachable, bad token, no permission, rejected upload
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from hwrepo.client.api import Api, ClientError
from hwrepo.client.checks import find_check, hints, latest_revision
from hwrepo.client.config import ClientConfig
from hwrepo.client.push import counted, ensure_project, push, split_project
from hwrepo.client.watch import EXIT_PUSH_FAILED, Outcome, wait
from hwrepo.domain import pages

# rich (tables, markup, the progress bar) and the reports' libraries are imported where they are
# used: a push that prints two plain lines starts without them.
if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

EXIT_CODES = (
    "Exit codes: 0 every check passed; 1 a check failed; 2 a check errored, timed out, was "
    "cancelled or cannot run, or --timeout passed; 3 the push itself failed (server "
    "unreachable, bad token, no permission, rejected upload)."
)


class _LazyConsole:
    """A rich Console made at its first use."""

    def __init__(self, *, stderr: bool) -> None:
        self.stderr = stderr
        self.console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self.console is None:
            from rich.console import Console

            self.console = Console(stderr=self.stderr, highlight=False)
        return getattr(self.console, name)


err: Any = _LazyConsole(stderr=True)
out: Any = _LazyConsole(stderr=False)


def escape(text: str) -> str:
    """`text` shown as it is by rich (no markup in it)."""
    from rich.markup import escape

    return escape(text)


def say(line: str, *, stderr: bool = True) -> None:
    """A plain line, as it is (no markup, no wrapping)."""
    print(line, file=sys.stderr if stderr else sys.stdout, flush=True)


def api_client(server: str | None = None, token: str | None = None) -> Api:
    config = ClientConfig.load()
    server = server or config.server
    if not server:
        raise ClientError(
            "no server: run `hwrepo login --server URL` (or set HWREPO_SERVER and HWREPO_TOKEN)"
        )
    return Api(server, token if token is not None else config.token)


def fail(exc: ClientError, code: int = EXIT_PUSH_FAILED) -> NoReturn:
    # escaped: a message may quote a tool's words, and "Track [/VIN]" is no markup
    err.print(f"[bold red]error:[/] {escape(exc.message)}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def login(
    server: Annotated[str, typer.Option("--server", help="The hwrepo server's URL")],
    token: Annotated[
        str | None, typer.Option("--token", help="An API token (asked for when not given)")
    ] = None,
) -> None:
    """Check a token against a server and keep both (in the user's config directory, 0600)."""
    secret = token or getpass.getpass("API token: ").strip()
    try:
        with Api(server, secret) as api:
            me = api.json("GET", "/user")
    except ClientError as exc:
        fail(exc)
    path = ClientConfig(server.rstrip("/"), secret).save()
    err.print(f"logged in to {server} as {me['name']} (kept in {path})")


def logout() -> None:
    """Forget the kept server and token."""
    err.print("logged out" if ClientConfig.forget() else "was not logged in")


def whoami() -> None:
    """The user the token belongs to, and the server."""
    try:
        with api_client() as api:
            me = api.json("GET", "/user")
            out.print(f"{me['name']} on {api.server}" + (" (admin)" if me.get("admin") else ""))
    except ClientError as exc:
        fail(exc)


def _show(state: str, check: dict[str, Any]) -> None:
    mark = {"queued": "·", "running": "…", "passed": "✓", "failed": "✗"}.get(state, "!")
    summary = f"  {check['summary']}" if state not in {"queued", "running"} else ""
    err.print(
        f"  {mark} {state:<9} {check.get('kind', '')} {check.get('name', '')}{summary}",
        markup=False,
    )


def _table(body: dict[str, Any]) -> Table:
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    for column in ("state", "kind", "check", "summary"):
        table.add_column(column)
    for c in body.get("checks", []):
        table.add_row(*(escape(str(c.get(k) or "")) for k in ("state", "kind", "name", "summary")))
    return table


def push_command(
    directory: Annotated[Path, typer.Argument(help="The directory to push as one revision")],
    project: Annotated[str, typer.Option("--project", "-p", help="OWNER/NAME")],
    message: Annotated[str, typer.Option("--message", "-m")] = "",
    create: Annotated[bool, typer.Option(help="Create the project if it does not exist")] = False,
    licence: Annotated[
        str | None, typer.Option(help="SPDX licence of a project --create makes")
    ] = None,
    private: Annotated[bool, typer.Option(help="A project --create makes is private")] = False,
    wait_: Annotated[
        bool, typer.Option("--wait", help="Follow the checks live, exit by their verdict")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most")] = 3600.0,
    junit: Annotated[Path | None, typer.Option(help="Write a JUnit XML report here")] = None,
    sarif: Annotated[Path | None, typer.Option(help="Write a SARIF 2.1.0 log here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
    require_review: Annotated[
        bool,
        typer.Option(
            "--require-review",
            help="With --wait, also wait for the approvals the project requires; a request "
            "for changes fails (exit 1)",
        ),
    ] = False,
) -> None:
    """Push DIRECTORY as a new revision (only what the server lacks is sent), and with --wait
    follow its checks and exit by their verdict.

    Left out: .git/, sim_build/, __pycache__/ and the patterns of a .hwrepoignore (gitignore
    syntax)."""
    try:
        api = api_client()
        if create:  # else the push itself finds out (one request less)
            ensure_project(api, project, create=create, licence=licence, private=private)
    except ClientError as exc:
        fail(exc)
    code = push_and_report(
        api,
        project,
        directory,
        message=message,
        wait_=wait_,
        timeout=timeout,
        junit=junit,
        sarif=sarif,
        as_json=as_json,
        require_review=require_review,
    )
    raise typer.Exit(code)


def push_and_report(
    api: Api,
    project: str,
    directory: Path,
    *,
    message: str,
    wait_: bool,
    timeout: float,
    junit: Path | None,
    sarif: Path | None,
    as_json: bool,
    require_review: bool = False,
) -> int:
    """Push DIRECTORY, print what was sent, and with --wait (or a report asked for) follow the
    checks live and write the reports: the one way of `push` and `kicad publish`. Returns the
    exit code."""
    try:
        pushed = push(api, project, directory, message=message)
    except ClientError as exc:
        if exc.status == 404:  # which is it: no such project, or one this token may not see?
            try:
                ensure_project(api, project, create=False, licence=None, private=False)
            except ClientError as why:
                fail(why)
        fail(exc)
    revision = pushed.revision
    owner, name = split_project(project)
    number = int(revision["number"])
    page = pages.revision_page(api.server, owner, name, number)
    again = "" if revision.get("created_now", True) else " (the same push as before)"
    say(
        f"revision {number} of {project}{again}: {counted(pushed.files, 'file')}, "
        f"{pushed.sent_files} sent ({pushed.sent_bytes} bytes)"
    )
    code = 0
    result: dict[str, Any] = {"revision": revision, "url": page}
    if wait_ or junit or sarif:
        try:
            outcome = wait(
                api,
                owner,
                name,
                number,
                timeout_s=timeout,
                show=_show,
                require_review=require_review,
            )
        except ClientError as exc:
            fail(exc, 2)
        code = outcome.exit_code
        result.update(checks=outcome.checks, exit_code=code, why=outcome.why())
        _reports(api, project, number, outcome, junit, sarif)
        if not as_json:
            err.print(_table(outcome.checks))
            _print_hints(api, outcome.checks)
            if outcome.why():
                err.print(f"[yellow]{escape(outcome.why())}[/]", markup=True)
            review = outcome.checks.get("review") or {}
            if review.get("state", "none") != "none":
                err.print(
                    f"review: {review['state']} ({review['approvals']} of "
                    f"{review['required']} approvals)",
                    markup=False,
                )
            err.print(f"{outcome.state}: {page}", markup=False, soft_wrap=True)
    if as_json:
        sys.stdout.write(json.dumps(result, indent=1) + "\n")
    else:
        say(page, stderr=False)
    return code


def _print_hints(api: Api, body: dict[str, Any]) -> None:
    """Below the table: what the checks that did not pass suggest changing."""
    try:
        found = hints(api, list(body.get("checks") or []))
    except ClientError:
        return  # the table and the verdict stand; the hints are a courtesy
    for check, hint in found:
        err.print(f"{check.get('kind', '')} {check.get('name', '')}: {hint}", markup=False)


def _reports(
    api: Api, project: str, number: int, outcome: Outcome, junit: Path | None, sarif: Path | None
) -> None:
    from hwrepo.client import reports

    try:
        if junit is not None:
            reports.write_junit(reports.junit(api, project, number, outcome.checks), junit)
            err.print(f"JUnit report: {junit}")
        if sarif is not None:
            reports.write_sarif(reports.sarif(api, outcome.checks), sarif)
            err.print(f"SARIF log: {sarif}")
    except ClientError as exc:
        fail(exc, 2)


def checks_command(
    project: Annotated[str, typer.Argument(help="OWNER/NAME")],
    revision: Annotated[int | None, typer.Argument(help="Revision number (default: latest)")] = (
        None
    ),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The checks of a revision and their states; exits as `push --wait` does."""
    owner, name = split_project(project)
    try:
        with api_client() as api:
            number = revision or latest_revision(api, owner, name)
            body = api.json("GET", f"/projects/{owner}/{name}/revisions/{number}/checks")
    except ClientError as exc:
        fail(exc)
    outcome = Outcome(body, waiting_for=list(body.get("waiting_for") or []))
    if as_json:
        sys.stdout.write(json.dumps(body, indent=1) + "\n")
    else:
        out.print(f"{project} revision {number}: {body['state']}")
        out.print(_table(body))
        with api_client() as api:
            _print_hints(api, body)
    raise typer.Exit(outcome.exit_code)


def logs_command(
    project: Annotated[str, typer.Argument(help="OWNER/NAME")],
    revision: Annotated[int, typer.Argument()],
    check: Annotated[str, typer.Argument(help="The check's id, name or KIND:NAME")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep reading while it runs")] = (
        False
    ),
) -> None:
    """A check's log, from its start; of a check still running, what it has printed so far
    (with --follow, on until the check ends)."""
    import time

    owner, name = split_project(project)
    try:
        with api_client() as api:
            c = find_check(api, owner, name, revision, check)
            path = c["url"].removeprefix("/api/v1") + "/log"
            offset = 0
            while True:
                response = api.request("GET", path, params={"offset": offset})
                sys.stdout.buffer.write(response.content)
                sys.stdout.buffer.flush()
                offset += len(response.content)
                if response.headers.get("X-Next-Offset"):
                    continue  # more is there already
                if response.headers.get("X-Log-Live") != "true":
                    return  # the check ended: that was its whole log
                if not follow:
                    err.print(f"the check is {c['state']}: that is its log so far (--follow)")
                    return
                time.sleep(1)
    except ClientError as exc:
        fail(exc)


def rerun_command(
    project: Annotated[str, typer.Argument(help="OWNER/NAME")],
    revision: Annotated[int, typer.Argument()],
    check: Annotated[str | None, typer.Argument(help="One check (default: all)")] = None,
) -> None:
    """Queue a new run of one check, or of every check of the revision (maintainers)."""
    owner, name = split_project(project)
    try:
        with api_client() as api:
            base = f"/projects/{owner}/{name}/revisions/{revision}/checks"
            if check is None:
                api.json("POST", f"{base}/rerun")
            else:
                c = find_check(api, owner, name, revision, check)
                api.json("POST", c["url"].removeprefix("/api/v1") + "/rerun")
    except ClientError as exc:
        fail(exc)
    err.print("queued")


def waive_command(
    project: Annotated[str, typer.Argument(help="OWNER/NAME")],
    type_: Annotated[str, typer.Argument(metavar="TYPE", help="The violation type")],
    reason: Annotated[str, typer.Option("--reason", help="Why it is accepted (required)")],
    kind: Annotated[str, typer.Option(help="Only for this check kind")] = "*",
    item: Annotated[list[str] | None, typer.Option(help="Only for these items (uuid)")] = None,
) -> None:
    """Waive a violation type on a project (it stays listed, it no longer fails a check)."""
    owner, name = split_project(project)
    body = {"kind": kind, "type": type_, "reason": reason, "items": item or []}
    try:
        with api_client() as api:
            made = api.json("POST", f"/projects/{owner}/{name}/waivers", json=body)
    except ClientError as exc:
        fail(exc)
    err.print(f"waiver {made.get('id')} made; re-run the checks for it to count")


def projects_command(
    owner: Annotated[str | None, typer.Option(help="Only this owner's")] = None,
    query: Annotated[str | None, typer.Option("--query", "-q", help="Text to look for")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The projects of the catalogue this token may see."""
    params = {k: v for k, v in {"owner": owner, "q": query, "per_page": 100}.items() if v}
    try:
        with api_client() as api:
            page = api.json("GET", "/projects", params=params)
    except ClientError as exc:
        fail(exc)
    if as_json:
        sys.stdout.write(json.dumps(page, indent=1) + "\n")
        return
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    for column in ("project", "kind", "visibility", "description"):
        table.add_column(column)
    for p in page["items"]:
        cells = (f"{p['owner']}/{p['name']}", p["kind"], p["visibility"], p.get("description"))
        table.add_row(*(escape(str(c or "")) for c in cells))
    out.print(table)


def diff_command(
    project: Annotated[str, typer.Argument(help="OWNER/NAME")],
    a: Annotated[int, typer.Argument(help="The older revision (or the only one: vs its parent)")],
    b: Annotated[int | None, typer.Argument(help="The newer revision")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON")] = False,
) -> None:
    """What changed between two revisions, in the checks' own terms: violations new and
    resolved, tests newly failing, ports and BOM lines changed, files."""
    owner, name = split_project(project)
    spec = f"{a}...{b}" if b is not None else str(a)
    try:
        with api_client() as api:
            document = api.json("GET", f"/projects/{owner}/{name}/compare/{spec}")
            page = api.url(f"/{owner}/{name}/compare/{spec}")
    except ClientError as exc:
        fail(exc, 2)
    if as_json:
        sys.stdout.write(json.dumps(document, indent=1) + "\n")
    else:
        from hwrepo.client.diff import print_comparison

        print_comparison(out, document, page)


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("logout")(logout)
    app.command("whoami")(whoami)
    app.command("push", epilog=EXIT_CODES)(push_command)
    app.command("checks", epilog=EXIT_CODES)(checks_command)
    app.command("logs")(logs_command)
    app.command("rerun")(rerun_command)
    app.command("waive")(waive_command)
    app.command("projects")(projects_command)
    app.command("diff")(diff_command)
