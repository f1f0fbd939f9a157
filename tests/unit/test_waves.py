"""The waveform reader the viewer's sandbox runs: signals, values as bit strings with x and z,
changes decimated to one per pixel (a dense stretch keeps its count), the value at a time."""

from __future__ import annotations

from pathlib import Path

from hwrepo.checks.simulation import waves

VCD = """$timescale 1ns $end
$scope module top $end
$var wire 4 ! bus [3:0] $end
$var wire 1 " b $end
$var wire 1 # clk $end
$upscope $end
$enddefinitions $end
#0
bxxxx !
z"
0#
#5
b1010 !
1"
#10
b1z01 !
0"
"""


def write(tmp_path: Path) -> Path:
    # a clock toggling every 1 ns from 20 to 1019 ns: 1000 changes
    text = VCD + "".join(f"#{t}\n{(t - 19) % 2}#\n" for t in range(20, 1020))
    path = tmp_path / "waves.vcd"
    path.write_text(text)
    return path


def test_signals_and_timescale(tmp_path: Path) -> None:
    found = waves.signals({"file": str(write(tmp_path))})
    assert found["timescale_s"] == 1e-9
    assert found["end"] == 1019
    assert {s["name"]: s["width"] for s in found["signals"]} == {
        "top.bus": 4,
        "top.b": 1,
        "top.clk": 1,
    }


def test_values_keep_x_and_z(tmp_path: Path) -> None:
    got = waves.changes(
        {
            "file": str(write(tmp_path)),
            "signals": ["top.bus", "top.b"],
            "start": 0,
            "end": 15,
            "pixels": 100,
        }
    )["signals"]
    assert got["top.bus"]["initial"] == "xxxx"
    assert got["top.bus"]["changes"] == [[5, "1010", 1], [10, "1z01", 1]]
    assert got["top.b"]["initial"] == "z"
    assert got["top.b"]["changes"] == [[5, "1", 1], [10, "0", 1]]
    # the value at a time: the one held at the window's start
    at = waves.changes(
        {"file": str(write(tmp_path)), "signals": ["top.bus"], "start": 7, "end": 8, "pixels": 1}
    )["signals"]["top.bus"]
    assert at["initial"] == "1010" and at["changes"] == []


def test_changes_are_decimated_to_pixels(tmp_path: Path) -> None:
    path = str(write(tmp_path))
    coarse = waves.changes(
        {"file": path, "signals": ["top.clk"], "start": 0, "end": 1020, "pixels": 10}
    )["signals"]["top.clk"]
    assert len(coarse["changes"]) <= 10
    assert sum(n for _, _, n in coarse["changes"]) == 1000  # every change counted, none sent
    fine = waves.changes(
        {"file": path, "signals": ["top.clk", "top.nope"], "start": 100, "end": 110, "pixels": 1000}
    )["signals"]
    assert [t for t, _, n in fine["top.clk"]["changes"]] == list(range(101, 111))
    assert all(n == 1 for _, _, n in fine["top.clk"]["changes"])
    assert fine["top.nope"] == {"missing": True}
