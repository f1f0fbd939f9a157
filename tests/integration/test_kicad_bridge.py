"""`hwrepo kicad …` against a real pcbnew: KiCad 9's PCB editor under Xvfb with its API server on,
each with a temporary directory (its socket) and a HOME (its configuration) of its own, on a copy
of a demo board KiCad ships. Publish makes a revision equal to the board's project directory,
checked by a real API process and worker; show selects exactly a violation's items (read back
through kipy); each failure is said: KiCad not running, its API server off, a stale socket after
kill -9, no board open, only the project window open, a dialog waiting for an answer, an ERC
violation, another board open, versions that do not match."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kipy.board_types import Field
from kipy.kicad import KiCadVersion

from hwrepo.checks.kicad.drc import DrcKind
from hwrepo.client import kicad
from hwrepo.client.api import ClientError
from hwrepo.client.files import sha256_of
from hwrepo.service_layer import users
from tests.integration.test_client import Server, home, hwrepo, server  # noqa: F401
from tests.integration.test_kicad_kinds import bare_drc, drc_entries, tally

DEMOS = Path("/usr/share/kicad/demos")
BOARD = "interf_u"  # a thermal relief DRC error (a zone and a pad), parity mismatches, one ERC
OTHER = "ecc83"
STARTUP_S = 90.0


def unavailable() -> str | None:
    for tool, package in (("pcbnew", "kicad"), ("xvfb-run", "xvfb"), ("xauth", "xauth")):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH (apt-get install {package})"
    if not (DEMOS / BOARD).is_dir():
        return f"{DEMOS / BOARD} is missing (apt-get install kicad-demos)"
    return DrcKind().available()


pytestmark = pytest.mark.needs(unavailable())


@dataclass
class Pcbnew:
    """A pcbnew of the test's own: its process group, temporary directory and HOME."""

    proc: subprocess.Popen[bytes]
    temp: Path
    home: Path
    log: Path
    program: str = "pcbnew"  # or "kicad": the project window

    def pid(self) -> int | None:
        """The program's own pid: the process of that name in the session xvfb-run leads."""
        # Not Path.glob: it stats each entry, and a process that ends meanwhile raises.
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                text = Path("/proc", entry, "stat").read_text()
            except OSError:
                continue
            name = text[text.index("(") + 1 : text.rindex(")")]
            session = int(text[text.rindex(")") + 2 :].split()[3])
            if name == self.program and session == self.proc.pid:
                return int(entry)
        return None

    @property
    def socket(self) -> Path:
        """KiCad's socket: `api.sock`, or `api-<pid>.sock` when another KiCad had that one."""
        own = self.temp / "kicad" / f"api-{self.pid()}.sock"
        return own if own.exists() else self.temp / "kicad" / "api.sock"

    def session(self) -> kicad.Session:
        return kicad.connect(str(self.socket))

    def env(self) -> dict[str, str]:
        """What a client on the same desktop has: KiCad's temporary directory."""
        return {"TMPDIR": str(self.temp)}

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(15)


def start_pcbnew(
    root: Path,
    board: Path | None,
    *,
    server_on: bool = True,
    temp: Path | None = None,
    program: str = "pcbnew",
    ready: bool = True,
) -> Pcbnew:
    """pcbnew under Xvfb (with `board`, or none), ready: its API answers with the board open,
    or (API server off) its instance lock names a live process. `temp`: the temporary
    directory of another KiCad, to run beside it. With `program="kicad"`, KiCad's project
    window on the project file `board`, ready when its API answers. `ready=False`: without
    library tables, so that the first start waits on the dialog that configures them, and
    returned as soon as its socket is there."""
    own_home, temp = root / "home", temp or root / "tmp"
    config = own_home / ".config" / "kicad" / "9.0"
    config.mkdir(parents=True)
    temp.mkdir(exist_ok=True)
    (config / "kicad_common.json").write_text(json.dumps({"api": {"enable_server": server_on}}))
    # Without library tables, a first start waits on a dialog that configures them.
    if ready:
        (config / "fp-lib-table").write_text("(fp_lib_table\n  (version 7)\n)\n")
        (config / "sym-lib-table").write_text("(sym_lib_table\n  (version 7)\n)\n")
    log = root / "pcbnew.log"
    env = {"PATH": os.environ["PATH"], "HOME": str(own_home), "TMPDIR": str(temp)}
    env["LANG"] = "C.UTF-8"
    proc = subprocess.Popen(
        ["xvfb-run", "-a", program, *([str(board)] if board else [])],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    started = Pcbnew(proc, temp, own_home, log, program)
    deadline = time.monotonic() + STARTUP_S
    try:
        while True:
            assert proc.poll() is None, f"pcbnew ended: {log.read_text(errors='replace')}"
            assert time.monotonic() < deadline, f"pcbnew not ready: {log.read_text()}"
            if started.socket.exists() if not ready else _ready(started, board, server_on):
                return started
            time.sleep(0.5)
    except BaseException:
        started.stop()
        raise


def _ready(pcbnew: Pcbnew, board: Path | None, server_on: bool) -> bool:
    if not server_on:
        locks = pcbnew.temp / "org.kicad.kicad" / "instances"
        return pcbnew.pid() is not None and any(locks.glob("pcbnew-*"))
    if not pcbnew.socket.exists():
        return False
    try:
        names = [d.board_filename for d in kicad.open_boards(pcbnew.session())]
    except ClientError:
        return False  # starting: not ready yet
    return board is None or pcbnew.program != "pcbnew" or board.name in names


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    return Path(shutil.copytree(DEMOS / BOARD, tmp_path / "design" / BOARD))


@pytest.fixture
def pcbnew(tmp_path: Path, project_dir: Path) -> Iterator[Pcbnew]:
    running = start_pcbnew(tmp_path / "kicad", project_dir / f"{BOARD}.kicad_pcb")
    try:
        yield running
    finally:
        running.stop()


def revision_files(srv: Server, token: str, project: str, number: int) -> dict[str, str]:
    body = httpx.get(
        f"{srv.url}/api/v1/projects/{project}/revisions/{number}",
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    return {f["path"]: f["sha256"] for f in body["files"]}


def directory_files(root: Path) -> dict[str, str]:
    """What the directory holds, less what KiCad keeps beside a design (its lock, the local
    project settings and caches) and the client leaves out by default."""
    leave = (".kicad_prl", ".lck")
    return {
        p.relative_to(root).as_posix(): sha256_of(p)
        for p in root.rglob("*")
        if p.is_file() and not p.name.endswith(leave) and p.name != "fp-info-cache"
    }


def check_of(
    srv: Server, token: str, project: str, number: int, kind: str, name: str | None = None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{srv.url}/api/v1/projects/{project}/revisions/{number}/checks"
    listed = httpx.get(base, headers=headers).json()["checks"]
    (found,) = [c for c in listed if c["kind"] == kind and name in {None, c["name"]}]
    return httpx.get(f"{base}/{found['id']}", headers=headers).json()  # type: ignore[no-any-return]


def violations_of(srv: Server, token: str, check: dict[str, Any]) -> list[dict[str, Any]]:
    body = httpx.get(
        f"{srv.url}{check['url']}/violations",
        params={"per_page": 1000},
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    assert body["total"] == len(body["items"])
    return body["items"]  # type: ignore[no-any-return]


def uuids(violation: dict[str, Any]) -> set[str]:
    return {i["uuid"] for i in violation["items"] if i.get("uuid")}


# -- publish and show, end to end ---------------------------------------------------------------


def test_publish_then_show_each_way(
    server: Server,  # noqa: F811
    home: Path,  # noqa: F811
    pcbnew: Pcbnew,
    project_dir: Path,
    tmp_path: Path,
) -> None:
    users.create_user(server.backends, "alice")
    token = users.create_token(server.backends, "alice", "desk")
    done = hwrepo(home, "login", "--server", server.url, "--token", token)
    assert done.returncode == 0, done.stderr
    made = hwrepo(home, "push", str(DEMOS / OTHER), "-p", "alice/board", "--create",
                  "--licence", "CERN-OHL-S-2.0", "--wait", "--timeout", "600")  # fmt: skip
    assert made.returncode in {0, 1}, made.stderr  # revision 1: other boards, checked

    status = hwrepo(home, "kicad", "status", **pcbnew.env())
    assert status.returncode == 0, status.stderr
    assert "KiCad 9.0" in status.stdout and f"answers at {pcbnew.socket}" in status.stdout
    assert f"board: {BOARD}.kicad_pcb (in {project_dir})" in status.stdout

    # publish: the board is saved, its project directory becomes revision 2, checked
    published = hwrepo(
        home, "kicad", "publish", "--project", "alice/board", "--wait", "--timeout", "600",
        **pcbnew.env(),
    )  # fmt: skip
    assert published.returncode == 1, published.stderr  # the board has DRC errors
    assert f"saved {BOARD}.kicad_pcb; publishing {project_dir}" in published.stderr
    assert "revision 2 of alice/board" in published.stderr
    assert published.stdout.strip() == f"{server.url}/alice/board/revisions/2"
    assert list(project_dir.glob("~*.lck")), "pcbnew locks the open board"
    files = revision_files(server, token, "alice/board", 2)
    assert files == directory_files(project_dir)

    # the same files again, by publish or push: the same revision
    again = hwrepo(home, "kicad", "publish", "-p", "alice/board", **pcbnew.env())
    assert again.returncode == 0, again.stderr
    assert "revision 2 of alice/board (the same push as before)" in again.stderr
    pushed = hwrepo(home, "push", str(project_dir), "-p", "alice/board")
    assert "revision 2 of alice/board (the same push as before)" in pushed.stderr

    # its DRC is the board's: kicad-cli's own counts, and every item it names is on the board
    drc = check_of(server, token, "alice/board", 2, "drc")
    assert drc["name"] == f"{BOARD}.kicad_pcb" and drc["state"] == "failed"
    expected = bare_drc(tmp_path, project_dir / f"{BOARD}.kicad_pcb")
    by_type, by_severity = tally(drc_entries(expected))
    counts = drc["details"]["counts"]
    assert (counts["by_type"], counts["by_severity"]) == (by_type, by_severity)
    found = violations_of(server, token, drc)
    session = pcbnew.session()
    board = kicad.open_board(session)
    on_board = kicad.index_board(session, board)
    footprint = board.get_footprints()[0]
    field = footprint.reference_field.proto.text.id.value  # as DRC names "Reference field of R1"
    assert isinstance(on_board[field], Field) and on_board[footprint.id.value] is not None
    named = set().union(*(uuids(v) for v in found))
    assert named and named <= set(on_board)

    # show by index: the thermal relief error's zone and pad, exactly
    thermal = next(i for i, v in enumerate(found) if v["type"] == "starved_thermal")
    shown = hwrepo(
        home, "kicad", "show", "alice/board", "2", f"drc:{BOARD}.kicad_pcb", str(thermal),
        **pcbnew.env(),
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert f"selected 2 items of violation {thermal} (starved_thermal)" in shown.stdout
    assert "zoomed to them" in shown.stdout
    assert set(kicad.selection(session, board)) == uuids(found[thermal])
    # the fall-back when KiCad does not zoom: the items' box, as KiCad computes it
    box = kicad.bounding_box(session, board, sorted(uuids(found[thermal])))
    assert box is not None
    pad = next(i for i in found[thermal]["items"] if i["description"].startswith("PTH pad"))
    assert box[0] <= pad["x_mm"] <= box[2] and box[1] <= pad["y_mm"] <= box[3]
    page = f"{server.url}/alice/board/revisions/2/checks/{drc['id']}#violation-{thermal}"
    assert page in shown.stdout

    # show by identity (TYPE:UUID,…), the check named by its id: a parity finding's footprint
    parity = next(i for i, v in enumerate(found) if v["type"] == "footprint_symbol_mismatch")
    identity = "footprint_symbol_mismatch:" + ",".join(sorted(uuids(found[parity])))
    by_id = hwrepo(home, "kicad", "show", "alice/board", "2", drc["id"], identity, **pcbnew.env())
    assert by_id.returncode == 0, by_id.stderr
    assert set(kicad.selection(session, board)) == uuids(found[parity])

    # show --url: the violation's page, as the web offers it
    by_url = hwrepo(home, "kicad", "show", "--url", page, **pcbnew.env())
    assert by_url.returncode == 0, by_url.stderr
    assert set(kicad.selection(session, board)) == uuids(found[thermal])

    # no such violation, or a mix of both ways: said, and the selection is left alone
    beyond = hwrepo(home, "kicad", "show", "alice/board", "2", drc["id"], str(len(found)),
                    **pcbnew.env())  # fmt: skip
    assert beyond.returncode == 3
    assert f"has {len(found)} violations (0 to {len(found) - 1})" in beyond.stderr
    mixed = hwrepo(home, "kicad", "show", "alice/board", "--url", page, **pcbnew.env())
    assert mixed.returncode == 3 and "not both" in mixed.stderr

    # an ERC violation: the schematic is not KiCad 9's API's to drive; its page is named
    erc = check_of(server, token, "alice/board", 2, "erc")
    assert violations_of(server, token, erc), "interf_u has an ERC finding"
    schematic = hwrepo(home, "kicad", "show", "alice/board", "2", "erc:" + erc["name"], "0",
                       **pcbnew.env())  # fmt: skip
    assert schematic.returncode == 3, schematic.stderr
    assert "KiCad 9's API drives only the PCB editor" in schematic.stderr
    erc_page = f"{server.url}/alice/board/revisions/2/checks/{erc['id']}#violation-0"
    assert erc_page in " ".join(schematic.stderr.split())

    # revision 1's check ran on another board: which one is open and which one is meant
    other = check_of(server, token, "alice/board", 1, "drc", "ecc83-pp.kicad_pcb")
    wrong = hwrepo(home, "kicad", "show", "alice/board", "1", other["id"], "0", **pcbnew.env())
    assert wrong.returncode == 3, wrong.stderr
    said = " ".join(wrong.stderr.split())
    assert f"KiCad has {BOARD}.kicad_pcb (in {project_dir}) open" in said
    assert f"belongs to {other['name']}: open {other['name']} in KiCad" in said
    assert set(kicad.selection(session, board)) == uuids(found[thermal])

    # a second KiCad beside the first (its own socket, api-<pid>.sock), with revision 1's board:
    # show finds the KiCad that has the board, status lists both, publish does not guess
    first = tmp_path / "design" / OTHER
    shutil.copytree(DEMOS / OTHER, first)
    second = start_pcbnew(tmp_path / "kicad-2", first / other["name"], temp=pcbnew.temp)
    try:
        assert second.socket.name == f"api-{second.pid()}.sock"
        listed = hwrepo(home, "kicad", "status", **pcbnew.env())
        assert listed.returncode == 0, listed.stderr
        assert f"board: {BOARD}.kicad_pcb" in listed.stdout
        assert f"board: {other['name']} (in {first})" in listed.stdout
        there = hwrepo(home, "kicad", "show", "alice/board", "1", other["id"], "0", **pcbnew.env())
        assert there.returncode == 0, there.stderr
        theirs = second.session()
        violation = violations_of(server, token, other)[0]
        picked = kicad.selection(theirs, kicad.open_board(theirs))
        assert set(picked) == uuids(violation) and picked
        assert set(kicad.selection(session, board)) == uuids(found[thermal]), "left alone"
        unsure = hwrepo(home, "kicad", "publish", "-p", "alice/board", **pcbnew.env())
        assert unsure.returncode == 3
        assert "more than one KiCad has a board open" in unsure.stderr
        assert "name one with --socket" in " ".join(unsure.stderr.split())
    finally:
        second.stop()

    # a board of the same name that is not the one checked: its items are not there
    twin = tmp_path / "twin" / BOARD
    shutil.copytree(DEMOS / OTHER, twin)
    (twin / "ecc83-pp.kicad_pcb").rename(twin / f"{BOARD}.kicad_pcb")
    pcbnew.stop()
    impostor = start_pcbnew(tmp_path / "kicad-twin", twin / f"{BOARD}.kicad_pcb")
    try:
        mismatch = hwrepo(home, "kicad", "show", "--url", page, **impostor.env())
        assert mismatch.returncode == 3, mismatch.stderr
        said = " ".join(mismatch.stderr.split())
        assert f"the open board {BOARD}.kicad_pcb (in {twin}) has no item" in said
        assert "it is not the board the check ran on" in said
    finally:
        impostor.stop()


def test_the_token_goes_only_to_its_own_server(
    server: Server,  # noqa: F811
    home: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A --url of another server is asked anonymously: a private project there is not found."""
    users.create_user(server.backends, "alice")
    token = users.create_token(server.backends, "alice", "desk")
    design = Path(shutil.copytree(DEMOS / OTHER, tmp_path / OTHER))
    login = hwrepo(home, "login", "--server", server.url, "--token", token)
    assert login.returncode == 0, login.stderr
    made = hwrepo(home, "push", str(design), "-p", "alice/secret", "--create", "--private",
                  "--licence", "CERN-OHL-S-2.0", "--wait")  # fmt: skip
    assert made.returncode in {0, 1}, made.stderr
    drc = check_of(server, token, "alice/secret", 1, "drc", "ecc83-pp.kicad_pcb")
    own = f"{server.url}/alice/secret/revisions/1/checks/{drc['id']}#violation-0"
    # the same server spelt by another name is another server to the client
    elsewhere = own.replace("127.0.0.1", "localhost")
    asked = hwrepo(home, "kicad", "show", "--url", elsewhere, TMPDIR=str(tmp_path))
    assert asked.returncode == 3
    assert f"without a token (the one kept is for {server.url})" in asked.stderr
    assert "there is no project alice/secret, or you have no access to it" in asked.stderr
    mine = hwrepo(home, "kicad", "show", "--url", own, TMPDIR=str(tmp_path))
    assert mine.returncode == 3
    assert "KiCad is not running" in mine.stderr  # the check was found: KiCad is what lacks


# -- what is said when KiCad cannot do it --------------------------------------------------------


def test_kicad_not_running(home: Path, tmp_path: Path) -> None:  # noqa: F811
    said = hwrepo(home, "kicad", "status", TMPDIR=str(tmp_path))
    assert said.returncode == 3
    assert f"KiCad is not running (no API socket at {tmp_path}/kicad/api.sock)" in " ".join(
        said.stderr.split()
    )


def test_api_server_off(home: Path, tmp_path: Path, project_dir: Path) -> None:  # noqa: F811
    off = start_pcbnew(tmp_path / "kicad", project_dir / f"{BOARD}.kicad_pcb", server_on=False)
    try:
        said = hwrepo(home, "kicad", "status", **off.env())
        text = " ".join(said.stderr.split())
        assert said.returncode == 3, said.stderr
        assert f"KiCad is running (pcbnew-9.0, pid {off.pid()}) but its API server is off" in text
        assert '"api": {"enable_server": true}' in text
    finally:
        off.stop()


def test_stale_socket_after_kill(home: Path, pcbnew: Pcbnew) -> None:  # noqa: F811
    pid = pcbnew.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    pcbnew.proc.wait(30)  # xvfb-run ends with it, and takes Xvfb along
    assert pcbnew.socket.exists(), "KiCad leaves its socket behind"
    said = hwrepo(home, "kicad", "status", **pcbnew.env())
    assert said.returncode == 3
    text = " ".join(said.stderr.split())
    assert f"the KiCad API socket {pcbnew.socket} is stale" in text
    assert "start KiCad again" in text


def test_no_board_open(home: Path, tmp_path: Path) -> None:  # noqa: F811
    empty = start_pcbnew(tmp_path / "kicad", None)
    try:
        status = hwrepo(home, "kicad", "status", **empty.env())
        assert status.returncode == 0, status.stderr
        assert "board: none open" in status.stdout
        publish = hwrepo(home, "kicad", "publish", "-p", "alice/board", **empty.env())
        assert publish.returncode == 3
        assert "has no board open in its PCB editor" in " ".join(publish.stderr.split())
    finally:
        empty.stop()


def test_only_the_project_window_open(home: Path, tmp_path: Path, project_dir: Path) -> None:  # noqa: F811
    """KiCad's project window answers the API but has no PCB editor to list boards: status
    says so (exit 0), publish and show say to open the board in the PCB editor."""
    window = start_pcbnew(tmp_path / "kicad", project_dir / f"{BOARD}.kicad_pro", program="kicad")
    try:
        status = hwrepo(home, "kicad", "status", **window.env())
        assert status.returncode == 0, status.stderr
        assert "KiCad 9.0" in status.stdout
        assert "board: none open (only KiCad's project window is open, no PCB editor)" in (
            status.stdout
        )
        described = json.loads(hwrepo(home, "kicad", "status", "--json", **window.env()).stdout)
        assert [(k["pcb_editor"], k["boards"]) for k in described] == [(False, [])]
        publish = hwrepo(home, "kicad", "publish", "-p", "alice/board", **window.env())
        assert publish.returncode == 3
        assert "has only its project window open, no PCB editor: open the board in the PCB " in (
            " ".join(publish.stderr.split())
        )
    finally:
        window.stop()


def test_a_dialog_waiting_for_an_answer(home: Path, tmp_path: Path, project_dir: Path) -> None:  # noqa: F811
    """A first start without library tables waits on the dialog that configures them, and KiCad
    answers "not ready" meanwhile: the bridge says a dialog may be waiting."""
    waiting = start_pcbnew(tmp_path / "kicad", project_dir / f"{BOARD}.kicad_pcb", ready=False)
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            said = hwrepo(home, "kicad", "status", **waiting.env())
            text = " ".join(said.stderr.split())
            if "not ready" in text or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert said.returncode == 3, said.stdout
        assert "KiCad is not ready (its version): it is still starting, or one of its dialogs " in (
            text
        )
        assert "waits for an answer" in text
        # not a start that takes long: a board opened without its tables would be ready by now
        time.sleep(10)
        again = hwrepo(home, "kicad", "status", **waiting.env())
        assert again.returncode == 3 and "not ready" in again.stderr, again.stdout
    finally:
        waiting.stop()


def test_versions(pcbnew: Pcbnew) -> None:
    """KiCad 9.0.8 with kicad-python 0.8.0 (made for KiCad 10.0) is accepted; a KiCad newer than
    kicad-python knows, or older than 9.0, is refused."""
    session = pcbnew.session()
    assert (session.version.major, session.version.minor) == (9, 0)
    assert session.api_version.major >= 9
    kicad.check_versions(session.version, session.api_version)
    with pytest.raises(
        ClientError, match=r"is newer than kicad-python 0\.8\.0 \(made for KiCad 8\.0\)"
    ):
        kicad.check_versions(session.version, KiCadVersion.from_git_describe("8.0.9"))
    with pytest.raises(ClientError, match=r"is older than 9\.0"):
        kicad.check_versions(KiCadVersion(8, 0, 9, "8.0.9"), session.api_version)
