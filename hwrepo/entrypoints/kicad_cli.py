"""`hwrepo kicad …`: the bridge between a running KiCad (through kicad-python) and a server (through
its public API, with the client's server and token).

    publish  save the open board and push its project directory as a new revision (as `push`)
    show     select a DRC violation's items on the open board and zoom to them
    status   whether KiCad answers, its version, the board it has open

Exit codes: publish exits as `hwrepo push`; show and status exit 0 when done and 3 when they
could not be (KiCad unreachable, another board open, the server refusing, …).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hwrepo.client.api import Api, ClientError
from hwrepo.client.checks import find_check, find_violation, parse_violation
from hwrepo.client.config import ClientConfig
from hwrepo.client.push import ensure_project, split_project
from hwrepo.domain import pages
from hwrepo.entrypoints.client_cli import (
    EXIT_CODES,
    api_client,
    err,
    fail,
    out,
    push_and_report,
)

if TYPE_CHECKING:  # kipy is imported only by the commands that use it
    from kipy.board import Board

    from hwrepo.client.kicad import Session

app = typer.Typer(
    pretty_exceptions_enable=False,
    help="The bridge to a running KiCad (its PCB editor, through KiCad's API).",
    no_args_is_help=True,
)

Socket = Annotated[
    str | None,
    typer.Option(
        "--socket",
        help="KiCad's API socket (default: KICAD_API_SOCKET, else $TMPDIR/kicad/api.sock)",
    ),
]


@app.command("status")
def status(
    socket: Socket = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Whether KiCad answers, which version, and which board it has open (every KiCad here)."""
    from hwrepo.client import kicad

    try:
        found = [(session, kicad.open_boards(session)) for session in kicad.connect_all(socket)]
    except ClientError as exc:
        fail(exc)
    listed = []
    for session, docs in found:
        api = session.api_version
        listed.append(
            {
                "socket": str(session.socket),
                "kicad": session.version.full_version,
                "kicad_python": kicad.library_version(),
                "kicad_python_made_for": f"{api.major}.{api.minor}.{api.patch}",
                "boards": [
                    {"board": d.board_filename, "directory": d.project.path or None} for d in docs
                ],
                "pcb_editor": session.pcb_editor,
            }
        )
    if as_json:
        sys.stdout.write(json.dumps(listed, indent=1) + "\n")
        return
    for one in listed:
        made_for = one["kicad_python_made_for"].rsplit(".", 1)[0]
        _say(
            f"KiCad {one['kicad']} answers at {one['socket']} (kicad-python "
            f"{one['kicad_python']}, made for KiCad {made_for})"
        )
        if not one["pcb_editor"]:
            _say("board: none open (only KiCad's project window is open, no PCB editor)")
        for b in one["boards"] or ([{"board": None}] if one["pcb_editor"] else []):
            _say(f"board: {b['board']} (in {b['directory']})" if b["board"] else "board: none open")


def _say(text: str) -> None:
    out.print(text, markup=False, soft_wrap=True)


@app.command("publish", epilog=EXIT_CODES)
def publish(
    project: Annotated[str, typer.Option("--project", "-p", help="OWNER/NAME")],
    message: Annotated[str, typer.Option("--message", "-m")] = "",
    wait_: Annotated[
        bool, typer.Option("--wait", help="Follow the checks live, exit by their verdict")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most")] = 3600.0,
    junit: Annotated[Path | None, typer.Option(help="Write a JUnit XML report here")] = None,
    sarif: Annotated[Path | None, typer.Option(help="Write a SARIF 2.1.0 log here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
    socket: Socket = None,
) -> None:
    """Save the board open in KiCad and push its project directory as a new revision.

    The same upload, ignores, idempotency, progress and exit codes as `hwrepo push DIRECTORY`."""
    from hwrepo.client import kicad

    try:
        split_project(project)
        session, board = _the_open_board(kicad.connect_all(socket))
        directory = kicad.board_directory(board)
        if directory is None or not directory.is_dir():
            raise ClientError(
                f"KiCad's board {board.name} has no project directory this machine can read "
                f"({directory or 'none given'}): save it in a project first"
            )
        api = api_client()
        ensure_project(api, project, create=False, licence=None, private=False)
        kicad.save(session, board)
    except ClientError as exc:
        fail(exc)
    err.print(f"saved {board.name}; publishing {directory}", markup=False, soft_wrap=True)
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
    )
    raise typer.Exit(code)


def _the_open_board(sessions: list[Session]) -> tuple[Session, Board]:
    """The one board open in the KiCads here: publish does not guess between two."""
    from hwrepo.client import kicad

    with_boards = [s for s in sessions if kicad.open_boards(s)]
    if len(with_boards) > 1:
        said = "; ".join(
            f"{kicad.describe(kicad.open_board(s))} at {s.socket}" for s in with_boards
        )
        raise ClientError(f"more than one KiCad has a board open ({said}): name one with --socket")
    session = (with_boards or sessions)[0]
    return session, kicad.open_board(session)


def _api_for(server: str) -> Api:
    """The kept token goes only to the server it was kept for; any other is asked anonymously."""
    config = ClientConfig.load()
    if config.server and pages.same_server(config.server, server):
        return api_client(server, config.token)
    if config.token:
        err.print(
            f"asking {server} without a token (the one kept is for {config.server})",
            markup=False,
            soft_wrap=True,
        )
    return api_client(server, "")


@app.command("show")
def show(
    project: Annotated[str | None, typer.Argument(help="OWNER/NAME")] = None,
    revision: Annotated[int | None, typer.Argument(help="The revision number")] = None,
    check: Annotated[str | None, typer.Argument(help="The check's id, name or KIND:NAME")] = None,
    violation: Annotated[
        str | None,
        typer.Argument(help="Its index (from 0) or its identity [TYPE:]UUID[,UUID…]"),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="The violation's page: https://SERVER/OWNER/NAME/revisions/N/checks/ID#violation-I",
        ),
    ] = None,
    socket: Socket = None,
) -> None:
    """Select a DRC violation's items on the board open in KiCad and zoom to them.

    The open board must be the one the check ran on: same file name, and every item the
    violation names is on it. ERC violations are in the schematic, which KiCad 9's API does not
    drive: their page is named instead."""
    from hwrepo.client import kicad

    try:
        if url is not None:
            if any(a is not None for a in (project, revision, check, violation)):
                raise ClientError("give either --url or OWNER/NAME REV CHECK VIOLATION, not both")
            try:
                ref = pages.parse_violation_url(url)
            except ValueError as exc:
                raise ClientError(str(exc)) from None
            api = _api_for(ref.server)
            owner, name, number = ref.owner, ref.name, ref.number
            path = f"/projects/{owner}/{name}/revisions/{number}/checks/{ref.check_id}"
            found: dict[str, Any] = api.json("GET", path)
            query = parse_violation(str(ref.index))
        else:
            if project is None or revision is None or check is None or violation is None:
                raise ClientError(
                    "show needs OWNER/NAME REV CHECK VIOLATION (or --url with the violation's page)"
                )
            owner, name = split_project(project)
            number = revision
            api = api_client()
            query = parse_violation(violation)
            found = find_check(api, owner, name, number, check)
        if found["state"] in {"queued", "running"}:
            raise ClientError(
                f"check {found['kind']}:{found['name']} is {found['state']}: its violations "
                "come when it ends"
            )
        index, item = find_violation(api, found, query)
        page = pages.violation_page(api.server, owner, name, number, found["id"], index)
        origin = (
            f"violation {index} ({item.get('type')}) of check {found['kind']}:{found['name']}, "
            f"{owner}/{name} revision {number}"
        )
        if found["kind"] == "erc":
            raise ClientError(
                f"{origin} is in the schematic, and KiCad 9's API drives only the PCB editor: "
                f"see it on its page, {page}"
            )
        if found["kind"] != "drc":
            raise ClientError(
                f"check {found['kind']}:{found['name']} is no DRC check: only board violations "
                f"can be shown in KiCad (its page: {page})"
            )
        shown = kicad.show_violation(kicad.connect_all(socket), found["name"], item, origin)
    except ClientError as exc:
        fail(exc)
    out.print(
        f"selected {len(shown.selected)} items of {origin} on {shown.board}: "
        f"{item.get('description', '')}",
        markup=False,
        soft_wrap=True,
    )
    if shown.zoomed:
        out.print("zoomed to them", markup=False, soft_wrap=True)
    elif shown.box is not None:
        x0, y0, x1, y1 = shown.box
        out.print(
            f"KiCad did not zoom: they lie within ({x0:.3f}, {y0:.3f}) to ({x1:.3f}, {y1:.3f}) mm",
            markup=False,
            soft_wrap=True,
        )
    else:
        out.print(
            "KiCad did not zoom, and gave no bounding box for them", markup=False, soft_wrap=True
        )
    out.print(page, markup=False, soft_wrap=True)


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="kicad")
