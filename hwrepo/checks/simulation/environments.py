"""Python environments and build caches of the `simulation` kind, kept under the kind's cache
directory (`Workspace.cache`) and shared by all its jobs on a worker.

Environments (`envs/`)
----------------------
* a base environment per (cocotb release, Python version): a virtualenv made with
  `/usr/bin/python3 -m venv` holding `cocotb==X` and nothing else — builds link against it;
* per requirement set, an overlay environment (a virtualenv whose `.pth` file puts the base's
  site-packages on its path) with the requirements installed against a constraint that keeps
  cocotb at the base's release: `ENV_KEY = sha256(cocotb, sorted requirements, python)`.

pip installs wheels only (`--only-binary=:all:`): no package's build script runs while the
install step has network access.

Each is built once: under a lock file (`fcntl.flock`, so two workers never build the same one),
into a temporary directory that is renamed into place when complete. `pip install` runs in the
sandbox with network access (a requirement's build scripts are untrusted code) as the sandbox
user; the finished tree is then handed back to root and made read-only for everyone else.

Model builds (`icarus/`, `verilator/`)
--------------------------------------
Keyed by the SHA-256 of everything that shapes the model (see `build_key`), built in the sandbox
into a temporary directory, then renamed into place and sealed the same way. Jobs bind them
read-only, so a build serves every later job and revision with the same key.

The steps' own code (`sim-code/`)
---------------------------------
What runs in every step besides cocotb — the `hwrepo_sim` package and the scanner of paths
leaving the revision — copied with its bytecode (`sim_code`), keyed by the SHA-256 of the
sources and the compiling Python's version. A sandboxed Python cannot write bytecode, so
without it every step compiled these modules again; a checkout kept without bytecode
(PYTHONDONTWRITEBYTECODE) has none of its own, and the worker never imports `hwrepo_sim`
itself. Made by the worker once, from hwrepo's own files (nothing of any revision).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import py_compile
import re
import shutil
import stat
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwrepo.checks.run.installed import verilator_root
from hwrepo.checks.run.runner import probe
from hwrepo.checks.run.sandbox import SYSTEM_PATH, Mount, SandboxLimits, run_sandboxed

HOST_PYTHON = Path("/usr/bin/python3")
ENV_MARKER = "hwrepo-env.json"
BUILD_MARKER = "hwrepo-build.json"
ENV_BUILD_TIMEOUT_S = 900.0
ENV_LAYOUT = 1  # bump to rebuild every environment after a change of how they are made
BUILD_LAYOUT = 1  # the same for model builds
SIM_CODE_LAYOUT = 1  # the same for the steps' own code
SCANNER_MODULE = "hwrepo_references"  # the scanner's file name in the code's copy (.py)
STALE_TMP_S = 6 * 3600.0


class EnvError(Exception):
    """An environment could not be made; the message is for the project's people."""


class LockTimeout(Exception):
    pass


# ----------------------------------------------------------------------------- host facts


@functools.cache
def host_python_version() -> str:
    """The version of the interpreter environments are made from, e.g. "3.11.2"."""
    said = probe((str(HOST_PYTHON), "-c", "import platform; print(platform.python_version())"))
    version = (said or "").strip()
    if not re.fullmatch(r"\d+\.\d+\.\d+\S*", version):
        raise EnvError(f"{HOST_PYTHON} cannot tell its version: {version or 'no output'}")
    return version


def _python_tag() -> str:
    major, minor = host_python_version().split(".")[:2]
    return f"python{major}.{minor}"


@functools.cache
def simulator_version(simulator: str) -> str:
    """ "Icarus Verilog version 11.0 (stable)", "Verilator 5.048 2026-..." or "" when missing."""
    if simulator == "icarus":
        said = probe(("iverilog", "-V")) or ""
        first = said.strip().splitlines()[:1]
        return re.sub(r"\s*\(\)\s*$", "", first[0]) if first else ""
    root = verilator_root()
    if root is None:
        return ""
    env = (("PATH", f"{root / 'bin'}:{SYSTEM_PATH}"), ("VERILATOR_ROOT", str(root)))
    said = probe((str(root / "bin" / "verilator"), "--version"), env, (root.resolve(),)) or ""
    rev = said.strip().splitlines()[0].strip() if said.strip() else ""
    try:
        version = f"Verilator {importlib.metadata.version('verilator')}"
    except importlib.metadata.PackageNotFoundError:
        version = "Verilator"
    return f"{version} ({rev})" if rev else version


@functools.cache
def verilator_fst_supported() -> bool:
    """Verilator's FST writer needs the lz4 and zlib headers (Debian: liblz4-dev, zlib1g-dev);
    without them Verilator models record VCD."""
    return Path("/usr/include/lz4.h").exists() and Path("/usr/include/zlib.h").exists()


# ----------------------------------------------------------------------------- files and locks


def sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def file_lock(path: Path, timeout_s: float) -> Iterator[None]:
    """An exclusive flock on `path` (made if missing), waited for at most `timeout_s`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"{path} stayed locked for {timeout_s:.0f} s") from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # releases the lock


def seal_tree(path: Path) -> None:
    """Hand a tree the sandbox wrote back to root and take away everyone else's write access;
    symlinks are never followed."""
    real = os.path.realpath(path)
    for _, dirnames, filenames, dirfd in os.fwalk(real, follow_symlinks=False):
        os.fchown(dirfd, 0, 0)
        os.fchmod(dirfd, stat.S_IMODE(os.fstat(dirfd).st_mode) & ~0o022)
        for name in filenames + dirnames:
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    continue
                os.chown(name, 0, 0, dir_fd=dirfd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    os.chmod(name, stat.S_IMODE(st.st_mode) & ~0o022, dir_fd=dirfd)


def read_json_safely(path: Path, limit: int = 1024 * 1024) -> dict[str, Any] | None:
    """A small JSON object a sandboxed step wrote: never through a symlink, never huge."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def take_file(source: Path, target: Path) -> bool:
    """Move a file a sandboxed step wrote into `target` if it is a regular file (not a
    symlink, device or directory). Hard links cannot point outside the step's own bind mount."""
    try:
        st = os.lstat(source)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, target)
    except OSError:
        return False
    os.chown(target, 0, 0)
    os.chmod(target, 0o644)
    return True


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def remove_stale(directory: Path, prefix: str) -> None:
    """Temporary build directories left behind by killed workers."""
    with contextlib.suppress(OSError):
        for child in directory.iterdir():
            if child.name.startswith(prefix):
                with contextlib.suppress(OSError):
                    if time.time() - child.lstat().st_mtime > STALE_TMP_S:
                        remove_tree(child)


# ----------------------------------------------------------------------------- environments


@dataclass(frozen=True)
class PythonEnv:
    path: Path  # the environment the testbench runs in (overlay, or the base itself)
    base: Path  # the base environment (cocotb alone): builds use it
    cocotb_version: str
    key: str
    built: bool  # made by this call
    seconds: float

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def base_python(self) -> Path:
        return self.base / "bin" / "python"

    @property
    def dirs(self) -> list[Path]:
        return [self.base] if self.path == self.base else [self.base, self.path]


def env_key(cocotb: str, requirements: list[str]) -> str:
    return sha256_json(
        {
            "layout": ENV_LAYOUT,
            "cocotb": cocotb,
            "requirements": sorted(requirements),
            "python": host_python_version(),
        }
    )


def _pip_env(home: Path) -> dict[str, str]:
    """The environment of `pip install`: the worker's pip configuration (PIP_*: index,
    certificates, timeouts), a private home, nothing else of the worker."""
    env = {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
    env.update(
        {
            "PATH": SYSTEM_PATH,
            "HOME": str(home),
            "TMPDIR": str(home),
            "LANG": "C.UTF-8",
            "PIP_NO_CACHE_DIR": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env


def _pip_local_dirs() -> list[Path]:
    """Local directories the worker's pip configuration names (find-links, file:// indexes):
    bound read-only into the install sandbox so that pip finds them there too."""
    found: list[Path] = []
    for key, value in os.environ.items():
        if not key.startswith("PIP_"):
            continue
        for token in value.split():
            path = Path(token[len("file://") :] if token.startswith("file://") else token)
            special = any(
                path.is_relative_to(p) for p in (Path("/proc"), Path("/sys"), Path("/dev"))
            )
            if path.is_absolute() and path.is_dir() and path not in found and not special:
                found.append(path)
    return found


def _pip_errors(output: str) -> str:
    """pip's own error lines (or the last lines of its output)."""
    lines = [ln.strip() for ln in output.splitlines()]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    if not errors:
        errors = [ln for ln in lines if ln][-8:]
    return "\n".join(errors[:12])


def ensure_env(
    cache: Path, cocotb: str, requirements: list[str], log: Path, lock_timeout_s: float
) -> PythonEnv:
    """The environment for (cocotb, requirements), built if missing. Raises EnvError."""
    start = time.monotonic()
    envs = cache / "envs"
    envs.mkdir(parents=True, exist_ok=True)
    envs = envs.resolve()  # environments are bound into sandboxes at their real paths
    remove_stale(envs, ".build-")
    base_name = f"cocotb-{cocotb}-py{host_python_version()}-{env_key(cocotb, [])[:12]}"
    base, base_built, version = _ensure_one(envs, base_name, cocotb, [], None, log, lock_timeout_s)
    if not requirements:
        return PythonEnv(base, base, version, base_name, base_built, time.monotonic() - start)
    key = env_key(cocotb, requirements)
    name = f"req-{key[:24]}"
    path, built, version = _ensure_one(envs, name, cocotb, requirements, base, log, lock_timeout_s)
    return PythonEnv(path, base, version, name, built or base_built, time.monotonic() - start)


def _log(log: Path, text: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as fh:
        fh.write(text)


def _ensure_one(
    envs: Path,
    name: str,
    cocotb: str,
    requirements: list[str],
    base: Path | None,
    log: Path,
    lock_timeout_s: float,
) -> tuple[Path, bool, str]:
    final = envs / name
    marker = final / ENV_MARKER
    if marker.is_file():
        info = json.loads(marker.read_text())
        return final, False, str(info.get("cocotb_version", cocotb))
    try:
        with file_lock(envs / f"{name}.lock", lock_timeout_s):
            if marker.is_file():  # built by another worker while this one waited
                info = json.loads(marker.read_text())
                return final, False, str(info.get("cocotb_version", cocotb))
            version = _build_env(envs, final, cocotb, requirements, base, log)
            return final, True, version
    except LockTimeout as exc:
        raise EnvError(f"the environment {name} is being built by another job: {exc}") from None


def _build_env(
    envs: Path,
    final: Path,
    cocotb: str,
    requirements: list[str],
    base: Path | None,
    log: Path,
) -> str:
    what = f"cocotb=={cocotb}" + (f" + {' '.join(requirements)}" if requirements else "")
    _log(log, f"== building the Python environment {final.name}: {what}\n")
    tmp = envs / f".build-{final.name}-{uuid.uuid4().hex[:8]}"
    work = envs / f".build-{final.name}-{uuid.uuid4().hex[:8]}-work"
    try:
        tmp.mkdir()
        work.mkdir()
        (work / "home").mkdir()
        made = run_sandboxed(
            [str(HOST_PYTHON), "-m", "venv", str(tmp)],
            workdir=work,
            env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "HOME": str(work / "home")},
            rw_binds=[tmp],
            limits=SandboxLimits(wall_s=300, cpu_s=300),
            log_path=log,
        )
        if not made.ok:
            raise EnvError(f"python3 -m venv failed: {made.last_lines(5)}")
        site = tmp / "lib" / _python_tag() / "site-packages"
        # Wheels only: no package's build script ever runs, so nothing untrusted executes
        # while the sandbox has network access (loopback services included).
        pip = [
            str(tmp / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--no-input",
            "--only-binary=:all:",
        ]
        if base is None:
            argv = [*pip, f"cocotb=={cocotb}"]
        else:
            base_site = base / "lib" / _python_tag() / "site-packages"
            (site / "_hwrepo_base.pth").write_text(f"{base_site}\n", encoding="utf-8")
            constraints = tmp / "hwrepo-constraints.txt"
            constraints.write_text(f"cocotb=={cocotb}\n", encoding="utf-8")
            argv = [*pip, "-c", str(constraints), *requirements]
        ro = [base] if base is not None else []
        result = run_sandboxed(
            argv,
            workdir=work,
            env=_pip_env(work / "home"),
            ro_binds=[*ro, *_pip_local_dirs()],
            rw_binds=[tmp],
            limits=SandboxLimits(wall_s=ENV_BUILD_TIMEOUT_S, cpu_s=int(ENV_BUILD_TIMEOUT_S)),
            network=True,
            log_path=log,
        )
        if result.timed_out:
            raise EnvError(f"installing {what} did not finish within {ENV_BUILD_TIMEOUT_S:.0f} s")
        if not result.ok:
            reason = f" ({result.killed_reason})" if result.killed_reason else ""
            hint = ""
            if "No matching distribution" in result.output:
                hint = (
                    "\n(only wheels are installed: a package published as source only is refused)"
                )
            raise EnvError(
                f"pip could not install {what}{reason}:\n{_pip_errors(result.output)}{hint}"
            )
        probe = run_sandboxed(
            [
                str(tmp / "bin" / "python"),
                "-c",
                "import cocotb, json; print('HWREPO-COCOTB ' + cocotb.__version__)",
            ],
            workdir=work,
            env={"PATH": SYSTEM_PATH, "HOME": str(work / "home"), "LANG": "C.UTF-8"},
            ro_binds=[*ro, tmp],
            limits=SandboxLimits(wall_s=120, cpu_s=120),
            log_path=log,
        )
        found = re.search(r"HWREPO-COCOTB (\S+)", probe.output)
        if not probe.ok or found is None:
            raise EnvError(
                f"cocotb cannot be imported in the new environment:\n{probe.last_lines(8)}"
            )
        version = found.group(1)
        seal_tree(tmp)
        info = {
            "cocotb_version": version,
            "cocotb": cocotb,
            "requirements": requirements,
            "python": host_python_version(),
            "base": str(base) if base else None,
            "layout": ENV_LAYOUT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / ENV_MARKER).write_text(json.dumps(info, indent=2), encoding="utf-8")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / ENV_MARKER).is_file():
                raise
        _log(log, f"== environment {final.name} ready (cocotb {version})\n\n")
        return version
    finally:
        remove_tree(tmp)
        remove_tree(work)


# ----------------------------------------------------------------------------- model builds


def build_key(
    *,
    simulator: str,
    simulator_version: str,
    toplevel: str,
    sources: list[tuple[str, str]],
    headers: list[tuple[str, str]],
    includes: list[str],
    defines: dict[str, str],
    parameters: dict[str, str],
    timescale: list[str] | None,
    build_args: list[str],
    waves: str | None,
    cocotb_version: str,
    base_env: Path,
) -> str:
    """The SHA-256 of everything that shapes a model: the sources' and headers' paths and
    contents (sha256), include directories, defines, parameters, toplevel, timescale, the
    simulator and its version, build flags, the waveform format, cocotb's release, Python's
    version and the base environment the model links against."""
    return sha256_json(
        {
            "layout": BUILD_LAYOUT,
            "simulator": simulator,
            "simulator_version": simulator_version,
            "toplevel": toplevel,
            "sources": sources,
            "headers": sorted(headers),
            "includes": includes,
            "defines": defines,
            "parameters": parameters,
            "timescale": timescale,
            "build_args": build_args,
            "waves": waves,
            "cocotb": cocotb_version,
            "python": host_python_version(),
            "base_env": str(base_env),
        }
    )


# ----------------------------------------------------------------------------- the steps' code


@dataclass(frozen=True)
class SimCode:
    """The steps' own code as a sandbox sees it: `mount` binds it read-only at the path of
    the `sim/` directory (so PYTHONPATH and tracebacks name the same files as before), and
    `scanner` is the reference scanner's path inside the sandbox."""

    mount: Mount
    scanner: Path


def _sim_sources(sim_dir: Path, scanner: Path) -> list[tuple[str, Path]]:
    """(path in the copy, source file) of the steps' code."""
    package = sim_dir / "hwrepo_sim"
    found = [(f"hwrepo_sim/{p.name}", p) for p in sorted(package.glob("*.py")) if p.is_file()]
    return [*found, (f"{SCANNER_MODULE}.py", scanner)]


def sim_code(cache: Path, sim_dir: Path, scanner: Path) -> SimCode:
    """The steps' code with its bytecode under `cache/sim-code/<key>`, made if missing (see
    the module's docstring). Where it cannot be made, the sources themselves (compiled by
    every step, as before)."""
    fallback = SimCode(Mount(sim_dir), scanner)
    try:
        sources = _sim_sources(sim_dir, scanner)
        digest = hashlib.sha256(f"{SIM_CODE_LAYOUT} {sys.version}".encode())
        for name, path in sources:
            digest.update(f"\0{name}\0".encode() + path.read_bytes())
        root = cache / "sim-code"
        root.mkdir(parents=True, exist_ok=True)
        final = root / digest.hexdigest()[:32]
        if not (final / BUILD_MARKER).is_file():
            remove_stale(root, ".build-")
            _make_sim_code(root, final, sources)
    except (OSError, py_compile.PyCompileError):
        return fallback
    return SimCode(Mount(final, sim_dir), sim_dir / f"{SCANNER_MODULE}.py")


def _make_sim_code(root: Path, final: Path, sources: list[tuple[str, Path]]) -> None:
    tmp = root / f".build-{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        for name, source in sources:
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            shutil.copyfile(source, target)
            target.chmod(0o644)
            cfile = importlib.util.cache_from_source(str(target))
            py_compile.compile(str(target), cfile=cfile, doraise=True)
            Path(cfile).parent.chmod(0o755)
            Path(cfile).chmod(0o644)
        for directory in (tmp, tmp / "hwrepo_sim"):
            directory.chmod(0o755)
        (tmp / BUILD_MARKER).write_text(json.dumps({"layout": SIM_CODE_LAYOUT}), encoding="utf-8")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / BUILD_MARKER).is_file():  # else made meanwhile by another worker
                raise
    finally:
        remove_tree(tmp)
