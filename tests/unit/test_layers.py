"""The layering rule: SQL only in the repository. No module outside hwrepo/adapters/db/ may
import SQLAlchemy (or Alembic) or the ORM tables; services and entry points go through `Index`."""

from __future__ import annotations

import ast
from pathlib import Path

import hwrepo

PACKAGE = Path(hwrepo.__file__).parent
DB_ADAPTER = PACKAGE / "adapters" / "db"
FORBIDDEN = ("sqlalchemy", "alembic", "hwrepo.adapters.db.orm", "hwrepo.adapters.db.engine")

# Modules outside hwrepo/adapters/db/ allowed to import one of FORBIDDEN, with the reason.
ALLOWED: dict[str, str] = {}


def _imports(tree: ast.AST, package: str = "hwrepo") -> set[str]:
    """Every module (and module.name) imported anywhere in `tree`; relative imports are resolved
    against `package`, the dotted package the module lives in."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join([*base, node.module] if node.module else base)
            if node.level == 0:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _package_of(path: Path) -> str:
    return ".".join(["hwrepo", *path.relative_to(PACKAGE).parent.parts])


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def _modules_outside_db() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if DB_ADAPTER not in p.parents]


def test_the_package_is_scanned() -> None:
    modules = {p.relative_to(PACKAGE).as_posix() for p in _modules_outside_db()}
    assert {"service_layer/checks.py", "service_layer/outbox.py", "entrypoints/cli.py"} <= modules
    assert not any(m.startswith("adapters/db/") for m in modules)


def test_no_sql_outside_the_db_adapter() -> None:
    offenders = {}
    for path in _modules_outside_db():
        module = path.relative_to(PACKAGE).as_posix()
        tree = ast.parse(path.read_text(), str(path))
        found = sorted(n for n in _imports(tree, _package_of(path)) if _forbidden(n))
        if found and module not in ALLOWED:
            offenders[module] = found
    assert offenders == {}, (
        "SQL belongs in hwrepo/adapters/db/ (the Index repository); these modules import it: "
        f"{offenders}"
    )


def test_allowed_exceptions_are_still_needed() -> None:
    for module in ALLOWED:
        path = PACKAGE / module
        assert path.exists(), f"{module} is listed in ALLOWED but does not exist"
        imported = _imports(ast.parse(path.read_text()), _package_of(path))
        assert any(_forbidden(n) for n in imported), (
            f"{module} no longer imports SQL; remove it from ALLOWED"
        )


def test_the_check_finds_sql_imports() -> None:
    tree = ast.parse(
        "import sqlalchemy.orm\n"
        "from sqlalchemy import select\n"
        "from hwrepo.adapters.db.orm import CheckRow\n"
        "from hwrepo.adapters.db import orm\n"
    )
    assert {n for n in _imports(tree) if _forbidden(n)} == {
        "sqlalchemy.orm",
        "sqlalchemy",
        "sqlalchemy.select",
        "hwrepo.adapters.db.orm",
        "hwrepo.adapters.db.orm.CheckRow",
    }
    relative = ast.parse("from .db.orm import CheckRow\nfrom ..adapters.db import engine\n")
    assert {n for n in _imports(relative, "hwrepo.adapters") if _forbidden(n)} == {
        "hwrepo.adapters.db.orm",
        "hwrepo.adapters.db.orm.CheckRow",
        "hwrepo.adapters.db.engine",
    }
    assert not _forbidden("hwrepo.adapters.db.index")
    assert not _forbidden("sqlalchemyish")
