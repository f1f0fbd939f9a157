"""Unit tests for hwrepo.domain.paths."""

from __future__ import annotations

import pickle

import pytest

from hwrepo.domain.paths import (
    MAX_PATH_CHARS,
    MAX_SEGMENT_BYTES,
    UnsafePath,
    normalise_dirpath,
    normalise_relpath,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("board.kicad_pcb", "board.kicad_pcb"),
        ("a/b/c.txt", "a/b/c.txt"),
        ("./a//b/./c/", "a/b/c"),
        ("a/b/", "a/b"),
        ("a\\b\\c.v", "a/b/c.v"),
        ("My Board/Power Supply.kicad_sch", "My Board/Power Supply.kicad_sch"),
        ("Überträger/ß-滤波器.kicad_sch", "Überträger/ß-滤波器.kicad_sch"),
        ("Cafe\u0301/re\u0301sume\u0301.txt", "Caf\u00e9/r\u00e9sum\u00e9.txt"),
        (".hwrepo-notes/x", ".hwrepo-notes/x"),
        ("docs/.hwrepo", "docs/.hwrepo"),
        ("notes:1.txt", "notes:1.txt"),
        ("...", "..."),
        ("a/..b/c..", "a/..b/c.."),
        ("  spaced  /x", "  spaced  /x"),
    ],
)
def test_normalises(name: str, expected: str) -> None:
    assert normalise_relpath(name) == expected


def test_result_is_a_fixed_point() -> None:
    for name in ["./a//b/./c/", "Cafe\u0301/x", "a\\b", "x"]:
        once = normalise_relpath(name)
        assert normalise_relpath(once) == once


@pytest.mark.parametrize(
    ("name", "base", "expected"),
    [
        ("x.txt", "", "x.txt"),
        ("x.txt", "hw/rev-a", "hw/rev-a/x.txt"),
        ("x.txt", "./hw//rev-a/", "hw/rev-a/x.txt"),
        ("x.txt", ".", "x.txt"),
        ("sub/x.txt", "hw\\boards", "hw/boards/sub/x.txt"),
        (".hwrepo/x", "sub", "sub/.hwrepo/x"),
        ("e\u0301.txt", "Cafe\u0301", "Caf\u00e9/\u00e9.txt"),
    ],
)
def test_joins_under_base(name: str, base: str, expected: str) -> None:
    assert normalise_relpath(name, base=base) == expected


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "empty"),
        (".", "does not name a file"),
        ("./", "does not name a file"),
        ("././/", "does not name a file"),
        ("/etc/passwd", "absolute"),
        ("//server/share/x", "absolute"),
        ("\\\\server\\share\\x", "absolute"),
        ("\\x", "absolute"),
        ("C:\\Windows\\x", "drive letter"),
        ("c:/x", "drive letter"),
        ("C:x", "drive letter"),
        ("..", "'..'"),
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("a/b/..", "'..'"),
        ("a/../b", "'..'"),
        ("..\\x", "'..'"),
        ("a\\..\\..\\x", "'..'"),
        ("a\x00b", "U+0000"),
        ("a\nb", "U+000A"),
        ("a\rb", "U+000D"),
        ("a\tb", "U+0009"),
        ("a\x1bb", "U+001B"),
        ("a\x7fb", "U+007F"),
        ("a\x85b", "U+0085"),
        ("a\u2028b", "U+2028"),
        ("a\u2029b", "U+2029"),
        ("a\udcffb", "U+DCFF"),
        ("evil\u202etxt.exe", "invisible formatting character U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ("a\u200db", "U+200D (ZERO WIDTH JOINER)"),
        ("a\u2067b/c", "U+2067 (RIGHT-TO-LEFT ISOLATE)"),
        ("a/\u061cb", "U+061C (ARABIC LETTER MARK)"),
        (".hwrepo", "reserved"),
        (".hwrepo/config.json", "reserved"),
        ("./.hwrepo/x", "reserved"),
        (".HWRepo/x", "reserved"),
        ("\\.hwrepo\\x", "absolute"),
    ],
)
def test_rejects(name: str, fragment: str) -> None:
    with pytest.raises(UnsafePath) as caught:
        normalise_relpath(name)
    assert caught.value.path == name
    assert fragment in caught.value.reason
    assert repr(name) in str(caught.value)


def test_length_limits() -> None:
    longest = "/".join(["a" * 99] * 10) + "/" + "b" * 24
    assert len(longest) == MAX_PATH_CHARS
    assert normalise_relpath(longest) == longest
    with pytest.raises(UnsafePath, match="1025 characters"):
        normalise_relpath(longest + "c")


def test_raw_name_length_counts_before_collapsing() -> None:
    name = "./" * 600 + "x"
    with pytest.raises(UnsafePath, match="over the limit of 1024"):
        normalise_relpath(name)


def test_segment_limit_is_in_utf8_bytes() -> None:
    assert normalise_relpath("a" * MAX_SEGMENT_BYTES) == "a" * MAX_SEGMENT_BYTES
    assert normalise_relpath("é" * 127 + "a") == "é" * 127 + "a"  # 255 bytes
    with pytest.raises(UnsafePath, match="256 bytes"):
        normalise_relpath("d/" + "é" * 128)  # 128 characters, 256 bytes
    with pytest.raises(UnsafePath, match="256 bytes"):
        normalise_relpath("a" * 256)


def test_joined_length_counts() -> None:
    base = "d" * 200 + "/" + "e" * 200 + "/" + "f" * 200
    name = "g" * 200 + "/" + "h" * 221
    with pytest.raises(UnsafePath) as caught:
        normalise_relpath(name, base=base)
    assert caught.value.path == name
    assert "1024" in caught.value.reason


@pytest.mark.parametrize("base", ["../up", "/abs", "C:\\x", "a\x00", ".hwrepo", ".hwrepo/sub"])
def test_bad_base_is_blamed(base: str) -> None:
    with pytest.raises(UnsafePath) as caught:
        normalise_relpath("x.txt", base=base)
    assert caught.value.path == base


def test_dirpath_allows_the_root() -> None:
    assert normalise_dirpath("") == ""
    assert normalise_dirpath(".") == ""
    assert normalise_dirpath("./") == ""
    assert normalise_dirpath("hw/boards/") == "hw/boards"
    assert normalise_dirpath("", base="hw") == "hw"
    assert normalise_dirpath("./x/", base="hw") == "hw/x"
    for bad in ["/", "..", "a/../..", ".hwrepo", "a\nb"]:
        with pytest.raises(UnsafePath):
            normalise_dirpath(bad)


def test_unsafe_path_is_a_value_error_and_pickles() -> None:
    exc = UnsafePath("../x", "the path contains a '..' segment")
    assert isinstance(exc, ValueError)
    again = pickle.loads(pickle.dumps(exc))
    assert (again.path, again.reason, str(again)) == (exc.path, exc.reason, str(exc))


def test_non_string_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        normalise_relpath(b"x")  # type: ignore[arg-type]
