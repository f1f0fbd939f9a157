"""The sandbox against hostile job steps: real bubblewrap, real fork bombs, no mocks.

Every case asserts what happened and that the sandbox came back within a bounded time, and the
process-related ones that nothing of the step is left running on the host.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hwrepo.checks.run import sandbox
from hwrepo.checks.run.sandbox import (
    SYSTEM_PATH,
    SandboxError,
    SandboxLimits,
    SandboxResult,
    run_sandboxed,
    sandbox_available,
)

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.needs(sandbox_available())

FAST = SandboxLimits(
    wall_s=20,
    cpu_s=10,
    memory_bytes=512 * 1024**2,
    file_size_bytes=64 * 1024**2,
    processes=64,
    output_bytes=1024**2,
)

FORK_BOMB = "import os\nwhile True: os.fork()"
SHELL_FORK_BOMB = ":(){ :|:& };:"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    workdir = tmp_path / "ws"
    (workdir / "home").mkdir(parents=True)
    return workdir


def env_for(ws: Path) -> dict[str, str]:
    return {"PATH": SYSTEM_PATH, "HOME": str(ws / "home"), "LANG": "C.UTF-8"}


def run(ws: Path, argv: list[str], **kwargs: object) -> SandboxResult:
    kwargs.setdefault("limits", FAST)
    return run_sandboxed(argv, workdir=ws, env=env_for(ws), **kwargs)  # type: ignore[arg-type]


def py(ws: Path, code: str, *args: str, **kwargs: object) -> SandboxResult:
    return run(ws, ["python3", "-c", code, *args], **kwargs)


def marker() -> str:
    return f"hwrepo-sandbox-test-{uuid.uuid4().hex}"


def leftovers(mark: str) -> list[str]:
    found = subprocess.run(["pgrep", "-af", mark], capture_output=True, text=True)
    return found.stdout.splitlines()


def host_processes() -> int:
    return sum(1 for name in os.listdir("/proc") if name.isdigit())


def settled(mark: str, baseline: int, timeout_s: float = 3.0) -> tuple[list[str], int]:
    """Leftovers with the marker and the host's process count, once things settle."""
    end = time.monotonic() + timeout_s
    while True:
        left, count = leftovers(mark), host_processes()
        if (not left and count <= baseline + 40) or time.monotonic() > end:
            return left, count
        time.sleep(0.05)


def own_cgroups() -> list[Path]:
    """The cgroups of this process's sandboxes still there (pids and memory hierarchies)."""
    found: set[Path] = set()
    for root in (sandbox._pids_cgroup_root(), sandbox._memory_cgroup_root()):
        if root is not None:
            found.update(root.parent.glob(f"hwrepo-sandbox-{os.getpid()}-*"))
    return sorted(found)


# -- ordinary use ------------------------------------------------------------------------------


def test_command_exit_code_output_and_log(ws: Path) -> None:
    log = ws / "out" / "log.txt"
    result = run(
        ws, ["sh", "-c", "echo out; echo err >&2; echo made > f.txt; exit 3"], log_path=log
    )
    assert result.exit_code == 3
    assert not result.timed_out and result.killed_reason is None
    assert result.output.splitlines() == ["out", "err"]
    assert (ws / "f.txt").read_text() == "made\n"
    assert result.wall_s < 5
    text = log.read_text()
    assert text.startswith("$ sh -c ")
    assert "out\nerr\n" in text and "[exit 3 after" in text
    assert own_cgroups() == []


def test_runs_as_unprivileged_user_without_capabilities(ws: Path) -> None:
    result = run(ws, ["sh", "-c", "id -u; id -g; grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status"])
    lines = result.output.split()
    assert result.exit_code == 0, result.output
    assert lines[:2] == [str(sandbox.SANDBOX_UID), str(sandbox.SANDBOX_GID)]
    assert lines[2:] == ["CapPrm:", "0" * 16, "CapEff:", "0" * 16, "CapBnd:", "0" * 16]


def test_virtualenv_in_ro_binds(tmp_path: Path, ws: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    code = "import sys; print(sys.prefix, flush=True); open(sys.prefix + '/x', 'w')"
    result = run(ws, [str(venv / "bin" / "python"), "-c", code], ro_binds=[venv])
    assert result.output.splitlines()[0] == str(venv)
    assert "Read-only file system" in result.output  # usable, not writable
    assert not (venv / "x").exists()


def test_rw_binds_are_writable_and_ro_binds_inside_them_stay_read_only(
    tmp_path: Path, ws: Path
) -> None:
    cache = tmp_path / "cache"
    (cache / "frozen").mkdir(parents=True)
    script = "echo a > $0/new && echo b > $0/frozen/new"
    result = run(
        ws, ["sh", "-c", script, str(cache)], rw_binds=[cache], ro_binds=[cache / "frozen"]
    )
    assert (cache / "new").read_text() == "a\n"
    assert result.exit_code != 0 and "Read-only file system" in result.output
    assert not (cache / "frozen" / "new").exists()


# -- time, processes -----------------------------------------------------------------------------


def test_infinite_loop_times_out_and_the_whole_tree_dies(ws: Path) -> None:
    mark = marker()
    stubborn = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "while True: time.sleep(0.1)\n"
    )
    code = (
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', {stubborn!r}, sys.argv[1]])\n"
        "while True: pass\n"
    )
    limits = SandboxLimits(wall_s=1.5, cpu_s=30, processes=64, output_bytes=1024**2)
    result = py(ws, code, mark, limits=limits)
    assert result.timed_out
    assert result.exit_code is None
    assert result.killed_reason == "wall-clock timeout (1.5 s)"
    assert 1.5 <= result.wall_s < 3.5
    assert leftovers(mark) == []
    assert own_cgroups() == []


@pytest.mark.parametrize("limiter", ["auto", "rlimit"])
def test_background_processes_do_not_outlive_the_command(ws: Path, limiter: str) -> None:
    mark = marker()
    daemon = 'python3 -c "import time; time.sleep(60)" "$0" </dev/null >/dev/null 2>&1 &'
    result = run(
        ws, ["sh", "-c", f"{daemon} echo started; sleep 0.2", mark], process_limiter=limiter
    )
    assert result.exit_code == 0 and result.output == "started\n"
    assert result.wall_s < 5
    assert leftovers(mark) == []


@pytest.mark.parametrize("limiter", ["auto", "rlimit"])
def test_python_fork_bomb_is_stopped(ws: Path, limiter: str) -> None:
    mark = marker()
    baseline = host_processes()
    result = py(ws, FORK_BOMB, mark, process_limiter=limiter)
    assert result.killed_reason == "process limit", result
    assert result.exit_code != 0  # killed (None), or the first process died of its failed fork
    assert result.wall_s < 10
    left, count = settled(mark, baseline)
    assert left == []
    assert count <= baseline + 40  # a leaked bomb would be 64 processes
    assert own_cgroups() == []


@pytest.mark.parametrize("limiter", ["auto", "rlimit"])
@pytest.mark.parametrize("script", [SHELL_FORK_BOMB, f"{SHELL_FORK_BOMB}; sleep 30"])
def test_shell_fork_bomb_is_stopped(ws: Path, limiter: str, script: str) -> None:
    mark = marker()
    baseline = host_processes()
    result = run(ws, ["bash", "-c", script, mark], process_limiter=limiter)
    if "sleep" in script:  # the bomb outlives its first shell: the sandbox must stop it
        assert result.killed_reason == "process limit", result
        assert result.exit_code is None
    # else the first shell exits at once and the sandbox's end takes the bomb with it
    assert result.wall_s < 10
    left, count = settled(mark, baseline)
    assert left == []
    assert count <= baseline + 40  # a leaked bomb would be 64 processes


def test_process_limit_allows_work_below_it(ws: Path) -> None:
    code = (
        "import subprocess\n"
        "ps = [subprocess.Popen(['sleep', '0.2']) for _ in range(20)]\n"
        "print(sum(p.wait() == 0 for p in ps))\n"
    )
    result = py(ws, code)
    assert result.exit_code == 0 and result.output == "20\n", result


def test_cpu_time_limit(ws: Path) -> None:
    limits = SandboxLimits(wall_s=20, cpu_s=1, processes=64, output_bytes=1024**2)
    result = py(ws, "while True: pass", limits=limits)
    assert result.killed_reason == "CPU time limit"
    assert result.exit_code is None and not result.timed_out
    assert result.wall_s < 5


# -- memory, files, output -------------------------------------------------------------------


def test_allocating_10_gb_hits_the_memory_limit(ws: Path) -> None:
    code = "b = bytearray(10 * 1024**3)\nprint('allocated')"
    result = py(ws, code)
    assert result.exit_code == 1
    assert result.killed_reason == "memory limit"
    assert "MemoryError" in result.output and "allocated" not in result.output
    assert result.wall_s < 5


GIB = 1024**3
HOG = (
    "import sys, time\n"
    "hog = bytearray(b'x') * (1 << 30)  # 1 GiB, every page written\n"
    "print('holding 1 GiB', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.mark.needs(
    None
    if sandbox._memory_cgroup_root() is not None
    else "no memory cgroup can be made here: " + sandbox.memory_limit_mechanism()
)
def test_memory_is_limited_for_the_job_as_a_whole(ws: Path) -> None:
    """Three children of one step, 1 GiB each, under a 2 GiB job limit: each is far below the
    per-process address-space limit, together they are over the job's; the whole step is
    killed, saying so, and nothing of it is left running."""
    mark = marker()
    code = (
        "import subprocess, sys\n"
        f"hog = {HOG!r}\n"
        "kids = [subprocess.Popen([sys.executable, '-c', hog, sys.argv[1]]) for _ in range(3)]\n"
        "print([kid.wait() for kid in kids], flush=True)\n"
        "print('survived', flush=True)\n"
    )
    limits = SandboxLimits(
        wall_s=60,
        cpu_s=60,
        memory_bytes=3 * GIB,
        job_memory_bytes=2 * GIB,
        processes=64,
        output_bytes=1024**2,
    )
    baseline = host_processes()
    result = py(ws, code, mark, limits=limits)
    assert result.killed_reason == "memory limit", result
    assert result.exit_code is None and not result.timed_out
    assert "survived" not in result.output
    assert result.output.count("holding 1 GiB") <= 2  # the third never got its gigabyte
    assert result.wall_s < 30
    left, count = settled(mark, baseline)
    assert left == []
    assert count <= baseline + 40
    assert own_cgroups() == []


def test_memory_below_the_job_limit_is_fine(ws: Path) -> None:
    code = (
        "import subprocess, sys\n"
        "hog = 'b = bytearray(b\"x\") * (64 << 20); print(len(b) >> 20, flush=True)'\n"
        "kids = [subprocess.Popen([sys.executable, '-c', hog]) for _ in range(3)]\n"
        "print([kid.wait() for kid in kids])\n"
    )
    limits = SandboxLimits(wall_s=30, cpu_s=30, job_memory_bytes=GIB, output_bytes=1024**2)
    result = py(ws, code, limits=limits)
    assert result.exit_code == 0 and result.killed_reason is None, result
    assert result.output.splitlines() == ["64", "64", "64", "[0, 0, 0]"]


def test_file_larger_than_the_limit(ws: Path) -> None:
    limits = SandboxLimits(wall_s=20, file_size_bytes=1024**2, processes=64, output_bytes=1024**2)
    code = "open('big', 'wb').write(b'x' * 2 * 1024**2)"
    result = py(ws, code, limits=limits)
    assert result.killed_reason == "file size limit"
    assert "File too large" in result.output
    assert (ws / "big").stat().st_size <= 1024**2

    result = run(ws, ["sh", "-c", "head -c 4M /dev/zero > big2"], limits=limits)  # SIGXFSZ
    assert result.killed_reason == "file size limit"
    assert result.exit_code is None
    assert (ws / "big2").stat().st_size <= 1024**2


def test_tmp_is_a_small_private_tmpfs(ws: Path) -> None:
    name = f"/tmp/{marker()}"
    limits = SandboxLimits(wall_s=20, file_size_bytes=1024**2, processes=64, output_bytes=1024**2)
    code = (
        "import sys\n"
        "open(sys.argv[1], 'w').write('x')\n"
        "try:\n"
        "    for i in range(8): open(f'{sys.argv[1]}.{i}', 'wb').write(b'x' * 512 * 1024)\n"
        "except OSError as e: print(e.strerror)\n"
    )
    result = py(ws, code, name, limits=limits)  # files below the size limit, filling /tmp
    assert result.output == "No space left on device\n"
    assert not Path(name).exists()


def test_a_runaway_flood_is_killed_at_the_runaway_cap(ws: Path) -> None:
    cap = 64 * 1024**2
    limits = SandboxLimits(wall_s=30, processes=64, output_bytes=1024**2, runaway_bytes=cap)
    log = ws / "log.txt"
    result = run(ws, ["yes"], limits=limits, log_path=log)
    assert result.killed_reason == f"output limit ({cap} bytes)"
    assert result.exit_code is None and not result.timed_out
    assert result.output_total > cap
    assert result.output.rstrip().endswith("a runaway step, which was killed]")
    assert result.wall_s < 20
    assert log.stat().st_size < 256 * 1024**2 + 2 * 1024**2


def test_long_output_keeps_head_and_tail_and_never_stops_the_step(ws: Path) -> None:
    limits = SandboxLimits(
        wall_s=60,
        processes=64,
        output_bytes=64 * 1024,
        log_bytes=512 * 1024,
        log_tail_bytes=64 * 1024,
    )
    log = ws / "log.txt"
    code = (
        "import sys\n"
        "for i in range(200000):\n"
        "    sys.stdout.write(f'line {i:07d} ' + 'x' * 40 + '\\n')\n"
        "print('the end'); sys.exit(3)\n"
    )
    result = py(ws, code, limits=limits, log_path=log)
    assert result.exit_code == 3 and result.killed_reason is None  # it ran to its end
    assert result.output_total > 10 * 1024**2
    assert result.output.startswith("line 0000000 ")
    assert "bytes of output left out here ...]" in result.output
    assert result.output.rstrip().endswith("the end")
    text = log.read_text()
    assert text.count("line 0000000 ") == 1 and "the end" in text
    assert "left out here; the step went on ...]" in text
    assert log.stat().st_size < 512 * 1024 + 64 * 1024 + 4096


# -- isolation -------------------------------------------------------------------------------

PROBE_READ = """
import json, os, sys
seen = {}
for p in sys.argv[1:]:
    try:
        if os.path.isdir(p):
            os.listdir(p)
        else:
            open(p, 'rb').read()
        seen[p] = 'readable'
    except OSError as e:
        seen[p] = os.strerror(e.errno)
print(json.dumps(seen))
"""


def test_files_outside_are_invisible(tmp_path: Path, ws: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "secrets.toml").write_text('s3_secret_key = "sekrit"\n')
    (tmp_path / "hwrepo.toml").write_text('s3_secret_key = "sekrit"\n')
    hidden = [
        "/root",
        "/root/.bashrc",
        str(REPO),
        str(REPO / "pyproject.toml"),
        "/work",
        "/home",
        "/var",
        "/var/lib",
        "/sys",
        str(data / "secrets.toml"),
        str(tmp_path / "hwrepo.toml"),
    ]
    # Machine configuration is not a tool's installation: a file planted in /etc stays outside.
    planted = Path("/etc") / f"{marker()}.conf"
    planted.write_text("machine configuration\n")
    try:
        hidden += [str(planted), "/etc/machine-id", "/etc/os-release", "/etc/ssh"]
        result = py(ws, PROBE_READ, *hidden, "/etc/shadow", "/etc/hostname", str(ws))
    finally:
        planted.unlink()
    seen = json.loads(result.output)
    for path in hidden:
        assert seen[path] == "No such file or directory", path
    assert seen["/etc/shadow"] != "readable"
    assert seen["/etc/hostname"] == "readable" and seen[str(ws)] == "readable"


def test_identity_files_are_the_sandboxs_own(ws: Path) -> None:
    result = run(ws, ["sh", "-c", "cat /etc/passwd /etc/group /etc/hostname; id -un"])
    lines = result.output.split()
    users = [line.split(":")[0] for line in lines if line.count(":") >= 6]
    assert users == ["root", "nobody"]
    assert lines[-2:] == ["sandbox", "nobody"]


def test_host_processes_are_invisible(ws: Path) -> None:
    result = run(ws, ["sh", "-c", "ls /proc | grep -E '^[0-9]+$' | wc -l; hostname"])
    count, hostname = result.output.split()
    assert int(count) <= 5  # bwrap's init, sh, ls, grep, wc
    assert hostname == "sandbox"


def test_writes_outside_the_workspace_fail_or_stay_inside(ws: Path) -> None:
    name = marker()
    host_home = Path(os.path.expanduser("~"))
    targets = [f"/usr/{name}", f"/etc/{name}", f"/{name}", f"/root/{name}", f"/tmp/{name}"]
    targets.append(str(host_home / name))
    code = (
        "import json, sys\nres = {}\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        open(p, 'w').write('x'); res[p] = 'written'\n"
        "    except OSError as e:\n"
        "        res[p] = e.strerror\n"
        "print(json.dumps(res))\n"
    )
    result = py(ws, code, *targets)
    res = json.loads(result.output)
    assert res[f"/tmp/{name}"] == "written"  # the sandbox's own tmpfs
    for target in targets:
        assert not Path(target).exists(), target
        if target != f"/tmp/{name}":
            assert res[target] != "written", target


def test_worker_environment_does_not_leak(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWREPO_S3_SECRET_KEY", "sekrit")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sekrit")
    monkeypatch.setenv("NATS_TOKEN", "sekrit")
    script = "env; cat /proc/self/environ; echo; cat /proc/1/environ 2>&1; cat /proc/1/cmdline"
    result = run(ws, ["sh", "-c", script])
    assert "sekrit" not in result.output
    assert "HWREPO" not in result.output and "AWS" not in result.output
    env_lines = sorted(result.output.splitlines()[: len(env_for(ws)) + 1])
    expected = {**env_for(ws), "PWD": str(ws)}
    assert env_lines == sorted(f"{k}={v}" for k, v in expected.items())


@pytest.fixture
def listener() -> Iterator[int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(10)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"hello-from-host")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1]
    srv.close()


CONNECT = """
import json, socket, sys
res = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(':', 1)
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, int(port)))
        res[target] = s.recv(100).decode()
    except OSError as e:
        res[target] = e.errno
print(json.dumps(res))
"""


def test_no_network_without_network_flag(ws: Path, listener: int) -> None:
    local, external = f"127.0.0.1:{listener}", "1.1.1.1:443"
    result = py(ws, CONNECT, local, external)
    res = json.loads(result.output)
    assert res[local] == errno.ECONNREFUSED  # the sandbox's own loopback: nothing listens
    assert res[external] == errno.ENETUNREACH
    assert result.wall_s < 5


def test_network_flag_shares_the_host_network(ws: Path, listener: int) -> None:
    local = f"127.0.0.1:{listener}"
    result = py(ws, CONNECT, local, network=True)
    assert json.loads(result.output) == {local: "hello-from-host"}


# -- the caller's side -------------------------------------------------------------------------


def test_log_path_through_a_planted_symlink_is_refused(tmp_path: Path, ws: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws / "out").mkdir()
    run(ws, ["sh", "-c", "rmdir out && ln -s $0 out", str(outside)])
    assert (ws / "out").is_symlink()
    with pytest.raises(SandboxError, match="log path"):
        run(ws, ["true"], log_path=ws / "out" / "log.txt")
    assert list(outside.iterdir()) == []


def test_missing_command(ws: Path) -> None:
    result = run(ws, ["no-such-command"])
    assert result.exit_code == 127
    assert "no-such-command: No such file or directory" in result.output


def test_bad_arguments_raise(tmp_path: Path, ws: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        run(ws, ["true"], ro_binds=[tmp_path / "missing"])
    with pytest.raises(ValueError, match="may not be bound"):
        run(ws, ["true"], rw_binds=[Path("/")])
    with pytest.raises(ValueError, match="absolute"):
        run(ws, ["true"], ro_binds=[Path("relative")])
    for system in ("/tmp", "/usr/share", "/etc", "/bin"):
        with pytest.raises(ValueError, match="may not be made writable"):
            run(ws, ["true"], rw_binds=[Path(system)])
    with pytest.raises(ValueError, match="may not be made writable"):
        run_sandboxed(["true"], workdir=Path("/usr/lib"), env={})
