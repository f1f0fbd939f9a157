"""Every check kind, in one table. Adding a kind: one module, one line here."""

from __future__ import annotations

from hwrepo.checks.base import CheckKind

KINDS: dict[str, type[CheckKind]] = {}


def register(cls: type[CheckKind]) -> type[CheckKind]:
    KINDS[cls.name] = cls
    return cls


def all_kinds() -> list[CheckKind]:
    _load()
    return [cls() for cls in KINDS.values()]


def get_kind(name: str) -> CheckKind:
    _load()
    return KINDS[name]()


def _load() -> None:
    # The kinds' modules, imported once so their @register runs.
    from hwrepo.checks import kinds  # noqa: F401
