"""Running an untrusted job step (a user's cocotb test, a Verilator-built model, a package
install) in a bubblewrap sandbox. `tools.run_tool` is the trusted counterpart.

What the step sees:

- its own PID, IPC, UTS and cgroup namespaces, and its own network namespace (nothing but `lo`)
  unless `network=True` (then it shares the worker's network, loopback services included);
- the system read-only: /usr (with Debian's /bin, /lib, /lib64, /sbin symlinks), and of /etc only
  what the installed tools read (the dynamic linker's cache, fonts, Perl's and the alternatives'
  directories, the time zone; for a step with network also the resolver and the CA
  certificates), with a `passwd`, `group`, `hostname` and `hosts` of the sandbox's own; a fresh
  /proc and a minimal /dev, size-limited tmpfs on /tmp and /dev/shm, and the binds it is given:
  the workspace (read-write, also the working directory), `rw_binds` and `ro_binds`, each at its
  own path or at the target its `Mount` names. Nothing else of the host: no /root, /home, /var,
  /work, data directory, no machine configuration;
- exactly the environment passed in (bubblewrap adds PWD, the working directory);
- uid/gid 65534 (nobody/nogroup), no capabilities, no-new-privs: bubblewrap runs as root, and
  `setpriv` drops to that uid before the command starts. The workspace and `rw_binds` are handed
  over to that uid (chown, without following symlinks) before each run.

Limits: RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NOFILE and RLIMIT_CORE through `prlimit`;
oom_score_adj 1000; a wall-clock timeout and an output cap enforced here by killing the
sandbox's PID 1, which makes the kernel kill every process of the sandbox. The process count is
limited by a pids cgroup made for each run (cgroup v2 when the `pids` controller can be used
there, else the v1 pids hierarchy); where there is none, by RLIMIT_NPROC, which works because
the step runs as a non-root uid (for root the kernel ignores it; that limit is then shared by
all sandboxes running at the same time). A step that hits its process limit is killed at once
(cgroup: within 50 ms of the first failed fork; RLIMIT_NPROC: within 250 ms of the sandbox
uid's task count reaching the limit).

Memory is limited twice. Per process, RLIMIT_AS (`memory_bytes`) is the backstop: an allocation
beyond it fails (a Python MemoryError, "memory limit"). For the sandbox as a whole, a memory
cgroup made for each run holds every process of the step together to `job_memory_bytes`, swap
included (cgroup v2 `memory.max`, `memory.swap.max` 0, `memory.oom.group` 1; or the v1 memory
controller's `memory.limit_in_bytes` and `memory.memsw.limit_in_bytes`), so that forked children
cannot each take the per-process limit. When the step goes over it the kernel's OOM killer
strikes inside the cgroup (`memory.events` / `memory.oom_control` count `oom_kill`); the sandbox
then kills the whole step at once (within 50 ms) and reports "memory limit". Where no memory
cgroup can be made (no memory controller mounted, or none this process may create cgroups in),
only RLIMIT_AS holds: each process is bounded, the job as a whole is not (up to `processes`
times `memory_bytes`), and `memory_limit_mechanism()` says so. On a machine with only the cgroup
v1 hierarchies (cgroup2 mounted without the memory controller), the v1 memory hierarchy is used,
under the worker's own memory cgroup.

The cgroup v2 parent can be set with the environment variable HWREPO_SANDBOX_CGROUP: a
directory in the cgroup2 file system whose `cgroup.subtree_control` enables `pids` and
`memory` (for a systemd unit: `Delegate=yes`, with the worker moved into a leaf of its own).
Without it, the worker's own cgroup is used when it can enable them for its children; else the
worker's own cgroups of the v1 `pids` and `memory` hierarchies.

After a step, treat everything it could write (workspace, `rw_binds`) as hostile: it may hold
symlinks pointing anywhere on the host, and files owned by the sandbox uid.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import re
import select
import selectors
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SANDBOX_UID = 65534
SANDBOX_GID = 65534
NOFILE = 4096
SYSTEM_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"

_CPU_GRACE_S = 5  # RLIMIT_CPU hard limit (SIGKILL) this long after the soft one (SIGXCPU)
_POLL_S = 0.05
_NPROC_POLL_S = 0.25
_REAP_S = 5.0
_TAIL_BYTES = 16 * 1024
_CGROUP_PREFIX = "hwrepo-sandbox-"
_CGROUP_ENV = "HWREPO_SANDBOX_CGROUP"
_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")  # what setpriv needs, dropped by it
# What a sandbox sees of the host's /etc: configuration of the installed tools, nothing about the
# machine or its users. Entries that do not exist are skipped.
_ETC_TOOLS = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "fonts",
    "perl",
    "python3",
    "python3.11",
    "localtime",
    "timezone",
    "mime.types",
    "nsswitch.conf",
    "gnutls",
)
# ... and, for a step with network (installing a testbench's requirements), name resolution and
# the CA certificates.
_ETC_NETWORK = (
    "resolv.conf",
    "gai.conf",
    "host.conf",
    "services",
    "protocols",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates",
    "ca-certificates.conf",
    "pip.conf",
)
_ETC_OWN = {
    "passwd": (
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"nobody:x:{SANDBOX_UID}:{SANDBOX_GID}:nobody:/nonexistent:/usr/sbin/nologin\n"
    ),
    "group": f"root:x:0:\nnogroup:x:{SANDBOX_GID}:\n",
    "hostname": "sandbox\n",
    "hosts": "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
}
_NO_BINDS_UNDER = (Path("/proc"), Path("/sys"), Path("/dev"))
_SYSTEM_DIRS = (Path("/usr"), Path("/etc"), Path("/proc"), Path("/dev"))
_PROTECTED = (
    tuple(
        Path(p)
        for p in ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot")
    )
    + _NO_BINDS_UNDER
)

ProcessLimiter = Literal["auto", "cgroup", "rlimit"]


@dataclass(frozen=True)
class SandboxLimits:
    wall_s: float = 900.0  # wall-clock timeout: the whole process tree is killed
    cpu_s: int = 900  # RLIMIT_CPU per process
    memory_bytes: int = 4 * 1024**3  # RLIMIT_AS per process (address space): the backstop
    # Memory of the sandbox as a whole (every process of it together, tmpfs files included), in
    # a memory cgroup made for the run, without swap; where none can be made, not enforced.
    job_memory_bytes: int = 6 * 1024**3
    file_size_bytes: int = 2 * 1024**3  # RLIMIT_FSIZE; also the size of the /tmp tmpfs
    processes: int = 512  # tasks (processes and threads) of the sandbox at once
    # Output is never a reason to stop a healthy step: of stdout+stderr, `output_bytes` are
    # kept in memory (its first and last halves) and `log_bytes` written to the log, followed
    # by its last `log_tail_bytes`, with a line saying how much was left out in between. Only
    # a step printing more than `runaway_bytes` in all is killed ("output limit").
    output_bytes: int = 16 * 1024**2
    log_bytes: int = 96 * 1024**2
    log_tail_bytes: int = 32 * 1024**2
    runaway_bytes: int = 16 * 1024**3


@dataclass
class SandboxResult:
    # bwrap's exit code: the command's, or 128+N when it died of signal N (as in a shell);
    # None when killed: by the sandbox (timeout, output or process limit), by SIGKILL, or by
    # the kernel for a limit (SIGXCPU, SIGXFSZ).
    exit_code: int | None
    timed_out: bool
    # The limit that ended the step: "wall-clock timeout (N s)", "output limit (N bytes)",
    # "memory limit", "process limit", "CPU time limit", "file size limit", or
    # "killed by SIGNAME". Best effort for the kernel-enforced ones, from the exit status and
    # the last lines of output: a Python MemoryError keeps exit_code 1 and says "memory limit".
    # "process limit" is also set when a fork failed at the limit but the step ended by itself.
    killed_reason: str | None
    output: str  # stdout and stderr, interleaved: the head and tail of at most output_bytes
    wall_s: float
    output_total: int = 0  # bytes printed in all (more than kept when output was left out)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.killed_reason is None

    def last_lines(self, n: int = 20) -> str:
        return "\n".join(self.output.strip().splitlines()[-n:])


class SandboxError(RuntimeError):
    """The sandbox cannot be set up as asked (not the step's failure)."""


@dataclass(frozen=True)
class Mount:
    """A host directory or file bound into the sandbox at `target` (by default its own path)."""

    source: Path
    target: Path | None = None

    @property
    def at(self) -> Path:
        return self.target if self.target is not None else self.source


Bind = Path | Mount


# -- availability ----------------------------------------------------------------------------


def _tool(name: str) -> str | None:
    return shutil.which(name, path=SYSTEM_PATH)


@functools.cache
def sandbox_available() -> str | None:
    """None when sandboxing works on this machine, else a sentence saying why not."""
    if os.geteuid() != 0:
        return (
            "the sandbox needs root: bubblewrap runs privileged and drops the job to "
            f"uid {SANDBOX_UID}, which also makes the process limit enforceable"
        )
    for name, package in (("bwrap", "bubblewrap"), ("setpriv", "util-linux"), ("prlimit", "")):
        if _tool(name) is None:
            return f"{name} is not installed (Debian package {package or 'util-linux'})"
    with tempfile.TemporaryDirectory(prefix="hwrepo-sandbox-probe-") as tmp:
        probe = SandboxLimits(wall_s=30, cpu_s=10, memory_bytes=1024**3, output_bytes=64 * 1024)
        try:
            result = run_sandboxed(
                ["/bin/sh", "-c", 'test "$(id -u)" = "$0" && echo sandbox-ok', str(SANDBOX_UID)],
                workdir=Path(tmp),
                env={"PATH": SYSTEM_PATH},
                limits=probe,
            )
        except (OSError, SandboxError) as exc:
            return f"bubblewrap cannot start a sandbox here: {exc}"
    if result.exit_code != 0 or "sandbox-ok" not in result.output:
        return f"bubblewrap cannot start a sandbox here: {result.last_lines(5) or result}"
    return None


def process_limit_mechanism() -> str:
    """How the process limit is enforced on this machine (for logs and `hwrepo doctor`-like
    reports)."""
    root = _pids_cgroup_root()
    if root is not None:
        return f"cgroup v{root.version} pids.max under {root.parent}"
    return f"RLIMIT_NPROC of uid {SANDBOX_UID} (shared by concurrent sandboxes)"


def memory_limit_mechanism() -> str:
    """How the memory of a sandbox is limited on this machine (for logs and reports)."""
    root = _memory_cgroup_root()
    if root is not None:
        limit = _LIMIT_FILES[("memory", root.version)]
        return f"cgroup v{root.version} {limit} for the whole sandbox under {root.parent}"
    return "RLIMIT_AS per process only (no memory cgroup can be made here)"


# -- cgroups ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CgroupRoot:
    version: int  # 1 or 2
    parent: Path  # sandboxes' cgroups are made here


# What limits a controller, per cgroup version: the file its limit is written to.
_LIMIT_FILES = {
    ("pids", 1): "pids.max",
    ("pids", 2): "pids.max",
    ("memory", 1): "memory.limit_in_bytes",
    ("memory", 2): "memory.max",
}


def _mounts() -> list[tuple[str, Path, str, set[str]]]:
    """(root, mount point, fs type, super options) of each mount."""
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            pre, _, post = line.partition(" - ")
            fields, after = pre.split(), post.split()
            if len(fields) >= 5 and len(after) >= 3:
                mounts.append((fields[3], Path(fields[4]), after[0], set(after[2].split(","))))
    return mounts


def _own_cgroups() -> dict[str, str]:
    """{"" (v2) or controller name (v1): path} of this process."""
    own: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                own[c] = path
    return own


def _in_mount(mount_root: str, mount_point: Path, path: str) -> Path | None:
    rel = os.path.relpath(path, mount_root)
    if rel.startswith(".."):
        return None
    return mount_point if rel == "." else mount_point / rel


def _probe(parent: Path, limit_file: str, value: str) -> bool:
    """Whether a child cgroup with this limit can be made in `parent`."""
    probe = parent / f"{_CGROUP_PREFIX}probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
    except OSError:
        return False
    try:
        (probe / limit_file).write_text(value)
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


def _v2_parent(
    mounts: list[tuple[str, Path, str, set[str]]], own: dict[str, str], controller: str = "pids"
) -> Path | None:
    configured = os.environ.get(_CGROUP_ENV)
    if configured:
        return Path(configured)
    if "" not in own:
        return None
    for root, point, fstype, _ in mounts:
        if fstype != "cgroup2":
            continue
        parent = _in_mount(root, point, own[""])
        if parent is None:
            continue
        try:
            if controller not in (parent / "cgroup.controllers").read_text().split():
                continue
            if controller not in (parent / "cgroup.subtree_control").read_text().split():
                (parent / "cgroup.subtree_control").write_text(f"+{controller}")
        except OSError:
            continue
        return parent
    return None


def _v1_parent(
    mounts: list[tuple[str, Path, str, set[str]]], own: dict[str, str], controller: str = "pids"
) -> Path | None:
    if controller not in own:
        return None
    for root, point, fstype, options in mounts:
        if fstype == "cgroup" and controller in options:
            parent = _in_mount(root, point, own[controller])
            if parent is not None:
                return parent
    return None


def _remove_stale(parent: Path) -> None:
    """Remove the empty cgroups left by dead workers."""
    with contextlib.suppress(OSError):
        for child in parent.iterdir():
            m = re.fullmatch(re.escape(_CGROUP_PREFIX) + r"(\d+)-[0-9a-f]+", child.name)
            if m is None or _alive(int(m.group(1))):
                continue
            with contextlib.suppress(OSError):
                child.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cgroup_root(controller: str, probe_value: str) -> _CgroupRoot | None:
    """Where this process can make cgroups limited by `controller`: under its own cgroup, in
    the cgroup v2 hierarchy when the controller can be enabled there, else in the controller's
    v1 hierarchy; None when neither works."""
    mounts, own = _mounts(), _own_cgroups()
    for version, parent in (
        (2, _v2_parent(mounts, own, controller)),
        (1, _v1_parent(mounts, own, controller)),
    ):
        limit_file = _LIMIT_FILES[(controller, version)]
        if parent is not None and _probe(parent, limit_file, probe_value):
            _remove_stale(parent)
            return _CgroupRoot(version, parent)
    return None


@functools.cache
def _pids_cgroup_root() -> _CgroupRoot | None:
    return _cgroup_root("pids", "8")


@functools.cache
def _memory_cgroup_root() -> _CgroupRoot | None:
    return _cgroup_root("memory", str(64 * 1024**2))


class _RunCgroup:
    """One run's cgroups, made before the sandbox starts and removed when empty: a pids limit
    (`pids.max`) and a memory limit for the sandbox as a whole — cgroup v2 `memory.max` with
    `memory.swap.max` 0 and `memory.oom.group` 1, or v1 `memory.limit_in_bytes` (and
    `memory.memsw.limit_in_bytes`, so no swap either). Under v2 one directory holds both; under
    v1 each controller has its own hierarchy, and the sandbox joins a directory in each."""

    def __init__(
        self,
        pids: _CgroupRoot | None,
        memory: _CgroupRoot | None,
        max_tasks: int,
        memory_bytes: int,
    ) -> None:
        name = f"{_CGROUP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.dirs: list[tuple[int, Path]] = []  # (version, directory), each once
        self.pids_dir: Path | None = None
        self.memory_dir: Path | None = None
        self.memory_version = memory.version if memory is not None else 0
        try:
            if pids is not None:
                self.pids_dir = self._make(pids, name)
                (self.pids_dir / "pids.max").write_text(str(max_tasks))
            if memory is not None:
                self.memory_dir = self._make(memory, name)
                self._limit_memory(self.memory_dir, memory.version, memory_bytes)
        except OSError:
            self.remove(wait_s=0)
            raise

    def _make(self, root: _CgroupRoot, name: str) -> Path:
        path = root.parent / name
        if (root.version, path) not in self.dirs:
            path.mkdir()
            self.dirs.append((root.version, path))
        return path

    @staticmethod
    def _limit_memory(path: Path, version: int, memory_bytes: int) -> None:
        if version == 2:
            (path / "memory.max").write_text(str(memory_bytes))
            for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                if (path / name).exists():
                    (path / name).write_text(value)
        else:
            (path / "memory.limit_in_bytes").write_text(str(memory_bytes))
            memsw = path / "memory.memsw.limit_in_bytes"  # present with swap accounting only
            if memsw.exists():
                with contextlib.suppress(OSError):
                    memsw.write_text(str(memory_bytes))

    @property
    def limits_processes(self) -> bool:
        return self.pids_dir is not None

    @property
    def procs(self) -> list[Path]:
        """The `cgroup.procs` files the sandbox's first process writes itself into."""
        return [path / "cgroup.procs" for _, path in self.dirs]

    def limit_hit(self) -> str | None:
        """ "memory limit" once the OOM killer killed a process of the run, "process limit" once
        a fork failed at pids.max; else None."""
        if self.memory_dir is not None and self._oom_kills() > 0:
            return "memory limit"
        if self.pids_dir is not None and self._event(self.pids_dir / "pids.events", "max") > 0:
            return "process limit"
        return None

    def _oom_kills(self) -> int:
        assert self.memory_dir is not None
        if self.memory_version == 2:
            return self._event(self.memory_dir / "memory.events", "oom_kill")
        return self._event(self.memory_dir / "memory.oom_control", "oom_kill")

    @staticmethod
    def _event(path: Path, key: str) -> int:
        with contextlib.suppress(OSError, ValueError):
            for line in path.read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
        return 0

    def pids(self) -> list[int]:
        found: set[int] = set()
        for _, path in self.dirs:
            with contextlib.suppress(OSError, ValueError):
                found.update(int(p) for p in (path / "cgroup.procs").read_text().split())
        return sorted(found)

    def kill_all(self) -> None:
        for version, path in self.dirs:
            kill = path / "cgroup.kill"
            if version == 2 and kill.exists():
                with contextlib.suppress(OSError):
                    kill.write_text("1")
        for pid in self.pids():
            _kill_pid_if(pid, self._contains)

    def _contains(self, pid: int) -> bool:
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            return False
        name = self.dirs[0][1].name if self.dirs else None
        return name is not None and any(line.endswith("/" + name) for line in lines)

    def remove(self, wait_s: float = _REAP_S) -> None:
        deadline = time.monotonic() + wait_s
        for _, path in self.dirs:
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break  # left for _remove_stale of a later worker
                self.kill_all()
                time.sleep(0.02)


# -- processes -------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def _ppid(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _kill_pid_if(pid: int, still_ours: Callable[[int], bool]) -> None:
    """SIGKILL `pid` if, once pinned by a pidfd, `still_ours(pid)` holds (no PID reuse race)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if still_ours(pid):
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    finally:
        os.close(pidfd)


# -- the sandbox -----------------------------------------------------------------------------


def _check_bind(path: Path, what: str, *, writable: bool = False) -> Path:
    if not path.is_absolute():
        raise ValueError(f"{what} must be an absolute path: {path}")
    if not path.exists():
        raise ValueError(f"{what} does not exist: {path}")
    norm = Path(os.path.normpath(path))
    if norm == Path("/") or any(norm == p or p in norm.parents for p in _NO_BINDS_UNDER):
        raise ValueError(f"{what} may not be bound into the sandbox: {path}")
    if writable:  # handed over to the sandbox uid: never a system or top-level directory
        real = Path(os.path.realpath(norm))
        if len(real.parts) <= 2 or any(real == p or p in real.parents for p in _PROTECTED):
            raise ValueError(f"{what} may not be made writable for the sandbox: {path}")
    return norm


def _check_mount(bind: Bind, what: str, *, writable: bool = False) -> Mount:
    mount = bind if isinstance(bind, Mount) else Mount(Path(bind))
    source = _check_bind(mount.source, what, writable=writable)
    if mount.target is None:
        return Mount(source)
    target = Path(os.path.normpath(mount.target))
    if (
        not target.is_absolute()
        or target == Path("/")
        or any(target == p or p in target.parents for p in _PROTECTED)
    ):
        raise ValueError(f"{what} may not be mounted at {mount.target}")
    return Mount(source, target)


def _hand_over(path: Path) -> None:
    """chown a writable tree to the sandbox uid, never following a symlink."""
    real = os.path.realpath(path)
    for _, dirnames, filenames, dirfd in os.fwalk(real, follow_symlinks=False):
        st = os.fstat(dirfd)
        if (st.st_uid, st.st_gid) != (SANDBOX_UID, SANDBOX_GID):
            os.fchown(dirfd, SANDBOX_UID, SANDBOX_GID)
        for name in filenames + dirnames:
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    continue  # done when walked into
                if (st.st_uid, st.st_gid) != (SANDBOX_UID, SANDBOX_GID):
                    os.chown(name, SANDBOX_UID, SANDBOX_GID, dir_fd=dirfd, follow_symlinks=False)


def _etc_options(network: bool, data: dict[str, int]) -> list[str]:
    """A tmpfs /etc holding the allowed entries of the host's and the sandbox's own files
    (`data`: /etc name -> fd of its content)."""
    args = ["--perms", "0755", "--tmpfs", "/etc"]
    made: set[Path] = set()
    for name in _ETC_TOOLS + (_ETC_NETWORK if network else ()):
        path = Path("/etc") / name
        if not (path.exists() or path.is_symlink()):
            continue
        for parent in reversed(path.parents[: len(path.parents) - 2]):  # below /etc
            if parent not in made:
                made.add(parent)
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind-try", str(path), str(path)]
    for name, fd in data.items():
        args += ["--perms", "0644", "--ro-bind-data", str(fd), f"/etc/{name}"]
    return [*args, "--remount-ro", "/etc"]


@contextlib.contextmanager
def _etc_data() -> Iterator[dict[str, int]]:
    """memfds with the sandbox's own passwd, group, hostname and hosts."""
    fds: dict[str, int] = {}
    try:
        for name, text in _ETC_OWN.items():
            fd = os.memfd_create(f"etc-{name}", os.MFD_CLOEXEC)
            fds[name] = fd
            os.write(fd, text.encode())
            os.lseek(fd, 0, os.SEEK_SET)
        yield fds
    finally:
        for fd in fds.values():
            os.close(fd)


def _bwrap_options(
    *,
    workdir: Mount,
    env: dict[str, str],
    ro_binds: Sequence[Mount],
    rw_binds: Sequence[Mount],
    limits: SandboxLimits,
    network: bool,
    etc_data: dict[str, int],
) -> list[str]:
    args = ["--die-with-parent", "--new-session"]
    args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    args += ["--hostname", "sandbox"]
    if not network:
        args.append("--unshare-net")
    args.append("--clearenv")
    for key, value in env.items():
        args += ["--setenv", key, value]
    args += ["--ro-bind", "/usr", "/usr"]
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / top
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            args += ["--ro-bind", str(p), str(p)]
    args += _etc_options(network, etc_data)
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--perms", "1777", "--size", str(limits.file_size_bytes), "--tmpfs", "/tmp"]
    shm = min(limits.file_size_bytes, 256 * 1024**2)
    args += ["--perms", "1777", "--size", str(shm), "--tmpfs", "/dev/shm"]
    binds = [("--bind", workdir)] + [("--bind", m) for m in rw_binds]
    binds += [("--ro-bind", m) for m in ro_binds]
    args += _bind_parents([m.at for _, m in binds])
    for flag, m in sorted(binds, key=lambda b: len(b[1].at.parts)):  # parents before children
        args += [flag, str(m.source), str(m.at)]
    args += ["--chdir", str(workdir.at)]
    for cap in _CAPS:
        args += ["--cap-add", cap]
    return args


def _bind_parents(targets: list[Path]) -> list[str]:
    """Empty, traversable directories for the ancestors of the bind targets (bwrap would make
    them with the host directories' modes, e.g. a 0700 temporary directory nobody can enter)."""
    made = {Path("/"), Path("/tmp"), *_SYSTEM_DIRS}
    args: list[str] = []
    for target in targets:
        for parent in reversed(target.parents):
            if parent in made or any(t == parent or t in parent.parents for t in targets):
                continue
            if any(s in parent.parents for s in _SYSTEM_DIRS):
                continue  # inside a read-only system bind: exists there or cannot be made
            made.add(parent)
            args += ["--perms", "0755", "--dir", str(parent)]
    return args


def _drop_privileges() -> list[str]:
    return [
        _tool("setpriv") or "/usr/bin/setpriv",
        f"--reuid={SANDBOX_UID}",
        f"--regid={SANDBOX_GID}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
    ]


# The first process joins the run's cgroups (the cgroup.procs files before "--", when there are
# any) and makes itself the first victim of the OOM killer, then becomes prlimit, which becomes
# bwrap.
_LAUNCHER = (
    'while [ "$1" != -- ]; do echo $$ 2>/dev/null > "$1" || '
    '{ echo "sandbox: cannot join the cgroup $1" >&2; exit 125; }; shift; done; shift; '
    "echo 1000 > /proc/self/oom_score_adj; "
    'exec "$@"'
)


def _limits_argv(limits: SandboxLimits, nproc: bool) -> list[str]:
    cpu = max(1, int(limits.cpu_s))
    argv = [
        _tool("prlimit") or "/usr/bin/prlimit",
        f"--cpu={cpu}:{cpu + _CPU_GRACE_S}",
        f"--as={limits.memory_bytes}",
        f"--fsize={limits.file_size_bytes}",
        f"--nofile={NOFILE}",
        "--core=0",
    ]
    if nproc:
        argv.append(f"--nproc={limits.processes}")
    return [*argv, "--"]


_MEMORY_HINTS = re.compile(
    rb"MemoryError|std::bad_alloc|Cannot allocate memory|[Oo]ut of memory|memory exhausted"
)
_FSIZE_HINTS = re.compile(rb"File too large|File size limit exceeded")
_NPROC_HINTS = re.compile(rb"Resource temporarily unavailable|fork: retry|BlockingIOError")


def _classify(code: int | None, tail: bytes) -> tuple[int | None, str | None]:
    """(exit_code, killed_reason) from bwrap's exit code (128+N when the command died of
    signal N) and the end of the output."""
    if code is None or code < 0:  # bwrap itself was killed
        return None, f"killed by {_signame(-code if code is not None else signal.SIGKILL)}"
    sig = code - 128 if code > 128 else 0
    if sig == signal.SIGXCPU:
        return None, "CPU time limit"
    if sig == signal.SIGXFSZ:
        return None, "file size limit"
    if sig == signal.SIGKILL:  # RLIMIT_CPU's hard limit, the OOM killer, a kill from inside
        return None, "killed by SIGKILL"
    if code == 0:
        return 0, None
    if _MEMORY_HINTS.search(tail):
        return code, "memory limit"
    if _FSIZE_HINTS.search(tail):
        return code, "file size limit"
    if _NPROC_HINTS.search(tail):
        return code, "process limit"
    return code, None


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


class _Ring:
    """The last `limit` bytes of a stream, kept as chunks."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: collections.deque[bytes] = collections.deque()
        self.size = 0

    def add(self, chunk: bytes) -> None:
        if self.limit <= 0 or not chunk:
            return
        if len(chunk) >= self.limit:
            self.chunks.clear()
            chunk = chunk[-self.limit :]
            self.size = 0
        self.chunks.append(chunk)
        self.size += len(chunk)
        while self.size - len(self.chunks[0]) >= self.limit:
            self.size -= len(self.chunks.popleft())
        if self.size > self.limit:  # trim the oldest chunk to the limit
            first = self.chunks.popleft()
            cut = self.size - self.limit
            self.chunks.appendleft(first[cut:])
            self.size -= cut

    def get(self) -> bytes:
        return b"".join(self.chunks)

    def last(self, n: int) -> bytes:
        return self.get()[-n:]


class _Log:
    """The optional log file, opened before the step runs (the step may later replace the path
    with a symlink; the open descriptor is not affected). A log inside a tree the sandbox could
    write to must resolve to a place inside that tree (an earlier step may have planted
    symlinks), and is never opened through a symlink."""

    def __init__(self, path: Path | None, writable: Sequence[Path]) -> None:
        self.fd: int | None = None
        if path is None:
            return
        path = Path(os.path.abspath(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        real_parent = Path(os.path.realpath(path.parent))
        for tree in writable:
            if path.is_relative_to(tree) and not real_parent.is_relative_to(os.path.realpath(tree)):
                raise SandboxError(f"log path leaves the sandbox's tree {tree}: {path}")
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        self.fd = os.open(real_parent / path.name, flags, 0o644)

    def write(self, data: bytes) -> None:
        if self.fd is not None and data:
            with contextlib.suppress(OSError):
                os.write(self.fd, data)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@contextlib.contextmanager
def _args_fd(options: list[str]) -> Iterator[int]:
    """bwrap's options in a memfd (`--args FD`): not in the host's `ps`, no ARG_MAX."""
    fd = os.memfd_create("bwrap-args", os.MFD_CLOEXEC)
    try:
        data = memoryview(b"".join(os.fsencode(a) + b"\0" for a in options))
        while data:
            data = data[os.write(fd, data) :]
        os.lseek(fd, 0, os.SEEK_SET)
        yield fd
    finally:
        os.close(fd)


def run_sandboxed(
    argv: list[str],
    *,
    workdir: Bind,
    env: dict[str, str],
    ro_binds: Sequence[Bind] = (),
    rw_binds: Sequence[Bind] = (),
    limits: SandboxLimits = SandboxLimits(),
    network: bool = False,
    log_path: Path | None = None,
    process_limiter: ProcessLimiter = "auto",
) -> SandboxResult:
    """Run argv (looked up on env["PATH"] inside) in a sandbox; see the module docstring.

    Blocks until the step ends or a limit ends it; never raises for the step's behaviour.
    Raises ValueError for bad arguments and SandboxError when the sandbox cannot be made.
    `process_limiter`: "cgroup" insists on a pids cgroup, "rlimit" uses RLIMIT_NPROC only.
    """
    if not argv:
        raise ValueError("argv is empty")
    for key, value in env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise ValueError(f"invalid environment variable {key!r}")
    if limits.processes < 1 or limits.output_bytes < 0 or limits.wall_s <= 0:
        raise ValueError(f"invalid limits: {limits}")
    work = _check_mount(workdir, "workdir", writable=True)
    if not work.source.is_dir():
        raise ValueError(f"workdir is not a directory: {work.source}")
    ro = [_check_mount(p, "ro_binds entry") for p in ro_binds]
    rw = [_check_mount(p, "rw_binds entry", writable=True) for p in rw_binds]
    bwrap = _tool("bwrap")
    if bwrap is None:
        raise SandboxError("bwrap is not installed")

    root = _pids_cgroup_root() if process_limiter != "rlimit" else None
    if process_limiter == "cgroup" and root is None:
        raise SandboxError("no pids cgroup can be made here")
    memory_root = _memory_cgroup_root()

    writable = [work.source, *(m.source for m in rw)]
    log = _Log(log_path, writable)
    cgroup: _RunCgroup | None = None
    try:
        try:
            for tree in writable:
                _hand_over(tree)
            if root is not None or memory_root is not None:
                # +2 tasks: the two bwraps
                cgroup = _RunCgroup(
                    root, memory_root, limits.processes + 2, limits.job_memory_bytes
                )
        except OSError as exc:
            raise SandboxError(f"cannot prepare the sandbox: {exc}") from exc
        log.write(f"$ {shlex.join(argv)}\n".encode())
        with (
            _etc_data() as etc_data,
            _args_fd(
                _bwrap_options(
                    workdir=work,
                    env=env,
                    ro_binds=ro,
                    rw_binds=rw,
                    limits=limits,
                    network=network,
                    etc_data=etc_data,
                )
            ) as fd,
        ):
            launcher = [
                "/bin/sh",
                "-c",
                _LAUNCHER,
                "sh",
                *(str(procs) for procs in (cgroup.procs if cgroup is not None else [])),
                "--",
                *_limits_argv(limits, nproc=cgroup is None or not cgroup.limits_processes),
                bwrap,
                "--args",
                str(fd),
                "--",
                *_drop_privileges(),
                *argv,
            ]
            start = time.monotonic()
            proc = subprocess.Popen(
                launcher,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={},
                cwd="/",
                start_new_session=True,
                pass_fds=(fd, *etc_data.values()),
            )
        try:
            return _supervise(proc, start, limits, cgroup, log)
        finally:
            if proc.returncode is None:  # only after an exception in _supervise
                _kill_sandbox(proc, None)
                _reap(proc)
            if proc.stdout is not None:
                proc.stdout.close()
    finally:
        if cgroup is not None:
            cgroup.kill_all()
            cgroup.remove()
        log.close()


def _supervise(
    proc: subprocess.Popen[bytes],
    start: float,
    limits: SandboxLimits,
    cgroup: _RunCgroup | None,
    log: _Log,
) -> SandboxResult:
    assert proc.stdout is not None
    out = proc.stdout.fileno()
    os.set_blocking(out, False)
    sel = selectors.DefaultSelector()
    sel.register(out, selectors.EVENT_READ)
    # The outer bwrap's exit wakes the loop too (a pidfd is readable once the process has
    # exited): the output's end and the exit come in either order, and whichever comes second
    # is waited for, not polled.
    try:
        exit_fd: int | None = os.pidfd_open(proc.pid)
    except OSError:
        exit_fd = None
    if exit_fd is not None:
        sel.register(exit_fd, selectors.EVENT_READ)
    watching = {out, *([exit_fd] if exit_fd is not None else [])}
    deadline = start + limits.wall_s
    head = bytearray()
    tail = _Ring(max(limits.output_bytes // 2, _TAIL_BYTES))
    log_tail = _Ring(limits.log_tail_bytes)
    total = 0
    logged = 0
    truncated = False  # runaway: more than runaway_bytes
    reason: str | None = None
    timed_out = False
    eof = False
    status: int | None = None
    init: _Init | None = None
    next_count = start
    exited_at = 0.0
    head_room = limits.output_bytes - limits.output_bytes // 2

    def take(chunk: bytes) -> None:
        nonlocal truncated, total, logged
        total += len(chunk)
        if len(head) < head_room:
            keep = chunk[: head_room - len(head)]
            head.extend(keep)
            rest = chunk[len(keep) :]
        else:
            rest = chunk
        if rest:
            tail.add(rest)
        if logged < limits.log_bytes:
            part = chunk[: limits.log_bytes - logged]
            log.write(part)
            logged += len(part)
            chunk = chunk[len(part) :]
        if chunk:
            log_tail.add(chunk)
        if total > limits.runaway_bytes:
            truncated = True

    try:
        while True:
            now = time.monotonic()
            if status is None:
                if init is None:
                    init = _Init.find(proc.pid)
                pid, wstatus = os.waitpid(proc.pid, os.WNOHANG)
                if pid:
                    status = proc.returncode = os.waitstatus_to_exitcode(wstatus)
                    exited_at = now
            if status is not None and (eof or now - exited_at > 1.0):
                break  # the pipe has no writer left once the sandbox's PID 1 is gone
            if truncated:
                reason = f"output limit ({limits.runaway_bytes} bytes)"
                break
            if now >= deadline:
                timed_out, reason = True, f"wall-clock timeout ({limits.wall_s:g} s)"
                break
            if status is None:
                if cgroup is not None and (hit := cgroup.limit_hit()) is not None:
                    reason = hit
                    break
                if (cgroup is None or not cgroup.limits_processes) and (
                    init is not None and now >= next_count
                ):
                    next_count = now + _NPROC_POLL_S
                    if _Init.uid_tasks() >= limits.processes:
                        reason = "process limit"
                        break
            for fd, done in ((out, eof), (exit_fd, status is not None)):
                if done and fd in watching:
                    sel.unregister(fd)
                    watching.discard(fd)
            if not watching:
                time.sleep(_POLL_S)
                continue
            poll = _POLL_S if init is not None else 0.005  # look for the sandbox's PID 1 soon
            ready = sel.select(timeout=max(0.0, min(poll, deadline - now)))
            if any(key.fd == out for key, _ in ready):
                for _ in range(64):  # at most 4 MiB before looking at the clock again
                    try:
                        chunk = os.read(out, 65536)
                    except BlockingIOError:
                        break
                    if not chunk:
                        eof = True
                        break
                    take(chunk)
                    if truncated:
                        break
    finally:
        sel.close()
        if exit_fd is not None:
            os.close(exit_fd)
        if reason is not None and status is None:
            _kill_sandbox(proc, init)
            status = _reap(proc)
        if init is not None:
            init.wait_gone()  # then every process of the sandbox is gone

    # whatever is still in the pipe (the sandbox is gone: no writer is left)
    drain_until = time.monotonic() + 1.0
    while not eof and not truncated and time.monotonic() < drain_until:
        try:
            chunk = os.read(out, 65536)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        if not chunk:
            break
        take(chunk)
    if truncated and reason is None:
        reason = f"output limit ({limits.runaway_bytes} bytes)"

    wall = time.monotonic() - start
    exit_code: int | None = None
    if reason is None:
        exit_code, reason = _classify(status, tail.last(_TAIL_BYTES) or bytes(head[-_TAIL_BYTES:]))
    if cgroup is not None and (reason is None or reason == "killed by SIGKILL"):
        # a fork failed, or the OOM killer struck, though the step ended on its own
        reason = cgroup.limit_hit() or reason
    left_out = total - len(head) - tail.size
    output = head.decode("utf-8", errors="replace")
    if left_out > 0:
        output += f"\n[... {left_out} bytes of output left out here ...]\n"
    output += tail.get().decode("utf-8", errors="replace")
    if log_tail.size:
        skipped = total - logged - log_tail.size
        if skipped > 0:
            log.write(
                f"\n[... the log is {total} bytes: {skipped} bytes left out here; "
                "the step went on ...]\n".encode()
            )
        log.write(log_tail.get())
    if truncated:
        marker = (
            f"\n[output stopped after {total} bytes: more than {limits.runaway_bytes} bytes is "
            "a runaway step, which was killed]\n"
        )
        output += marker
        log.write(marker.encode())
    state = f"exit {exit_code}" if exit_code is not None else "killed"
    if reason is not None:
        state += f": {reason}"
    log.write(f"\n[{state} after {wall:.1f} s]\n\n".encode())
    return SandboxResult(exit_code, timed_out, reason, output, wall, total)


class _Init:
    """The sandbox's PID 1 (bwrap's reaper), pinned by a pidfd. When it is gone, the kernel has
    killed and released every process of its PID namespace."""

    def __init__(self, pidfd: int, pid: int, ns: tuple[int, int]) -> None:
        self.pidfd, self.pid, self.ns = pidfd, pid, ns

    @classmethod
    def find(cls, outer: int) -> _Init | None:
        own = os.stat("/proc/self/ns/pid")
        for pid in _children(outer):
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue
            try:
                st = os.stat(f"/proc/{pid}/ns/pid")
                if _ppid(pid) == outer and (st.st_dev, st.st_ino) != (own.st_dev, own.st_ino):
                    return cls(pidfd, pid, (st.st_dev, st.st_ino))
            except OSError:
                pass
            os.close(pidfd)
        return None

    @staticmethod
    def uid_tasks() -> int:
        """Tasks (processes and threads) of the sandbox uid, host-wide: what RLIMIT_NPROC
        counts. Shared by all sandboxes, so with RLIMIT_NPROC alone one step's forks fail
        when all sandboxes together reach its limit."""
        n = 0
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if entry.stat().st_uid == SANDBOX_UID:
                        n += os.stat(f"/proc/{entry.name}/task").st_nlink - 2
        return n

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    def wait_gone(self) -> None:
        try:
            for attempt in range(2):
                ready, _, _ = select.select([self.pidfd], [], [], _REAP_S)
                if ready:
                    return
                if attempt == 0:
                    self.kill()
        finally:
            os.close(self.pidfd)


def _kill_sandbox(proc: subprocess.Popen[bytes], init: _Init | None) -> None:
    """Kill the sandbox's PID 1 (the kernel then kills every process in its PID namespace) and
    let the outer bwrap notice; then, if need be, the outer bwrap's process group."""
    if init is not None:
        init.kill()
    else:
        for child in _children(proc.pid):
            _kill_pid_if(child, lambda p: _ppid(p) == proc.pid)
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _reap(proc: subprocess.Popen[bytes]) -> int:
    """Wait for the outer bwrap (SIGKILL it after _REAP_S); its exit code."""
    end = time.monotonic() + _REAP_S
    while True:
        pid, wstatus = os.waitpid(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(wstatus)
            return proc.returncode
        if time.monotonic() > end:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            end = time.monotonic() + _REAP_S
        time.sleep(0.01)
