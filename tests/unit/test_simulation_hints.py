"""The hints a simulation check adds to a failed import: a testbench written for cocotb 1, and a
module nothing installed for the testbench provides."""

from __future__ import annotations

import pytest

from hwrepo.checks.simulation.kind import _hint


@pytest.mark.parametrize(
    "message",
    [
        "ImportError: cannot import name 'BaseClock' from 'cocotb.clock'",
        "ImportError: cannot import name 'fork' from 'cocotb'",
        "ModuleNotFoundError: No module named 'cocotb.binary'",
    ],
)
def test_a_name_cocotb_2_removed_suggests_cocotb_1_9(message: str) -> None:
    hint = _hint(f"the testbench could not run: {message}", "2.1.0")
    assert hint is not None and 'cocotb = "1.9"' in hint, hint
    # with cocotb 1.9 itself the name is there: the failure is something else
    assert _hint(message, "1.9.2") is None


@pytest.mark.parametrize("module", ["cocotb_test", "cocotbext", "numpy.random"])
def test_a_module_nothing_installed_provides_names_where_to_ask_for_it(module: str) -> None:
    hint = _hint(f"ModuleNotFoundError: No module named '{module}'", "2.1.0")
    assert hint is not None, module
    assert f"provides {module!r}" in hint
    assert "requirements.txt beside the testbench" in hint and "[[testbench]]" in hint


def test_no_hint_for_cocotb_itself_or_other_failures() -> None:
    assert _hint("ModuleNotFoundError: No module named 'cocotb.handle_x'", "2.1.0") is None
    assert _hint("ImportError: cannot import name 'Thing' from 'cocotb.triggers'", "2.1.0") is None
    assert _hint("AssertionError: 1 != 2", "2.1.0") is None
