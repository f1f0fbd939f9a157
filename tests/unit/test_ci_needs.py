"""Under CI=true a test whose tool is missing fails instead of skipping (tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests import conftest


class Item:
    def __init__(self, *marks: Any) -> None:
        self.marks = [m.mark for m in marks]

    def iter_markers(self, name: str) -> list[Any]:
        return [m for m in self.marks if m.name == name]


@pytest.mark.parametrize("in_ci", [True, False])
def test_a_missing_tool_fails_under_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, in_ci: bool
) -> None:
    monkeypatch.setattr(conftest, "IN_CI", in_ci)
    item = Item(pytest.mark.needs("kicad-cli is not on PATH"))
    expected = pytest.fail.Exception if in_ci else pytest.skip.Exception
    with pytest.raises(expected, match="kicad-cli is not on PATH"):
        conftest.pytest_runtest_setup(item)  # type: ignore[arg-type]


def test_a_present_tool_runs_the_test(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conftest, "IN_CI", True)
    conftest.pytest_runtest_setup(Item(pytest.mark.needs(None)))  # type: ignore[arg-type]
