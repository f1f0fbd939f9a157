"""Every check kind, in one table (hwrepo/checks/kinds.py lists the classes)."""

from __future__ import annotations

from functools import cache

from hwrepo.checks.core.kind import CheckKind


@cache
def kinds_table() -> dict[str, type[CheckKind]]:
    from hwrepo.checks.kinds import KINDS

    return {cls.name: cls for cls in KINDS}


def all_kinds() -> list[CheckKind]:
    return [cls() for cls in kinds_table().values()]


def get_kind(name: str) -> CheckKind:
    return kinds_table()[name]()
