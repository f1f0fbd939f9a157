"""Layering rules, read from the code itself:

- SQL only in the repository: no module outside hwrepo/adapters/db/ may import SQLAlchemy (or
  Alembic) or the ORM tables; services and entry points go through `Index`.
- Processes start only in hwrepo/checks/run/: every tool that reads a revision runs in the
  sandbox, and there is no other way to start one (entrypoints/embedded.py starts the servers).
- What runs inside the sandbox imports no web framework, database or validation library.
"""

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


# -- processes: every tool that reads a revision runs in the sandbox ------------------------------

# The only modules that may start processes, and why.
STARTS_PROCESSES = {
    "checks/run/sandbox.py": "bubblewrap: the one way into the sandbox",
    "checks/run/inside.py": "runs tools inside the sandbox only (it refuses anywhere else)",
    "entrypoints/embedded.py": "the embedded servers (nats-server, weed) and hwrepo's own parts",
}
PROCESS_MODULES = ("subprocess", "pty", "multiprocessing", "concurrent.futures.process")
PROCESS_CALLS = {
    "system",
    "popen",
    "fork",
    "forkpty",
    "posix_spawn",
    "posix_spawnp",
    "create_subprocess_exec",
    "create_subprocess_shell",
    *(f"exec{s}" for s in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")),
    *(f"spawn{s}" for s in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")),
}


def _starts_processes(tree: ast.AST, package: str) -> list[str]:
    found = [n for n in _imports(tree, package) if n.split(".")[0] in PROCESS_MODULES]
    found += [n for n in _imports(tree, package) if n in {"concurrent.futures.ProcessPoolExecutor"}]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in PROCESS_CALLS:
            found.append(f"{ast.unparse(node)}")
    return sorted(set(found))


def test_processes_start_only_in_the_sandbox_runner() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        found = _starts_processes(ast.parse(path.read_text(), str(path)), _package_of(path))
        if found and module not in STARTS_PROCESSES:
            offenders[module] = found
    assert offenders == {}, (
        "only hwrepo/checks/run/ starts processes on revision files (and entrypoints/embedded.py "
        f"its servers): {offenders}"
    )
    for module in STARTS_PROCESSES:
        path = PACKAGE / module
        assert _starts_processes(ast.parse(path.read_text()), _package_of(path)), module


def test_the_scan_finds_a_process_started_another_way() -> None:
    code = (
        "import os\nimport asyncio\nasync def f():\n    await asyncio.create_subprocess_exec('x')\n"
    )
    assert _starts_processes(ast.parse(code), "hwrepo") == ["asyncio.create_subprocess_exec"]
    assert _starts_processes(ast.parse("from subprocess import run"), "hwrepo") != []
    assert _starts_processes(ast.parse("import os\nos.execvp('sh', [])"), "hwrepo") != []


# -- what runs inside the sandbox stays light -----------------------------------------------------

IN_SANDBOX = ("hwrepo.checks.run.inside", "hwrepo.checks.kicad.inside", "hwrepo.checks.rtl.inside")
HEAVY = {"pydantic", "fastapi", "starlette", "sqlalchemy", "minio", "nats", "httpx", "jinja2"}


def test_in_sandbox_modules_import_nothing_heavy() -> None:
    import subprocess
    import sys

    code = (
        "import importlib, sys\n"
        f"for m in {list(IN_SANDBOX)!r}: importlib.import_module(m)\n"
        "print(' '.join(sorted({n.split('.')[0] for n in sys.modules})))\n"
    )
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert HEAVY.isdisjoint(done.stdout.split()), HEAVY & set(done.stdout.split())


SERVER_SIDE = {"sqlalchemy", "alembic", "minio", "nats", "fastapi", "starlette", "jinja2"}


def test_the_command_line_starts_without_the_server_side() -> None:
    """`hwrepo push` in a CI job loads the client only: no index, store, event bus, web
    framework or server settings until a server command asks for them."""
    import subprocess
    import sys

    code = (
        "import sys, hwrepo.entrypoints.cli\n"
        "print(' '.join(sorted({n.split('.')[0] for n in sys.modules})))\n"
        "print('hwrepo.config' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded, config = done.stdout.splitlines()
    assert SERVER_SIDE.isdisjoint(loaded.split()), SERVER_SIDE & set(loaded.split())
    assert "pydantic_settings" not in loaded.split() and config == "False"
    # nor rich (made at the first output that needs it) and httpx's own command line (click,
    # rich, pygments), which httpx imports whenever they are installed
    assert PRINTING.isdisjoint(loaded.split()), PRINTING & set(loaded.split())


PRINTING = {"rich", "pygments", "click"}
