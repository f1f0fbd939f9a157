"""The bad-input corpus shared by the tests of archives, of the simulation sandbox and of the
hostile-input table: archive members no tool should unpack as given, and testbenches that try
to outrun, outgrow or escape their sandbox."""

from __future__ import annotations

import tarfile
import warnings
from collections.abc import Iterable

from tests.integration.helpers import content, make_zip, tar_special

# -- archives ------------------------------------------------------------------------------------


def good(label: str) -> tuple[str, bytes]:
    """A harmless member ahead of the hostile one: it must not be stored either."""
    return f"good-{label}.txt", content(f"good {label}", 700)


def dup_zip(members: Iterable[tuple[str, bytes]]) -> bytes:
    """A zip that holds one name twice (zipfile warns, and writes it all the same)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return make_zip(members)


def tar_member(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    return tar_special(name, kind, linkname=linkname), b""


# -- testbenches (tests/test_counter.py of a copy of designs/rtl-counter) ------------------------

HEADER = "import os\nimport cocotb\nfrom cocotb.triggers import Timer\n\n"
SHORT = '[[testbench]]\nmodules = ["tests/test_counter.py"]\ntimeout = {timeout}\n'

ENDLESS_LOOP = (
    "@cocotb.test()\nasync def test_first(dut):\n    await Timer(1, 'ns')\n\n"
    "@cocotb.test()\nasync def test_forever(dut):\n    while True:\n        pass\n"
)
FORK_LOOP = "@cocotb.test()\nasync def test_bomb(dut):\n    while True:\n        os.fork()\n"
HUGE_ALLOCATION = (
    "@cocotb.test()\nasync def test_hog(dut):\n"
    "    blob = bytearray(10 * 1024**3)\n    assert len(blob)\n"
)
