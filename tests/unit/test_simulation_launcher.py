"""The simulation step's launcher (`sim/hwrepo_sim`) finds cocotb's runner without running the
cocotb package's `__init__` where the runner does without it, and with it where it does not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hwrepo.checks.simulation.kind import SIM_DIR

ASK = (
    "import sys; sys.path[:0] = sys.argv[1:3]; from hwrepo_sim import run_job; "
    "print(run_job._get_runner('icarus')); print('cocotb initialised:', "
    "hasattr(sys.modules['cocotb'], '__version__'))"
)


def _cocotb(root: Path, runner: str) -> Path:
    """A cocotb 2-like installation: the package, whose `__init__` says when it ran, and a
    `cocotb_tools.runner` made of `runner`."""
    (root / "cocotb" / "types").mkdir(parents=True)
    (root / "cocotb" / "__init__.py").write_text(
        "import sys\nprint('cocotb __init__ ran', file=sys.stderr)\n__version__ = '2.99'\n"
    )
    (root / "cocotb" / "types" / "__init__.py").write_text("Logic = 'Logic'\n")
    (root / "cocotb_tools").mkdir()
    (root / "cocotb_tools" / "__init__.py").write_text("")
    (root / "cocotb_tools" / "runner.py").write_text(
        runner + "\ndef get_runner(simulator):\n    return 'runner for ' + simulator\n"
    )
    return root


def _ask(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-c", ASK, str(root), str(SIM_DIR)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


def test_a_runner_needing_only_the_types_gets_the_package_uninitialised(tmp_path: Path) -> None:
    done = _ask(_cocotb(tmp_path, "from cocotb.types import Logic"))
    assert done.stdout.splitlines() == ["runner for icarus", "cocotb initialised: False"]
    assert "cocotb __init__ ran" not in done.stderr


def test_a_runner_needing_the_initialised_package_gets_it(tmp_path: Path) -> None:
    done = _ask(_cocotb(tmp_path, "import cocotb\nVERSION = cocotb.__version__"))
    assert done.stdout.splitlines() == ["runner for icarus", "cocotb initialised: True"]
    assert "cocotb __init__ ran" in done.stderr
