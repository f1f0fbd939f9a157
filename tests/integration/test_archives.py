"""Archive uploads (.zip, .tar, .tar.gz) through the API, the revision as a zip download, and
hostile uploads: each is refused with a problem naming the offending entry, and nothing of it is
stored (no revision, no revision number used up, no blob)."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi.testclient import TestClient

from hwrepo.config import UploadLimits
from hwrepo.service_layer.backends import Backends
from tests.conftest import Actor
from tests.hostile import dup_zip, good, tar_member
from tests.integration.helpers import (
    API,
    assert_problem,
    blob_keys,
    content,
    create_project,
    make_tar,
    make_zip,
    revision_total,
    upload,
    uploaded,
    zip_symlink,
)

KIB = 1024
LIMITS = UploadLimits(
    max_entries=12, max_file_size=64 * KIB, max_total_size=512 * KIB, max_ratio=50.0
)


@pytest.fixture
def upload_limits() -> UploadLimits:
    return LIMITS


# -- good archives -------------------------------------------------------------------------------

ZIPPED = {"rtl/top.v": b"module top; endmodule\n", "README.md": b"# blinky\n"}
TARRED = {"sim/test_top.py": b"import cocotb\n", "sim/Makefile": b"SIM ?= icarus\n"}
GZIPPED = {
    "board/blinky.kicad_pcb": content("pcb", 20 * KIB),
    "board/blinky.kicad_sch": content("sch", 9 * KIB),
}


def _download_zip(api: TestClient, actor: Actor, project: str, number: int) -> dict[str, bytes]:
    r = api.get(f"{API}/{project}/revisions/{number}/archive.zip", headers=actor.headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    name = project.split("/")[1]
    assert r.headers["content-disposition"] == f"attachment; filename*=UTF-8''{name}-r{number}.zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.testzip() is None
        return {info.filename: zf.read(info) for info in zf.infolist()}


def test_archives_land_under_the_directory_and_download_as_zip(
    api: TestClient, alice: Actor
) -> None:
    create_project(api, alice, "blinky")
    zipped = make_zip([("rtl/", b""), *ZIPPED.items()])  # a directory entry creates nothing
    r = uploaded(api, alice, "alice/blinky", {}, archives=[("src.zip", zipped)], directory="hw")
    assert [f["path"] for f in r["files"]] == ["hw/README.md", "hw/rtl/top.v"]

    r = uploaded(
        api,
        alice,
        "alice/blinky",
        {},
        archives=[("sim.tar", make_tar(TARRED.items()))],
        directory="verif/cocotb",
    )
    assert [f["path"] for f in r["files"]] == [
        "verif/cocotb/sim/Makefile",
        "verif/cocotb/sim/test_top.py",
    ]

    # The format is found from the content, not the name; slashes around the directory go.
    r = uploaded(
        api,
        alice,
        "alice/blinky",
        {},
        archives=[("board.bin", make_tar(GZIPPED.items(), gz=True))],
        directory="/pcb/",
    )
    assert [f["path"] for f in r["files"]] == [f"pcb/{p}" for p in sorted(GZIPPED)]

    # All three and a plain file in one upload.
    r = uploaded(
        api,
        alice,
        "alice/blinky",
        {"NOTES.txt": b"notes\n"},
        archives=[
            ("src.zip", zipped),
            ("sim.tar", make_tar(TARRED.items())),
            ("board.tar.gz", make_tar(GZIPPED.items(), gz=True)),
        ],
        directory="all",
        message="everything",
    )
    expected = {f"all/{p}": d for p, d in {**ZIPPED, **TARRED, **GZIPPED}.items()}
    expected["all/NOTES.txt"] = b"notes\n"
    assert r["number"] == 4
    assert sorted(f["path"] for f in r["files"]) == sorted(expected)
    assert {f["path"]: f["size"] for f in r["files"]} == {p: len(d) for p, d in expected.items()}

    members = _download_zip(api, alice, "alice/blinky", 4)
    assert members == {f"blinky-r4/{p}": d for p, d in expected.items()}
    for path, data in expected.items():
        assert api.get(f"{API}/alice/blinky/revisions/4/files/{path}").content == data
    assert _download_zip(api, alice, "alice/blinky", 1) == {
        f"blinky-r1/hw/{p}": d for p, d in ZIPPED.items()
    }


def test_file_downloads(api: TestClient, alice: Actor) -> None:
    create_project(api, alice, "blinky")
    data = b"module top; endmodule\n"
    r = uploaded(api, alice, "alice/blinky", {"rtl/top v.v": data})
    sha = r["files"][0]["sha256"]
    url = f"{API}/alice/blinky/revisions/1/files/rtl/top v.v"
    got = api.get(url)
    assert got.content == data
    assert got.headers["content-type"].startswith("text/x-verilog")
    assert got.headers["etag"] == f'"{sha}"'
    assert got.headers["content-length"] == str(len(data))
    assert got.headers["content-disposition"] == "inline; filename*=UTF-8''top%20v.v"
    assert api.get(url, headers={"If-None-Match": f'"{sha}"'}).status_code == 304
    redirect = api.get(url, params={"via": "presigned"}, follow_redirects=False)
    assert redirect.status_code == 307
    assert httpx.get(redirect.headers["location"]).content == data
    problem = assert_problem(api.get(f"{API}/alice/blinky/revisions/1/files/rtl/nope.v"), 404)
    assert problem["detail"] == "revision 1 of alice/blinky has no file 'rtl/nope.v'"
    problem = assert_problem(api.get(f"{API}/alice/blinky/revisions/2/archive.zip"), 404)
    assert problem["detail"] == "alice/blinky has no revision 2"


# -- hostile uploads -----------------------------------------------------------------------------


@dataclass
class Attack:
    what: str
    files: dict[str, bytes] = field(default_factory=dict)
    archives: list[tuple[str, bytes]] = field(default_factory=list)
    directory: str | None = None
    status: int = 422
    entry: str | None = None  # the problem's `entry`
    words: list[str] = field(default_factory=list)  # in the problem's detail


def _hex(label: str, size: int) -> bytes:
    """Text that compresses about two to one: far from max_ratio, yet smaller zipped."""
    return content(label, size // 2).hex().encode()


def _run_attacks(api: TestClient, backends: Backends, alice: Actor, attacks: list[Attack]) -> None:
    project = create_project(api, alice, "blinky")
    assert uploaded(api, alice, "alice/blinky", {"first.txt": b"first"})["number"] == 1
    manifests = f"projects/{project['id']}/revisions/"
    blobs = blob_keys(backends)
    stored = set(backends.store.list_keys(manifests))
    for attack in attacks:
        r = upload(
            api,
            alice,
            "alice/blinky",
            attack.files,
            archives=attack.archives,
            directory=attack.directory,
        )
        problem = assert_problem(r, attack.status)
        if attack.entry is not None:
            assert problem.get("entry") == attack.entry, (attack.what, problem)
            assert repr(attack.entry) in problem["detail"], (attack.what, problem)
        for word in attack.words:
            assert word in problem["detail"], (attack.what, problem)
        assert revision_total(api, alice, "alice/blinky") == 1, attack.what
        assert blob_keys(backends) == blobs, attack.what
        assert set(backends.store.list_keys(manifests)) == stored, attack.what
    # No revision number was used up by the rejected uploads.
    assert uploaded(api, alice, "alice/blinky", {"after.txt": b"after"})["number"] == 2


def test_hostile_archive_members_are_rejected_and_nothing_is_stored(
    api: TestClient, backends: Backends, alice: Actor
) -> None:
    attacks = [
        Attack(
            "zip traversal",
            archives=[("a.zip", make_zip([good("1"), ("../evil", b"x")]))],
            entry="../evil",
            words=["'..' segment"],
        ),
        Attack(
            "tar traversal",
            archives=[("a.tar", make_tar([good("2"), ("ok/../../evil", b"x")]))],
            entry="ok/../../evil",
            words=["'..' segment"],
        ),
        Attack(
            "tar.gz traversal",
            archives=[("a.tgz", make_tar([good("3"), ("..\\evil", b"x")], gz=True))],
            entry="..\\evil",
        ),
        Attack(
            "zip absolute path",
            archives=[("a.zip", make_zip([good("4"), ("/etc/passwd", b"x")]))],
            entry="/etc/passwd",
            words=["absolute"],
        ),
        Attack(
            "tar absolute path",
            archives=[("a.tar", make_tar([good("5"), ("/etc/passwd", b"x")]))],
            entry="/etc/passwd",
            words=["absolute"],
        ),
        Attack(
            "zip symlink",
            archives=[("a.zip", make_zip([good("6"), zip_symlink("link", "/etc/passwd")]))],
            entry="link",
            words=["symbolic links"],
        ),
        Attack(
            "tar symlink",
            archives=[
                ("a.tar", make_tar([good("7"), tar_member("link", tarfile.SYMTYPE, "/etc")]))
            ],
            entry="link",
            words=["symbolic links"],
        ),
        Attack(
            "tar hard link",
            archives=[
                (
                    "a.tar",
                    make_tar([good("8"), tar_member("hard", tarfile.LNKTYPE, "good-8.txt")]),
                )
            ],
            entry="hard",
            words=["hard links"],
        ),
        Attack(
            "tar device file",
            archives=[
                (
                    "a.tar.gz",
                    make_tar([good("9"), tar_member("dev/null", tarfile.CHRTYPE)], gz=True),
                )
            ],
            entry="dev/null",
            words=["device files"],
        ),
        Attack(
            "tar fifo",
            archives=[("a.tar", make_tar([good("10"), tar_member("pipe", tarfile.FIFOTYPE)]))],
            entry="pipe",
            words=["FIFO"],
        ),
        Attack(
            "reserved top-level name",
            archives=[("a.zip", make_zip([good("11"), (".hwrepo/config", b"x")]))],
            entry=".hwrepo/config",
            words=["reserved"],
        ),
        Attack(
            "a file that is also a directory",
            archives=[("a.zip", make_zip([("x", b"file"), ("x/y", b"under a file")]))],
            entry="x/y",
        ),
        Attack(
            "not an archive",
            archives=[("notes.zip", b"just some text, not a zip at all\n" * 20)],
            entry="notes.zip",
            words=["not a supported archive"],
        ),
        Attack(
            "truncated zip",
            archives=[("cut.zip", make_zip([good("12"), ("b.txt", content("b", 5000))])[:-200])],
            entry="cut.zip",
        ),
    ]
    _run_attacks(api, backends, alice, attacks)


def test_ambiguous_and_deceptive_archives_are_rejected_and_nothing_is_stored(
    api: TestClient, backends: Backends, alice: Actor
) -> None:
    tarred = make_tar([good("t1"), ("rtl/top.v", b"module top; endmodule\n")])
    gz_inner = make_tar([good("t2"), ("a.txt", b"a")])
    attacks = [
        Attack(
            "a zip holding one name twice",
            archives=[("dup.zip", dup_zip([good("d1"), ("top.v", b"one"), ("top.v", b"two")]))],
            entry="top.v",
            words=["two members of this name"],
        ),
        Attack(
            "a zip naming one file twice, differently spelt",
            archives=[("dup.zip", make_zip([("rtl/a.v", b"one"), ("./rtl//a.v", b"two")]))],
            entry="./rtl//a.v",
            words=["the same file as the earlier member 'rtl/a.v'"],
        ),
        Attack(
            "a right-to-left override in a zip member's name",
            archives=[("rlo.zip", make_zip([good("r1"), ("evil\u202etxt.exe", b"x")]))],
            entry="evil\u202etxt.exe",
            words=["U+202E", "RIGHT-TO-LEFT OVERRIDE", "look like another"],
        ),
        Attack(
            "a zero-width space in a tar member's name",
            archives=[("zw.tar", make_tar([good("r2"), ("rtl/top\u200b.v", b"x")]))],
            entry="rtl/top\u200b.v",
            words=["U+200B", "ZERO WIDTH SPACE"],
        ),
        Attack(
            "a format character in the target directory",
            archives=[("a.zip", make_zip([("a.txt", b"a")]))],
            directory="hw\u2066x",
            entry="hw\u2066x",
            words=["U+2066"],
        ),
        Attack(
            "bytes after the end of a tar",
            archives=[("tail.tar", tarred + b"a payload no tool lists")],
            entry="tail.tar",
            words=["after its end-of-archive marker", "belongs to no entry"],
        ),
        Attack(
            "bytes after the end of a tar, inside its gzip stream",
            archives=[("tail.tgz", gzip.compress(gz_inner + bytes(512) + b"\x01hidden"))],
            entry="tail.tgz",
            words=["after its end-of-archive marker"],
        ),
    ]
    _run_attacks(api, backends, alice, attacks)
    # Escaped in the detail, so it reads as what it is.
    create_project(api, alice, "other")
    r = upload(api, alice, "alice/other", archives=[("rlo.zip", make_zip([("a\u202eb", b"x")]))])
    detail = assert_problem(r, 422)["detail"]
    assert "\u202e" not in detail and "'a\\u202eb'" in detail, detail
    # Zero padding after the end is what tar writes: accepted.
    padded = ("padded.tar", tarred + bytes(20 * 1024))
    assert uploaded(api, alice, "alice/other", {}, archives=[padded])["number"] == 1


def test_uploads_over_the_limits_are_rejected_and_nothing_is_stored(
    api: TestClient, backends: Backends, alice: Actor
) -> None:
    zeros = bytes(60 * KIB)  # below max_file_size, but compresses about 500 times
    many = [good("m"), *((f"f{i:02}.txt", f"{i}".encode()) for i in range(12))]
    attacks = [
        Attack(
            "zip bomb",
            archives=[("bomb.zip", make_zip([good("z"), ("zeros.bin", zeros)]))],
            entry="bomb.zip",
            words=["compression bomb", "max_ratio"],
        ),
        Attack(
            "tar.gz bomb",
            archives=[("bomb.tar.gz", make_tar([good("t"), ("zeros.bin", zeros)], gz=True))],
            entry="bomb.tar.gz",
            words=["compression bomb", "'zeros.bin'"],
        ),
        Attack(
            "too many files in a zip",
            archives=[("many.zip", make_zip(many))],
            entry="f11.txt",
            words=["more than 12 files", "max_entries"],
        ),
        Attack(
            "too many files in a tar",
            archives=[("many.tar", make_tar(many))],
            entry="f11.txt",
            words=["more than 12 files"],
        ),
        Attack(
            "too many files across parts",
            files=dict(good(f"p{i}") for i in range(10)),
            archives=[("two.zip", make_zip([("x.txt", b"x"), ("y.txt", b"y"), ("z.txt", b"z")]))],
            entry="z.txt",
            words=["max_entries"],
        ),
        Attack(
            "a file over max_file_size in a zip",
            archives=[("big.zip", make_zip([good("b"), ("big.bin", content("big", 65 * KIB))]))],
            entry="big.bin",
            words=["max_file_size", "64 KiB"],
        ),
        Attack(
            "a file over max_file_size in a tar.gz",
            archives=[
                ("big.tgz", make_tar([good("g"), ("big.bin", content("big", 65 * KIB))], gz=True))
            ],
            entry="big.bin",
            words=["max_file_size"],
        ),
        Attack(
            "a plain file over max_file_size",
            files={"ok.txt": b"ok", "big.bin": content("plain big", 64 * KIB + 1)},
            entry="big.bin",
            words=["max_file_size"],
        ),
        Attack(
            "files adding up to more than max_total_size",
            archives=[
                ("total.zip", make_zip((f"part{i}.txt", _hex(f"t{i}", 60 * KIB)) for i in range(9)))
            ],
            entry="part8.txt",
            words=["max_total_size", "512 KiB"],
        ),
        Attack(
            "too many plain parts",
            files=dict(good(f"q{i}") for i in range(13)),
            words=["more than 12 files", "max_entries"],
        ),
    ]
    _run_attacks(api, backends, alice, attacks)


def test_hostile_plain_file_names_are_rejected_and_nothing_is_stored(
    api: TestClient, backends: Backends, alice: Actor
) -> None:
    harmless = dict([good("plain")])
    attacks = [
        Attack(
            "traversal", files={**harmless, "../evil.v": b"x"}, entry="../evil.v", words=["'..'"]
        ),
        Attack("deep traversal", files={**harmless, "rtl/../../x": b"x"}, entry="rtl/../../x"),
        Attack("absolute", files={**harmless, "/etc/passwd": b"x"}, entry="/etc/passwd"),
        Attack("reserved", files={**harmless, ".hwrepo/x": b"x"}, entry=".hwrepo/x"),
        Attack(
            "a right-to-left override",
            files={**harmless, "evil\u202etxt.exe": b"x"},
            entry="evil\u202etxt.exe",
            words=["U+202E"],
        ),
        Attack("directory field", files=harmless, directory="../up", entry="../up"),
        Attack(
            "directory field for an archive",
            archives=[("a.zip", make_zip([("a.txt", b"a")]))],
            directory="a/../../up",
            entry="a/../../up",
        ),
        Attack("no files at all", words=["multipart/form-data"]),
    ]
    _run_attacks(api, backends, alice, attacks)


def test_the_limits_come_from_the_settings(api: TestClient, alice: Actor) -> None:
    create_project(api, alice, "blinky")
    r = upload(api, alice, "alice/blinky", {"big.bin": content("x", 64 * KIB + 1)})
    assert assert_problem(r, 422)["entry"] == "big.bin"
    assert uploaded(api, alice, "alice/blinky", {"max.bin": content("x", 64 * KIB)})["number"] == 1
