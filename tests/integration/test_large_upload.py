"""A large upload streams: the API process's peak memory stays far below the upload's size.
Runs `hwrepo api` as a real process (uvicorn) and reads its peak RSS from /proc."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hwrepo.config import Settings
from hwrepo.entrypoints import embedded
from hwrepo.service_layer.backends import Backends
from tests.conftest import make_actor
from tests.integration.helpers import cli_env

SIZE = int(os.environ.get("HWREPO_TEST_BIG_MIB", "384")) * 1024 * 1024
CHUNK = 4 * 1024 * 1024


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def api_process(
    settings: Settings, backends: Backends, tmp_path: Path
) -> Iterator[tuple[str, int]]:
    (port,) = embedded.free_ports(1)
    env = cli_env(settings, tmp_path / "api-data")
    env.update(HWREPO_API_PORT=str(port), TMPDIR=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "hwrepo.entrypoints.cli", "api"],
        env=env,
        stdout=(tmp_path / "api.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while not embedded.answers(port):
        assert proc.poll() is None, (tmp_path / "api.log").read_text()
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(20)


def _big_file(path: Path) -> str:
    digest = hashlib.sha256()
    block = os.urandom(CHUNK)
    with path.open("wb") as fh:
        for i in range(SIZE // CHUNK):
            chunk = i.to_bytes(8, "big") + block[8:]  # no two chunks alike
            digest.update(chunk)
            fh.write(chunk)
    return digest.hexdigest()


def test_a_large_upload_streams_through_the_api(
    api_process: tuple[str, int], backends: Backends, tmp_path: Path
) -> None:
    url, pid = api_process
    alice = make_actor(backends, "alice")
    big = tmp_path / "board.step"
    sha = _big_file(big)
    with httpx.Client(base_url=url, headers=alice.headers, timeout=300) as http:
        r = http.post(
            "/api/v1/projects", json={"name": "big", "kind": "hardware", "licence": "MIT"}
        )
        assert r.status_code == 201, r.text
        with big.open("rb") as fh:
            r = http.post(
                "/api/v1/projects/alice/big/revisions",
                files=[("files", ("mech/board.step", fh))],
                data={"message": "3D model"},
            )
        assert r.status_code == 201, r.text
        assert r.json()["files"] == [
            {"path": "mech/board.step", "size": SIZE, "sha256": sha, "media_type": "model/step"}
        ]
        digest = hashlib.sha256()
        with http.stream(
            "GET", "/api/v1/projects/alice/big/revisions/1/files/mech/board.step"
        ) as s:
            assert s.status_code == 200
            for chunk in s.iter_bytes(CHUNK):
                digest.update(chunk)
        assert digest.hexdigest() == sha
        peak = _peak_rss(pid)
    # Spooled to disk and streamed to S3 in 16 MiB parts: the peak does not grow with the
    # upload (seen here: 140 MiB for 32 MiB, 216 MiB for 384 MiB and for 768 MiB).
    print(f"API peak RSS: {peak / 2**20:.0f} MiB")
    assert peak < 250 * 1024 * 1024, f"API peak RSS {peak / 2**20:.0f} MiB for a 384 MiB upload"
