"""The running KiCad, through kicad-python (`kipy`, KiCad's IPC API): finding it, saying why it
cannot be reached, its open board, and showing a violation's items on that board.

KiCad 9's API drives the PCB editor only. Its socket lives in KiCad's temporary directory
(`$TMPDIR/kicad/api.sock`, `api-<pid>.sock` for a second KiCad; `KICAD_API_SOCKET` names another);
KiCad leaves it behind when it dies, so a socket file proves nothing: only an answer does. The
socket is only ever dialled through nng (kipy), whose handshake KiCad's server expects.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from kipy import KiCad
from kipy.board import Board
from kipy.board_types import Field, FootprintInstance
from kipy.errors import ApiError
from kipy.errors import ConnectionError as KipyConnectionError
from kipy.kicad import KiCadVersion
from kipy.proto.common.commands import editor_commands_pb2
from kipy.proto.common.envelope_pb2 import ApiStatusCode
from kipy.proto.common.types import KIID, DocumentType, KiCadObjectType

from hwrepo.client.api import ClientError
from hwrepo.client.checks import item_uuids

OLDEST = (9, 0)  # the first KiCad with the IPC API
TIMEOUT_MS = 10_000  # reading every item of a large board takes a while
ZOOM_ACTION = "common.Control.zoomFitSelection"  # KiCad's "Zoom to Selection"
ENABLE_SERVER = (
    'turn on Preferences → Plugins → "Enable KiCad API" (or set "api": {"enable_server": '
    "true} in ~/.config/kicad/9.0/kicad_common.json) and start KiCad again"
)
# What the API hands out of a board (KiCad 9.0 refuses dimensions and groups here).
ITEM_TYPES = [
    KiCadObjectType.KOT_PCB_FOOTPRINT,
    KiCadObjectType.KOT_PCB_PAD,
    KiCadObjectType.KOT_PCB_SHAPE,
    KiCadObjectType.KOT_PCB_TEXT,
    KiCadObjectType.KOT_PCB_TEXTBOX,
    KiCadObjectType.KOT_PCB_TRACE,
    KiCadObjectType.KOT_PCB_VIA,
    KiCadObjectType.KOT_PCB_ARC,
    KiCadObjectType.KOT_PCB_ZONE,
]

T = TypeVar("T")


def library_version() -> str:
    return installed_version("kicad-python")


def check_versions(kicad: KiCadVersion, api: KiCadVersion) -> None:
    """A KiCad from 9.0 up to the release kicad-python was built for (a newer kicad-python
    talks to an older KiCad; the reverse may not understand it)."""
    own = (kicad.major, kicad.minor)
    if own < OLDEST:
        raise ClientError(
            f"KiCad {kicad.full_version} is older than 9.0, the first KiCad with the API the "
            "bridge uses: upgrade KiCad"
        )
    if own > (api.major, api.minor):
        raise ClientError(
            f"KiCad {kicad.full_version} is newer than kicad-python {library_version()} (made "
            f"for KiCad {api.major}.{api.minor}): upgrade kicad-python "
            "(pip install -U kicad-python)"
        )


def temp_dir() -> Path:
    return Path(tempfile.gettempdir())


def sockets(explicit: str | None = None) -> list[Path]:
    """Where KiCad's API may answer: the socket asked for (argument, else KICAD_API_SOCKET), else
    the first KiCad's socket and any further KiCad's in KiCad's temporary directory."""
    chosen = explicit or os.environ.get("KICAD_API_SOCKET")
    if chosen:
        return [Path(chosen.removeprefix("ipc://"))]
    base = temp_dir() / "kicad"
    return [base / "api.sock", *sorted(base.glob("api-*.sock"))]


def running_instances(socket: Path) -> list[tuple[str, int]]:
    """KiCad programs running with this socket's temporary directory: their instance locks
    (`org.kicad.kicad/instances/pcbnew-9.0`, holding a pid) whose process is alive."""
    found = []
    locks = socket.parent.parent / "org.kicad.kicad" / "instances"
    for lock in sorted(locks.glob("*")) if locks.is_dir() else []:
        try:
            text = lock.read_text(encoding="ascii", errors="replace")
            pid = int(text.replace("\0", " ").split()[0])  # the pid, NUL-terminated
        except (OSError, ValueError, IndexError):
            continue
        if os.path.exists(f"/proc/{pid}"):  # any error, an exiting process too, is "not alive"
            found.append((lock.name, pid))
    return found


@dataclass
class Session:
    kicad: KiCad
    socket: Path
    version: KiCadVersion
    api_version: KiCadVersion
    # False once KiCad said it has no PCB editor (its project window alone cannot list boards)
    pcb_editor: bool = True

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """A call to KiCad, its failures said for a person."""
        try:
            return fn()
        except KipyConnectionError as exc:
            raise ClientError(f"KiCad at {self.socket} stopped answering ({what}): {exc}") from None
        except ApiError as exc:
            raise ClientError(_api_error(exc, what)) from None


def _api_error(exc: ApiError, what: str) -> str:
    if exc.code == ApiStatusCode.AS_NOT_READY:
        return (
            f"KiCad is not ready ({what}): it is still starting, or one of its dialogs waits "
            "for an answer"
        )
    if exc.code == ApiStatusCode.AS_BUSY:
        return f"KiCad is busy ({what}): try again when it is done"
    return f"KiCad refused {what}: {exc}"


def connect(socket: str | None = None, timeout_ms: int = TIMEOUT_MS) -> Session:
    """The first running KiCad that answers, or a ClientError saying why none does."""
    return connect_all(socket, timeout_ms)[0]


def connect_all(socket: str | None = None, timeout_ms: int = TIMEOUT_MS) -> list[Session]:
    """Every running KiCad that answers (a second KiCad has a socket of its own), or a
    ClientError saying why none does."""
    candidates = sockets(socket)
    present = [s for s in candidates if s.exists()]
    if not present:
        live = running_instances(candidates[0])
        if live:
            said = "; ".join(f"{name}, pid {pid}" for name, pid in live)
            raise ClientError(
                f"KiCad is running ({said}) but its API server is off (no socket at "
                f"{candidates[0]}): {ENABLE_SERVER}"
            )
        raise ClientError(
            f"KiCad is not running (no API socket at {candidates[0]}): open the board in "
            "KiCad's PCB editor, with its API server on"
        )
    refused: list[str] = []
    answering: list[Session] = []
    for path in present:
        kicad = KiCad(socket_path=f"ipc://{path}", timeout_ms=timeout_ms)
        try:
            found = kicad.get_version()
        except KipyConnectionError as exc:
            if "refused" in str(exc).lower():
                refused.append(str(path))
                continue
            raise ClientError(f"KiCad at {path} does not answer: {exc}") from None
        except ApiError as exc:
            raise ClientError(_api_error(exc, "its version")) from None
        session = Session(kicad, path, found, kicad.get_api_version())
        check_versions(session.version, session.api_version)
        answering.append(session)
    if answering:
        return answering
    live = running_instances(present[0])
    also = (
        f"; a KiCad is running ({', '.join(f'{n}, pid {p}' for n, p in live)}) but does not "
        f"serve this socket: its API server may be off ({ENABLE_SERVER})"
        if live
        else ": start KiCad again (it makes a new socket)"
    )
    raise ClientError(
        f"the KiCad API socket {', '.join(refused)} is stale: it was left by a KiCad that is "
        f"no longer running, nothing answers it{also}"
    )


def open_boards(session: Session) -> list[Any]:
    """The boards open in KiCad's PCB editor (document specifiers); none when only KiCad's
    project window is open (it has no handler for the request: `session.pcb_editor` is then
    False)."""

    def listed() -> list[Any] | None:
        try:
            return list(session.kicad.get_open_documents(DocumentType.DOCTYPE_PCB))
        except ApiError as exc:
            if exc.code == ApiStatusCode.AS_UNHANDLED:
                return None
            raise

    docs = session.call("listing its open boards", listed)
    if docs is None:
        session.pcb_editor = False
        return []
    # With no board open, KiCad still lists one document, with an empty file name.
    return [d for d in docs if d.board_filename]


def no_board(session: Session, board: str = "the board") -> str:
    """Why `session` has no board to work with, and what to do."""
    if not session.pcb_editor:
        return (
            f"KiCad {session.version.full_version} has only its project window open, no PCB "
            f"editor: open {board} in the PCB editor (from the project window) and run this again"
        )
    return (
        f"KiCad {session.version.full_version} has no board open in its PCB editor: open "
        f"{board} (File → Open) and run this again"
    )


def open_board(session: Session) -> Board:
    if not open_boards(session):
        raise ClientError(no_board(session))
    return session.call("opening its board", session.kicad.get_board)


def board_directory(board: Board) -> Path | None:
    path = board.document.project.path
    return Path(path) if path else None


def describe(board: Board) -> str:
    where = board_directory(board)
    return f"{board.name} (in {where})" if where else board.name


def save(session: Session, board: Board) -> None:
    session.call(f"saving {board.name}", board.save)


def uuid_of(item: Any) -> str | None:
    """The uuid KiCad's DRC names an item by. A footprint field's is its text's."""
    if isinstance(item, Field):
        return str(item.proto.text.id.value).lower()
    kiid = getattr(item.proto, "id", None)
    value = getattr(kiid, "value", None)
    return str(value).lower() if value else None


def index_board(session: Session, board: Board) -> dict[str, Any]:
    """Every item of the board the API hands out, by uuid: the board's own items, and inside
    each footprint its pads, graphics, texts and fields. (KiCad 9.0 has no lookup by id.)"""
    items = session.call(f"reading the items of {board.name}", lambda: board.get_items(ITEM_TYPES))
    index: dict[str, Any] = {}
    for item in items:
        if (key := uuid_of(item)) is not None:
            index[key] = item
        if isinstance(item, FootprintInstance):
            inner: Sequence[Any] = [*item.definition.items, *item.texts_and_fields]
            for child in inner:
                if hasattr(child, "proto") and (key := uuid_of(child)) is not None:
                    index.setdefault(key, child)
    return index


def selection(session: Session, board: Board) -> list[str]:
    items = session.call("reading the selection", board.get_selection)
    return [u for u in (uuid_of(i) for i in items) if u]


def select(session: Session, board: Board, uuids: list[str]) -> list[str]:
    """Clear the selection, select these items (by their ids, as KiCad's AddToSelection takes
    them), and read back what is selected."""
    session.call("clearing the selection", board.clear_selection)
    command = editor_commands_pb2.AddToSelection()
    command.header.document.CopyFrom(board.document)
    command.items.extend([KIID(value=u) for u in uuids])
    session.call(
        "selecting the items",
        lambda: board.client.send(command, editor_commands_pb2.SelectionResponse),
    )
    return selection(session, board)


def zoom_to_selection(session: Session) -> bool:
    """Whether KiCad ran its zoom-to-selection action (it tells no more: no call reads the view)."""
    try:
        answer = session.kicad.run_action(ZOOM_ACTION)
    except (ApiError, KipyConnectionError):
        return False
    return bool(answer.status == editor_commands_pb2.RAS_OK)


Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in mm


def bounding_box(session: Session, board: Board, uuids: list[str]) -> Box | None:
    """The items' bounding box as KiCad computes it, in mm (None when it gives none)."""
    command = editor_commands_pb2.GetBoundingBox()
    command.header.document.CopyFrom(board.document)
    command.mode = editor_commands_pb2.BoundingBoxMode.BBM_ITEM_ONLY
    command.items.extend([KIID(value=u) for u in uuids])
    try:
        answer = board.client.send(command, editor_commands_pb2.GetBoundingBoxResponse)
    except (ApiError, KipyConnectionError):
        return None
    boxes = [
        (
            b.position.x_nm,
            b.position.y_nm,
            b.position.x_nm + b.size.x_nm,
            b.position.y_nm + b.size.y_nm,
        )
        for b in answer.boxes
    ]
    if not boxes:
        return None
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    return x0 / 1e6, y0 / 1e6, x1 / 1e6, y1 / 1e6


@dataclass
class Shown:
    board: str
    socket: str  # of the KiCad that has it open
    selected: list[str]
    zoomed: bool
    box: Box | None


def _named(doc: Any) -> str:
    return (
        f"{doc.board_filename} (in {doc.project.path})" if doc.project.path else doc.board_filename
    )


def with_board(sessions: list[Session], board_file: str, origin: str) -> tuple[Session, Board]:
    """The KiCad that has this board open (by file name), or a ClientError naming what is open."""
    wanted = PurePosixPath(board_file).name
    seen: list[str] = []
    for session in sessions:
        docs = open_boards(session)
        if any(d.board_filename == wanted for d in docs):
            return session, open_board(session)
        seen += [_named(d) for d in docs]
    if not seen:
        raise ClientError(no_board(sessions[0], f"{wanted}, the board of {origin},"))
    raise ClientError(
        f"KiCad has {' and '.join(seen)} open, but {origin} belongs to {board_file}: open "
        f"{wanted} in KiCad and run this again"
    )


def show_violation(
    sessions: list[Session], board_file: str, violation: dict[str, Any], origin: str
) -> Shown:
    """Select exactly the violation's items on the board the check ran on, open in one of the
    KiCads here, and zoom to them; a ClientError when no KiCad has that board open."""
    session, board = with_board(sessions, board_file, origin)
    uuids = list(dict.fromkeys(item_uuids(violation)))
    if not uuids:
        raise ClientError(
            f"{origin} names no board item ({violation.get('description', '')}): there is "
            "nothing to select"
        )
    index = index_board(session, board)
    missing = [u for u in uuids if u not in index]
    if missing:
        raise ClientError(
            f"the open board {describe(board)} has no item {', '.join(missing)} of {origin}: "
            f"it is not the board the check ran on, or it changed since"
        )
    selected = select(session, board, uuids)
    if set(selected) != set(uuids):
        left = sorted(set(uuids) - set(selected))
        raise ClientError(
            f"KiCad did not select every item of {origin}: {', '.join(left) or 'none'} not "
            f"selected, {', '.join(sorted(set(selected) - set(uuids))) or 'nothing'} more"
        )
    zoomed = zoom_to_selection(session)
    box = None if zoomed else bounding_box(session, board, uuids)
    return Shown(board.name, str(session.socket), selected, zoomed, box)
