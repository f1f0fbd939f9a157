"""Unit tests for hwrepo.adapters.archives: staging uploads and rejecting hostile archives."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import pickle
import stat
import struct
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from hwrepo.adapters.archives import (
    ACCEPTED_FORMATS,
    CHUNK_SIZE,
    ArchiveLimits,
    ArchiveRejected,
    StagedFile,
    StagingArea,
)
from hwrepo.domain.paths import UnsafePath

KIB = 1024
MIB = 1024 * 1024
LIMITS = ArchiveLimits(
    max_entries=10, max_file_size=64 * KIB, max_total_size=256 * KIB, max_ratio=100.0
)

Member = tuple["str | zipfile.ZipInfo", bytes]
TarMember = tuple["str | tarfile.TarInfo", bytes]


# -- builders ----------------------------------------------------------------------------------


def content(label: str, size: int = 100) -> bytes:
    """Incompressible-enough bytes, so ordinary archives stay far below any ratio limit."""
    seed = hashlib.sha256(label.encode()).digest()
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


def make_zip(
    path: Path, members: Iterable[Member], compression: int = zipfile.ZIP_DEFLATED
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are deliberate in some tests
        with zipfile.ZipFile(path, "w", compression) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return path


def tar_info(name: str, kind: bytes = tarfile.REGTYPE, **attrs: Any) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def make_tar(path: Path, members: Iterable[TarMember], mode: str = "w") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as archive:  # type: ignore[call-overload]
        for item, data in members:
            info = tar_info(item) if isinstance(item, str) else item
            if info.isreg():
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            else:
                archive.addfile(info)
    return path


def zero_tar_gz(path: Path, name: str, size: int) -> Path:
    """A gzip-compressed tar holding one file of `size` zero bytes, written in chunks."""

    class Zeros(io.RawIOBase):
        def __init__(self) -> None:
            self.left = size

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            count = min(len(buffer), self.left)
            buffer[:count] = bytes(count)
            self.left -= count
            return count

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        archive.addfile(tar_info(name, size=size), io.BufferedReader(Zeros()))
    return path


def zip_field_offsets(data: bytes) -> tuple[int, int]:
    """Offsets of the local header and the central directory header of a one-member zip."""
    assert data[:4] == b"PK\x03\x04"
    central = data.rindex(b"PK\x01\x02")  # the central directory follows all member data
    return 0, central


def lying_zip(path: Path, name: str, real_size: int, declared_size: int) -> bytes:
    """A deflated zip of `real_size` zeros whose headers declare `declared_size` bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, bytes(real_size))
    data = bytearray(buffer.getvalue())
    local, central = zip_field_offsets(bytes(data))
    struct.pack_into("<I", data, local + 22, declared_size)  # local header: uncompressed size
    struct.pack_into("<I", data, central + 24, declared_size)  # central directory: same
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return bytes(data)


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    directory = tmp_path / "staging"
    directory.mkdir()
    return directory


@pytest.fixture
def area(staging: Path) -> StagingArea:
    return StagingArea(staging, LIMITS)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    return tmp_path / "in"


def add(area: StagingArea, archive: Path, *, base: str = "", name: str | None = None) -> Any:
    with archive.open("rb") as stream:
        return area.add_archive(name or archive.name, stream, base=base)


def rejected(area: StagingArea, archive: Path, *, base: str = "") -> ArchiveRejected:
    with pytest.raises(ArchiveRejected) as caught:
        add(area, archive, base=base)
    return caught.value


def listing(directory: Path) -> list[str]:
    return sorted(entry.name for entry in directory.iterdir())


def summary(area: StagingArea) -> list[tuple[str, int, str]]:
    return [(f.path, f.size, f.sha256) for f in area.files]


def check_staged(staged: StagedFile, path: str, data: bytes, staging: Path) -> None:
    assert staged.path == path
    assert staged.size == len(data)
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert staged.local_path.parent == staging
    assert staged.local_path.read_bytes() == data


class ReadOnly:
    """An upload stream offering nothing but read(), like a spooled body that cannot seek."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)
        self.requests: list[int] = []

    def read(self, size: int = -1) -> bytes:
        self.requests.append(size)
        return self._inner.read(size)


class Endless:
    """A stream that never ends, counting what it handed out."""

    def __init__(self) -> None:
        self.produced = 0
        self.largest_request = 0

    def read(self, size: int = -1) -> bytes:
        assert size > 0, "must read in bounded chunks"
        self.largest_request = max(self.largest_request, size)
        self.produced += size
        return b"x" * size


# -- plain files -------------------------------------------------------------------------------


def test_add_file_hashes_and_copies(area: StagingArea, staging: Path) -> None:
    data = content("big", 2 * MIB + 12345)
    big = StagingArea(staging, ArchiveLimits())
    stream = ReadOnly(data)
    staged = big.add_file("Power Supply/board.kicad_pcb", stream)  # type: ignore[arg-type]
    check_staged(staged, "Power Supply/board.kicad_pcb", data, staging)
    assert max(stream.requests) <= CHUNK_SIZE
    assert big.files == [staged]
    assert big.total_size == len(data)


def test_add_file_under_base_and_nfc(area: StagingArea, staging: Path) -> None:
    staged = area.add_file("Cafe\u0301.txt", io.BytesIO(b"hi"), base="./docs//notes/")
    check_staged(staged, "docs/notes/Caf\u00e9.txt", b"hi", staging)


def test_add_file_empty_file(area: StagingArea, staging: Path) -> None:
    staged = area.add_file("empty.txt", io.BytesIO(b""))
    check_staged(staged, "empty.txt", b"", staging)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a\x00b", ".hwrepo/x", "", "..\\x"])
def test_add_file_unsafe_name(area: StagingArea, staging: Path, name: str) -> None:
    with pytest.raises(UnsafePath) as caught:
        area.add_file(name, io.BytesIO(b"data"))
    assert caught.value.path == name
    assert area.files == []
    assert listing(staging) == []


def test_add_file_bad_base(area: StagingArea) -> None:
    with pytest.raises(UnsafePath) as caught:
        area.add_file("x.txt", io.BytesIO(b"data"), base="../elsewhere")
    assert caught.value.path == "../elsewhere"


def test_add_file_endless_stream_stops_at_the_limit(area: StagingArea, staging: Path) -> None:
    stream = Endless()
    with pytest.raises(ArchiveRejected) as caught:
        area.add_file("huge.bin", stream)  # type: ignore[arg-type]
    exc = caught.value
    assert (exc.entry, exc.archive) == ("huge.bin", None)
    assert "max_file_size" in exc.reason and "64 KiB" in exc.reason
    assert "huge.bin" in str(exc)
    assert stream.produced <= LIMITS.max_file_size + 1
    assert stream.largest_request <= CHUNK_SIZE
    assert area.files == []
    assert listing(staging) == []


def test_add_file_total_limit(staging: Path) -> None:
    area = StagingArea(staging, LIMITS)
    for index in range(4):
        area.add_file(f"f{index}.bin", io.BytesIO(content(str(index), 60 * KIB)))
    with pytest.raises(ArchiveRejected) as caught:
        area.add_file("last.bin", io.BytesIO(content("last", 60 * KIB)))
    assert caught.value.entry == "last.bin"
    assert "max_total_size" in caught.value.reason and "256 KiB" in caught.value.reason
    assert len(area.files) == 4
    assert len(listing(staging)) == 4


def test_add_file_entry_limit(area: StagingArea, staging: Path) -> None:
    for index in range(LIMITS.max_entries):
        area.add_file(f"f{index}.txt", io.BytesIO(b"x"))
    with pytest.raises(ArchiveRejected) as caught:
        area.add_file("one-too-many.txt", io.BytesIO(b"x"))
    assert caught.value.entry == "one-too-many.txt"
    assert "max_entries" in caught.value.reason and "10" in caught.value.reason
    assert len(area.files) == LIMITS.max_entries
    assert len(listing(staging)) == LIMITS.max_entries


def test_add_file_last_wins(area: StagingArea, staging: Path) -> None:
    first = area.add_file("a.txt", io.BytesIO(b"one"))
    area.add_file("b.txt", io.BytesIO(b"bee"))
    second = area.add_file("./a.txt", io.BytesIO(b"three"))
    assert [f.path for f in area.files] == ["b.txt", "a.txt"]
    assert area.files[-1] is second
    assert not first.local_path.exists()
    assert len(listing(staging)) == 2
    assert area.total_size == 3 + 5


def test_file_and_directory_may_not_share_a_path(area: StagingArea) -> None:
    area.add_file("hw/board", io.BytesIO(b"x"))
    with pytest.raises(UnsafePath, match="already holds files"):
        area.add_file("hw", io.BytesIO(b"y"))
    with pytest.raises(UnsafePath, match="'hw/board' is already a file"):
        area.add_file("hw/board/x.txt", io.BytesIO(b"y"))
    assert [f.path for f in area.files] == ["hw/board"]


# -- formats -----------------------------------------------------------------------------------


def test_zip_with_folders(area: StagingArea, staging: Path, inbox: Path) -> None:
    files = {
        "project/board.kicad_pcb": content("pcb"),
        "project/lib/Ü footprint.kicad_mod": content("mod"),
        "project/README": content("readme"),
    }
    archive = make_zip(inbox / "project.zip", [("project/", b""), ("project/lib/", b"")])
    with zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED) as extra:
        for name, data in files.items():
            extra.writestr(name, data)
    staged = add(area, archive)
    assert [f.path for f in staged] == list(files)  # the single top-level folder is kept
    for item in staged:
        check_staged(item, item.path, files[item.path], staging)
    assert area.files == staged
    assert area.total_size == sum(len(d) for d in files.values())
    assert len(listing(staging)) == 3  # the archive copy is gone


@pytest.mark.parametrize(("mode", "suffix"), [("w", ".tar"), ("w:gz", ".tar.gz"), ("w:gz", ".tgz")])
def test_tar_formats(area: StagingArea, staging: Path, inbox: Path, mode: str, suffix: str) -> None:
    members: list[TarMember] = [
        (tar_info(".", tarfile.DIRTYPE), b""),
        (tar_info("./rtl", tarfile.DIRTYPE), b""),
        ("./rtl/top.sv", content("top")),
        ("./rtl/fifo.sv", content("fifo")),
        ("doc.md", content("doc", 5000)),
    ]
    archive = make_tar(inbox / f"design{suffix}", members, mode)
    staged = add(area, archive, base="hw")
    assert [f.path for f in staged] == ["hw/rtl/top.sv", "hw/rtl/fifo.sv", "hw/doc.md"]
    check_staged(staged[2], "hw/doc.md", content("doc", 5000), staging)
    assert len(listing(staging)) == 3


def test_format_is_detected_by_content(area: StagingArea, inbox: Path) -> None:
    zipped = make_zip(inbox / "a.zip", [("z.txt", b"zip")])
    tarred = make_tar(inbox / "b.tar", [("t.txt", b"tar")], "w:gz")
    assert [f.path for f in add(area, zipped, name="really-a-zip.tar")] == ["z.txt"]
    assert [f.path for f in add(area, tarred, name="upload.bin")] == ["t.txt"]


def test_stored_zip(area: StagingArea, staging: Path, inbox: Path) -> None:
    archive = make_zip(inbox / "s.zip", [("a.bin", content("a"))], zipfile.ZIP_STORED)
    check_staged(add(area, archive)[0], "a.bin", content("a"), staging)


def test_non_seekable_stream(area: StagingArea, staging: Path, inbox: Path) -> None:
    archive = make_zip(inbox / "a.zip", [("x/y.txt", b"hello")])
    stream = ReadOnly(archive.read_bytes())
    staged = area.add_archive("a.zip", stream)  # type: ignore[arg-type]
    check_staged(staged[0], "x/y.txt", b"hello", staging)
    assert max(stream.requests) <= CHUNK_SIZE


def test_empty_archives(area: StagingArea, staging: Path, inbox: Path) -> None:
    assert add(area, make_zip(inbox / "e.zip", [])) == []
    assert add(area, make_tar(inbox / "e.tar", [])) == []
    assert add(area, make_tar(inbox / "e.tgz", [], "w:gz")) == []
    assert add(area, make_zip(inbox / "dirs.zip", [("a/", b""), ("a/b/", b"")])) == []
    assert listing(staging) == []


@pytest.mark.parametrize(
    ("filename", "data"),
    [
        ("notes.txt", b"just some text, not an archive\n" * 40),
        ("short.zip", b"PK"),
        ("design.tar.bz2", b"bz2"),
        ("design.tar.xz", b"xz"),
        ("single.gz", gzip.compress(b"a lone gzip-compressed file, no tar inside\n" * 30)),
        ("empty.zip", b""),
    ],
)
def test_unsupported_formats(area: StagingArea, inbox: Path, filename: str, data: bytes) -> None:
    if data == b"bz2":
        data = bz2.compress(make_tar(inbox / "x.tar", [("a", b"a")]).read_bytes())
    elif data == b"xz":
        data = lzma.compress(make_tar(inbox / "y.tar", [("a", b"a")]).read_bytes())
    path = inbox / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    exc = rejected(area, path)
    assert exc.entry == exc.archive == filename
    assert ACCEPTED_FORMATS in exc.reason
    assert filename in str(exc)


# -- unsafe members ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../x", "a/../../x", "..\\evil.dll", "a\\..\\..\\x", "ok/../../../etc/cron.d/x", ".."],
)
def test_zip_traversal(area: StagingArea, staging: Path, inbox: Path, name: str) -> None:
    archive = make_zip(inbox / "evil.zip", [("fine.txt", b"ok"), (name, b"pwned")])
    exc = rejected(area, archive)
    assert (exc.entry, exc.archive) == (name, "evil.zip")
    assert "'..'" in exc.reason
    assert repr(name) in str(exc)
    assert area.files == []
    assert listing(staging) == []


@pytest.mark.parametrize("name", ["../x", "a/../../x", "..\\x"])
@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_tar_traversal(area: StagingArea, staging: Path, inbox: Path, name: str, mode: str) -> None:
    archive = make_tar(inbox / "evil.tar", [("fine.txt", b"ok"), (name, b"pwned")], mode)
    exc = rejected(area, archive)
    assert exc.entry == name
    assert repr(name) in str(exc)
    assert area.files == []
    assert listing(staging) == []


@pytest.mark.parametrize("name", ["/etc/passwd", "C:\\Windows\\evil.dll", "\\\\server\\x", "C:x"])
def test_absolute_zip_members(area: StagingArea, inbox: Path, name: str) -> None:
    exc = rejected(area, make_zip(inbox / "abs.zip", [(name, b"x")]))
    assert exc.entry == name
    assert "unsafe path" in exc.reason
    assert repr(name) in str(exc)


def test_absolute_tar_member(area: StagingArea, inbox: Path) -> None:
    exc = rejected(area, make_tar(inbox / "abs.tar", [("/etc/passwd", b"x")]))
    assert exc.entry == "/etc/passwd"
    assert "absolute" in exc.reason


@pytest.mark.parametrize("name", ["new\nline.txt", ".hwrepo/config", "d/" + "n" * 300])
def test_other_unsafe_names(area: StagingArea, inbox: Path, name: str) -> None:
    exc = rejected(area, make_zip(inbox / "bad.zip", [(name, b"x")]))
    assert exc.entry == name
    assert "unsafe path" in exc.reason
    assert isinstance(exc.__cause__, UnsafePath)


@pytest.mark.parametrize(
    ("name", "char"),
    [
        ("evil\u202etxt.exe", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ("rtl/\u2066top.v", "U+2066 (LEFT-TO-RIGHT ISOLATE)"),
        ("top\u200b.v", "U+200B (ZERO WIDTH SPACE)"),
        ("\ufeffREADME.md", "U+FEFF (ZERO WIDTH NO-BREAK SPACE)"),
        ("soft\u00adhyphen.txt", "U+00AD (SOFT HYPHEN)"),
    ],
)
@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_format_characters_in_names_are_rejected_escaped(
    area: StagingArea, staging: Path, inbox: Path, name: str, char: str, kind: str
) -> None:
    members = [("fine.txt", b"fine"), (name, b"deceptive")]
    if kind == "zip":
        archive = make_zip(inbox / "a.zip", members)
    else:
        archive = make_tar(inbox / f"a.{kind}", members, "w:gz" if kind == "tar.gz" else "w")
    exc = rejected(area, archive)
    assert exc.entry == name
    assert f"invisible formatting character {char}" in exc.reason
    message = str(exc)
    assert name not in message and repr(name) in message  # the character shown escaped
    assert message.isprintable()
    assert area.files == [] and listing(staging) == []
    with pytest.raises(UnsafePath, match="invisible formatting character"):
        area.add_file(name, io.BytesIO(b"x"))


def test_nul_in_a_zip_name(area: StagingArea, inbox: Path) -> None:
    # zipfile cannot write a NUL in a name (it cuts the name there), so patch the bytes
    archive = make_zip(inbox / "nul.zip", [("evil.txt#../../x", b"x")])
    data = archive.read_bytes().replace(b"evil.txt#../../x", b"evil.txt\x00../../x")
    archive.write_bytes(data)
    exc = rejected(area, archive)
    assert exc.entry == "evil.txt\x00../../x"
    assert "U+0000" in exc.reason


def test_hostile_directory_entries_reject_too(area: StagingArea, inbox: Path) -> None:
    exc = rejected(area, make_zip(inbox / "d.zip", [("../outside/", b"")]))
    assert exc.entry == "../outside/"
    exc = rejected(area, make_tar(inbox / "d.tar", [(tar_info("/abs", tarfile.DIRTYPE), b"")]))
    assert exc.entry == "/abs"


def zip_with_mode(path: Path, name: str, mode: int, data: bytes = b"target") -> Path:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return make_zip(path, [("fine.txt", b"ok"), (info, data)])


@pytest.mark.parametrize(
    ("mode", "fragment"),
    [
        (stat.S_IFLNK | 0o777, "symbolic link"),
        (stat.S_IFCHR | 0o600, "device file"),
        (stat.S_IFBLK | 0o600, "device file"),
        (stat.S_IFIFO | 0o600, "FIFO"),
        (stat.S_IFSOCK | 0o600, "socket"),
    ],
)
def test_zip_special_entries(
    area: StagingArea, staging: Path, inbox: Path, mode: int, fragment: str
) -> None:
    exc = rejected(area, zip_with_mode(inbox / "special.zip", "special", mode))
    assert exc.entry == "special"
    assert fragment in exc.reason
    assert "special" in str(exc)
    assert area.files == []
    assert listing(staging) == []


def test_zip_regular_mode_is_fine(area: StagingArea, inbox: Path) -> None:
    archive = zip_with_mode(inbox / "ok.zip", "script.sh", stat.S_IFREG | 0o755)
    assert [f.path for f in add(area, archive)] == ["fine.txt", "script.sh"]


@pytest.mark.parametrize(
    ("info", "fragment"),
    [
        (tar_info("link", tarfile.SYMTYPE, linkname="/etc/passwd"), "symbolic link"),
        (tar_info("hard", tarfile.LNKTYPE, linkname="fine.txt"), "hard link"),
        (tar_info("tty", tarfile.CHRTYPE, devmajor=4, devminor=1), "device file"),
        (tar_info("sda", tarfile.BLKTYPE, devmajor=8), "device file"),
        (tar_info("pipe", tarfile.FIFOTYPE), "FIFO"),
        (tar_info("label", b"V"), "tar type"),  # a GNU volume header
    ],
)
@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_tar_special_entries(
    area: StagingArea,
    staging: Path,
    inbox: Path,
    info: tarfile.TarInfo,
    fragment: str,
    mode: str,
) -> None:
    archive = make_tar(inbox / "special.tar", [("fine.txt", b"ok"), (info, b"")], mode)
    exc = rejected(area, archive)
    assert exc.entry == info.name
    assert fragment in exc.reason
    assert info.name in str(exc)
    assert area.files == []
    assert listing(staging) == []


def test_encrypted_zip_member(area: StagingArea, inbox: Path) -> None:
    archive = make_zip(inbox / "secret.zip", [("secret.txt", b"hidden")], zipfile.ZIP_STORED)
    data = bytearray(archive.read_bytes())
    local, central = zip_field_offsets(bytes(data))
    data[local + 6] |= 0x1  # general purpose flag: encrypted
    data[central + 8] |= 0x1
    archive.write_bytes(bytes(data))
    exc = rejected(area, archive)
    assert exc.entry == "secret.txt"
    assert "encrypted" in exc.reason


# -- limits ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["zip", "tar", "tgz"])
def test_member_over_max_file_size(
    area: StagingArea, staging: Path, inbox: Path, kind: str
) -> None:
    members = [("small.bin", content("s")), ("big/board.step", content("b", 64 * KIB + 1))]
    if kind == "zip":
        archive = make_zip(inbox / "a.zip", members)
    else:
        archive = make_tar(inbox / f"a.{kind}", members, "w" if kind == "tar" else "w:gz")
    exc = rejected(area, archive)
    assert exc.entry == "big/board.step"
    assert "max_file_size" in exc.reason and "64 KiB" in exc.reason
    assert "big/board.step" in str(exc)
    assert area.files == []
    assert listing(staging) == []


def test_member_exactly_at_max_file_size(area: StagingArea, inbox: Path) -> None:
    archive = make_zip(inbox / "a.zip", [("edge.bin", content("e", 64 * KIB))])
    assert add(area, archive)[0].size == 64 * KIB


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_too_many_entries_in_one_archive(
    area: StagingArea, staging: Path, inbox: Path, kind: str
) -> None:
    members = [(f"f{index:02}.txt", b"x") for index in range(LIMITS.max_entries + 1)]
    if kind == "zip":
        members.insert(3, ("dir/", b""))
        archive = make_zip(inbox / "many.zip", members)
    else:
        archive = make_tar(inbox / "many.tar", members)
    exc = rejected(area, archive)
    assert exc.entry == "f10.txt"
    assert "max_entries" in exc.reason
    assert area.files == []
    assert listing(staging) == []


def test_entries_count_across_the_whole_upload(area: StagingArea, inbox: Path) -> None:
    for index in range(6):
        area.add_file(f"plain{index}.txt", io.BytesIO(b"x"))
    fits = make_zip(inbox / "fits.zip", [(f"a{index}.txt", b"x") for index in range(4)])
    assert len(add(area, fits)) == 4
    one_more = make_tar(inbox / "more.tar", [("b.txt", b"x")])
    exc = rejected(area, one_more)
    assert exc.entry == "b.txt"
    assert "max_entries" in exc.reason
    assert len(area.files) == 10


def test_replaced_files_still_count_as_entries(area: StagingArea) -> None:
    for _ in range(LIMITS.max_entries):
        area.add_file("same.txt", io.BytesIO(b"x"))
    assert len(area.files) == 1
    with pytest.raises(ArchiveRejected, match="max_entries"):
        area.add_file("same.txt", io.BytesIO(b"x"))


def test_directories_do_not_count_as_entries(area: StagingArea, inbox: Path) -> None:
    members = [(f"d{index}/", b"") for index in range(30)]
    members += [(f"d{index}/f.txt", b"x") for index in range(LIMITS.max_entries)]
    assert len(add(area, make_zip(inbox / "dirs.zip", members))) == LIMITS.max_entries


@pytest.mark.parametrize("kind", ["zip", "tgz"])
def test_total_over_max_total_size(
    area: StagingArea, staging: Path, inbox: Path, kind: str
) -> None:
    area.add_file("first.bin", io.BytesIO(content("first", 60 * KIB)))
    members = [(f"part{index}.bin", content(str(index), 60 * KIB)) for index in range(4)]
    if kind == "zip":
        archive = make_zip(inbox / "parts.zip", members)
    else:
        archive = make_tar(inbox / "parts.tgz", members, "w:gz")
    exc = rejected(area, archive)
    assert exc.entry == "part3.bin"
    assert "max_total_size" in exc.reason and "256 KiB" in exc.reason
    assert [f.path for f in area.files] == ["first.bin"]
    assert len(listing(staging)) == 1


def test_archive_larger_than_the_total_limit(area: StagingArea, inbox: Path) -> None:
    members = [(f"p{index}.bin", content(str(index), 50 * KIB)) for index in range(6)]
    archive = make_zip(inbox / "huge.zip", members, zipfile.ZIP_STORED)
    exc = rejected(area, archive)
    assert exc.entry == exc.archive == "huge.zip"
    assert "max_total_size" in exc.reason


def test_zip_bomb_rejected_by_declared_sizes(area: StagingArea, staging: Path, inbox: Path) -> None:
    limits = ArchiveLimits(max_file_size=8 * MIB, max_total_size=16 * MIB, max_ratio=100.0)
    area = StagingArea(staging, limits)
    archive = make_zip(inbox / "bomb.zip", [("zeros.bin", bytes(4 * MIB))])
    exc = rejected(area, archive)
    assert exc.entry == exc.archive == "bomb.zip"
    assert "max_ratio" in exc.reason and "compression bomb" in exc.reason
    assert listing(staging) == []


def test_tar_gz_bomb_stopped_while_extracting(staging: Path, inbox: Path) -> None:
    limits = ArchiveLimits(max_file_size=64 * MIB, max_total_size=64 * MIB, max_ratio=200.0)
    area = StagingArea(staging, limits)
    area.add_file("keep.txt", io.BytesIO(b"keep"))
    archive = zero_tar_gz(inbox / "bomb.tar.gz", "zeros.bin", 16 * MIB)
    compressed = archive.stat().st_size
    assert compressed * 200 < 16 * MIB
    exc = rejected(area, archive)
    assert exc.entry == exc.archive == "bomb.tar.gz"
    assert "max_ratio" in exc.reason and "'zeros.bin'" in exc.reason
    assert "bomb.tar.gz" in str(exc)
    assert [f.path for f in area.files] == ["keep.txt"]
    assert len(listing(staging)) == 1


def test_tar_gz_bomb_after_the_end_marker(staging: Path, inbox: Path) -> None:
    # tarfile stops at the end-of-archive marker; the gzip stream goes on with 16 MiB of zeros
    area = StagingArea(staging, ArchiveLimits(max_ratio=200.0))
    tar_bytes = make_tar(inbox / "inner.tar", [("ok.txt", b"fine")]).read_bytes()
    archive = inbox / "trailer.tgz"
    archive.write_bytes(gzip.compress(tar_bytes + bytes(16 * MIB)))
    exc = rejected(area, archive)
    assert exc.entry == "trailer.tgz"
    assert "max_ratio" in exc.reason and "after the end-of-archive marker" in exc.reason
    assert area.files == []
    assert listing(staging) == []


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "trailer",
    [b"a hidden payload", bytes(512) + b"\x01", bytes(10240) + b"PK\x03\x04 a zip after it"],
)
def test_bytes_after_the_end_of_a_tar_are_rejected(
    area: StagingArea, staging: Path, inbox: Path, trailer: bytes, gz: bool
) -> None:
    tar_bytes = make_tar(inbox / "inner.tar", [("ok.txt", b"fine")]).read_bytes()
    archive = inbox / ("tail.tgz" if gz else "tail.tar")
    data = tar_bytes + trailer
    archive.write_bytes(gzip.compress(data) if gz else data)
    exc = rejected(area, archive)
    assert exc.entry == exc.archive == archive.name
    assert "it holds data after its end-of-archive marker" in exc.reason
    assert "belongs to no entry" in exc.reason
    assert area.files == [] and listing(staging) == []


@pytest.mark.parametrize("gz", [False, True])
def test_zero_padding_after_the_end_of_a_tar_is_fine(
    area: StagingArea, inbox: Path, gz: bool
) -> None:
    tar_bytes = make_tar(inbox / "inner.tar", [("ok.txt", b"fine")]).read_bytes()
    for padding in (0, 512, 10240):
        archive = inbox / ("padded.tgz" if gz else "padded.tar")
        data = tar_bytes + bytes(padding)
        archive.write_bytes(gzip.compress(data) if gz else data)
        assert [f.path for f in add(area, archive)] == ["ok.txt"]


def test_ratio_counts_every_member_of_an_archive(staging: Path, inbox: Path) -> None:
    limits = ArchiveLimits(max_file_size=MIB, max_total_size=64 * MIB, max_ratio=50.0)
    area = StagingArea(staging, limits)
    members = [(f"z{index}.bin", bytes(200 * KIB)) for index in range(20)]
    archive = make_tar(inbox / "zeros.tgz", members, "w:gz")
    exc = rejected(area, archive)
    assert exc.entry == "zeros.tgz"
    assert "max_ratio" in exc.reason
    assert area.files == []


def test_lying_zip_header_is_stopped(staging: Path, inbox: Path) -> None:
    # 8 MiB of zeros deflate to about 8 KiB; the headers claim 10 bytes, so every declared
    # size check passes. The member must still not yield more than it may.
    area = StagingArea(staging, ArchiveLimits(max_file_size=MIB, max_ratio=1e9))
    archive = inbox / "liar.zip"
    lying_zip(archive, "zeros.bin", 8 * MIB, 10)
    exc = rejected(area, archive)
    assert exc.entry == "zeros.bin"
    assert exc.archive == "liar.zip"
    assert "corrupt" in exc.reason
    assert "zeros.bin" in str(exc)
    assert area.files == []
    assert listing(staging) == []


class Inflater:
    """Reads a deflated zip member to the end of its compressed data, ignoring the declared
    size: how a reader that trusts the data rather than the header behaves."""

    def __init__(self, compressed: bytes) -> None:
        self._decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
        self._pending = compressed
        self.produced = 0

    def read(self, size: int = -1) -> bytes:
        assert size > 0, "must read in bounded chunks"
        out = self._decompressor.decompress(self._pending, size)
        self._pending = self._decompressor.unconsumed_tail
        self.produced += len(out)
        return out

    def __enter__(self) -> Inflater:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def test_limits_hold_on_bytes_produced_not_declared(
    staging: Path, inbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = lying_zip(inbox / "liar.zip", "zeros.bin", 8 * MIB, 10)
    readers: list[Inflater] = []

    def open_trusting_the_data(self: zipfile.ZipFile, info: zipfile.ZipInfo, *_: Any) -> Inflater:
        start = info.header_offset
        name_length, extra_length = struct.unpack("<HH", data[start + 26 : start + 30])
        begin = start + 30 + name_length + extra_length
        readers.append(Inflater(data[begin : begin + info.compress_size]))
        return readers[-1]

    monkeypatch.setattr(zipfile.ZipFile, "open", open_trusting_the_data)
    limits = ArchiveLimits(max_file_size=MIB, max_total_size=64 * MIB, max_ratio=1e9)
    area = StagingArea(staging, limits)
    exc = rejected(area, inbox / "liar.zip")
    assert exc.entry == "zeros.bin"
    assert "max_file_size" in exc.reason and "1 MiB" in exc.reason
    assert readers[0].produced <= MIB + 1
    assert listing(staging) == []

    # the same against the total and the ratio
    area = StagingArea(staging, ArchiveLimits(max_total_size=2 * MIB, max_ratio=1e9))
    exc = rejected(area, inbox / "liar.zip")
    assert "max_total_size" in exc.reason
    assert readers[1].produced <= 2 * MIB + 1
    area = StagingArea(staging, ArchiveLimits(max_ratio=100.0))
    exc = rejected(area, inbox / "liar.zip")
    assert exc.entry == "liar.zip"
    assert "max_ratio" in exc.reason
    assert readers[2].produced <= 100 * len(data) + 1
    assert listing(staging) == []


def test_zip_declaring_more_than_it_holds(area: StagingArea, inbox: Path) -> None:
    archive = inbox / "short.zip"
    data = bytearray(make_zip(archive, [("a.txt", content("a"))], zipfile.ZIP_STORED).read_bytes())
    local, central = zip_field_offsets(bytes(data))
    struct.pack_into("<I", data, local + 22, 150)
    struct.pack_into("<I", data, central + 24, 150)
    archive.write_bytes(bytes(data))
    exc = rejected(area, archive)
    assert exc.entry == "a.txt"
    assert "corrupt" in exc.reason


# -- corrupt archives --------------------------------------------------------------------------


def corrupt_zip(inbox: Path) -> Path:
    data = bytearray(make_zip(inbox / "c.zip", [("a.txt", content("a", 4000))]).read_bytes())
    local, _ = zip_field_offsets(bytes(data))
    start = local + 30 + len("a.txt")
    data[start : start + 64] = bytes(range(64))  # scramble the deflate stream
    archive = inbox / "c.zip"
    archive.write_bytes(bytes(data))
    return archive


def truncated(path: Path, keep: int) -> Path:
    """A copy of `path` cut after `keep` bytes (negative: that many bytes short)."""
    target = path.with_name("cut-" + path.name)
    target.write_bytes(path.read_bytes()[:keep])
    return target


@pytest.mark.parametrize(
    "case",
    [
        "zip-truncated",
        "zip-garbage",
        "zip-bad-deflate",
        "tgz-truncated",
        "tgz-bad-crc",
        "tar-truncated-in-data",
        "tar-truncated-at-boundary",
        "tar-garbage-header",
    ],
)
def test_corrupt_archives(area: StagingArea, staging: Path, inbox: Path, case: str) -> None:
    big = content("big", 40 * KIB)
    members = [("first.txt", content("first")), ("second.bin", big)]
    if case == "zip-truncated":
        archive = truncated(make_zip(inbox / "a.zip", members), 1000)
    elif case == "zip-garbage":
        archive = inbox / "g.zip"
        inbox.mkdir()
        archive.write_bytes(b"PK\x03\x04" + content("junk", 3000))
    elif case == "zip-bad-deflate":
        archive = corrupt_zip(inbox)
    elif case == "tgz-truncated":
        archive = truncated(make_tar(inbox / "a.tgz", members, "w:gz"), -100)
    elif case == "tgz-bad-crc":
        archive = make_tar(inbox / "a.tgz", members, "w:gz")
        data = bytearray(archive.read_bytes())
        data[-8] ^= 0xFF  # the gzip trailer's CRC-32
        archive.write_bytes(bytes(data))
    elif case == "tar-truncated-in-data":
        archive = truncated(make_tar(inbox / "a.tar", members), 6000)
    elif case == "tar-truncated-at-boundary":
        whole = make_tar(inbox / "a.tar", [("first.txt", b"x" * 512)])
        archive = truncated(whole, 1024)  # header and data block, no end-of-archive marker
    else:
        archive = make_tar(inbox / "a.tar", members)
        data = bytearray(archive.read_bytes())
        data[1024:1536] = b"\xff" * 512  # the header after first.txt's header and data
        archive.write_bytes(bytes(data))
    area.add_file("keep.txt", io.BytesIO(b"keep"))
    exc = rejected(area, archive)
    assert exc.archive == archive.name
    assert "corrupt" in exc.reason or "not a readable" in exc.reason
    assert exc.entry in str(exc)
    assert [f.path for f in area.files] == ["keep.txt"]
    assert len(listing(staging)) == 1


def test_empty_gzip_stream(area: StagingArea, inbox: Path) -> None:
    archive = inbox / "broken.tgz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"\xff" * 40)
    exc = rejected(area, archive)
    assert exc.entry == "broken.tgz"
    assert "gzip" in exc.reason


# -- replacement and rollback ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("second", "words"),
    [
        ("a.txt", "the archive holds two members of this name"),
        ("./a.txt", "it names the same file as the earlier member 'a.txt'"),
        ("x//../a.txt", "'..' segment"),  # unsafe before it is a duplicate
    ],
)
def test_a_zip_naming_one_file_twice_is_rejected(
    area: StagingArea, staging: Path, inbox: Path, second: str, words: str
) -> None:
    # Tools disagree on which of two members they extract: the archive is ambiguous.
    archive = make_zip(
        inbox / "dup.zip", [("a.txt", b"first"), ("b.txt", b"bee"), (second, b"second")]
    )
    area.add_file("keep.txt", io.BytesIO(b"keep"))
    exc = rejected(area, archive)
    assert (exc.entry, exc.archive) == (second, "dup.zip")
    assert words in exc.reason
    assert f"archive 'dup.zip' rejected at {second!r}" in str(exc)
    assert [f.path for f in area.files] == ["keep.txt"]
    assert len(listing(staging)) == 1


def test_duplicates_within_a_tar_last_wins(area: StagingArea, staging: Path, inbox: Path) -> None:
    # A tar may be appended to (tar -r): its later member of a name is the newer one.
    archive = make_tar(
        inbox / "dup.tar", [("a.txt", b"first"), ("b.txt", b"bee"), ("./a.txt", b"second")]
    )
    staged = add(area, archive)
    assert [(f.path, f.local_path.read_bytes()) for f in staged] == [
        ("b.txt", b"bee"),
        ("a.txt", b"second"),
    ]
    assert area.files == staged
    assert len(listing(staging)) == 2


def test_archive_replaces_earlier_files(area: StagingArea, staging: Path, inbox: Path) -> None:
    old = area.add_file("hw/a.txt", io.BytesIO(b"old"))
    area.add_file("hw/keep.txt", io.BytesIO(b"keep"))
    staged = add(area, make_tar(inbox / "new.tgz", [("a.txt", b"new")], "w:gz"), base="hw")
    assert not old.local_path.exists()
    assert [(f.path, f.local_path.read_bytes()) for f in area.files] == [
        ("hw/keep.txt", b"keep"),
        ("hw/a.txt", b"new"),
    ]
    assert staged == area.files[-1:]
    assert len(listing(staging)) == 2
    newer = area.add_file("hw/a.txt", io.BytesIO(b"newest"))
    assert not staged[0].local_path.exists()
    assert area.files[-1] is newer
    assert area.total_size == len(b"keep") + len(b"newest")


def test_rejected_archive_leaves_everything_as_it_was(
    area: StagingArea, staging: Path, inbox: Path
) -> None:
    area.add_file("a.txt", io.BytesIO(b"original"))
    area.add_file("b.txt", io.BytesIO(b"bee"))
    before_files = summary(area)
    before_listing = listing(staging)
    archive = make_zip(
        inbox / "bad.zip",
        [("a.txt", b"replacement"), ("c.txt", b"new"), ("../x", b"evil")],
    )
    exc = rejected(area, archive)
    assert exc.entry == "../x"
    assert summary(area) == before_files
    assert listing(staging) == before_listing
    assert area.files[0].local_path.read_bytes() == b"original"
    assert area.total_size == len(b"original") + len(b"bee")
    # the counters were restored too: the whole budget is still there
    fits = make_zip(inbox / "fits.zip", [(f"f{index}", b"x") for index in range(8)])
    assert len(add(area, fits)) == 8


def test_rejection_midway_through_a_copy_cleans_up(
    area: StagingArea, staging: Path, inbox: Path
) -> None:
    # compressible enough to stay small, not enough to trip max_ratio: the total limit is hit
    # in the middle of copying big.bin, after two members were already staged
    area = StagingArea(staging, ArchiveLimits(max_file_size=64 * KIB, max_total_size=100 * KIB))
    members = [
        ("ok1.bin", content("1", KIB) * 30),
        ("ok2.bin", content("2", KIB) * 30),
        ("big.bin", content("3", KIB) * 60),
    ]
    archive = make_tar(inbox / "mixed.tgz", members, "w:gz")
    area.add_file("keep.txt", io.BytesIO(b"keep"))
    exc = rejected(area, archive)
    assert exc.entry == "big.bin"
    assert "max_total_size" in exc.reason
    assert [f.path for f in area.files] == ["keep.txt"]
    assert len(listing(staging)) == 1


def test_file_directory_clash_in_an_archive(area: StagingArea, staging: Path, inbox: Path) -> None:
    area.add_file("hw", io.BytesIO(b"a file"))
    exc = rejected(area, make_zip(inbox / "a.zip", [("hw/board.kicad_pcb", b"x")]))
    assert exc.entry == "hw/board.kicad_pcb"
    assert "'hw' is already a file" in exc.reason
    exc = rejected(area, make_zip(inbox / "b.zip", [("x/y", b"1"), ("x", b"2")]))
    assert exc.entry == "x"
    assert [f.path for f in area.files] == ["hw"]
    assert len(listing(staging)) == 1


def test_bad_base_for_an_archive(area: StagingArea, inbox: Path) -> None:
    archive = make_zip(inbox / "a.zip", [("x", b"1")])
    with pytest.raises(UnsafePath):
        add(area, archive, base="/srv")


# -- the exception -----------------------------------------------------------------------------


def test_archive_rejected_messages_and_pickling() -> None:
    member = ArchiveRejected("../x", "evil.zip", "unsafe path")
    whole = ArchiveRejected("evil.zip", "evil.zip", "not an archive")
    plain = ArchiveRejected("big.bin", None, "too large")
    assert str(member) == "archive 'evil.zip' rejected at '../x': unsafe path"
    assert str(whole) == "archive 'evil.zip' rejected: not an archive"
    assert str(plain) == "file 'big.bin' rejected: too large"
    for exc in (member, whole, plain):
        assert isinstance(exc, ValueError)
        again = pickle.loads(pickle.dumps(exc))
        assert (again.entry, again.archive, again.reason) == (exc.entry, exc.archive, exc.reason)


def test_archive_limits_defaults() -> None:
    limits = ArchiveLimits()
    assert limits.max_entries == 20_000
    assert limits.max_file_size == 2 * 1024**3
    assert limits.max_total_size == 8 * 1024**3
    assert limits.max_ratio == 200.0
