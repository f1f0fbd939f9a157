"""Uploads: a 100 MB revision through the API and by `hwrepo push`, against a direct MinIO-SDK
put of the same bytes to the same S3 server.

The API is served by uvicorn in a process of its own (as `hwrepo api`), on the benchmark's
private S3 server, nats-server and SQLite database; the worker runs the planner only. Each round
makes three new directories of random bytes (`--mb` in all, in `--files` files), A, D and B, and
measures:

  s3 put A / B   the MinIO SDK's `put_object` of each file (its default part size), one after
                 the other, into a bucket of its own on the same S3 server: the bare operation;
  api upload A   one multipart `POST …/revisions` of A (httpx, streamed from the files) until
                 the API's 201 (the API hashes, stores each blob in S3, commits the revision);
  s3 put D, api blobs D
                 D put with the SDK; then hashed and sent as a client that knows its digests
                 sends it (`PUT …/blobs/{sha}` four at once, then `POST …/revisions/commit`);
  push B         `hwrepo push B` as a person runs it (a new process, a HOME of its own; it
                 commits, is told which blobs the server lacks, sends those straight to the
                 S3 server by the PUTs the API signed for them, then commits again; with
                 `--push-through-api`, by `PUT …/blobs/{sha}`);
  push B again   the same command with nothing changed (one commit request; the server lacks
                 nothing), then the same push in this process (`push()`, digests cached) and
                 B's file list with and without the cache, to split it;
  presigned B    B's files sent straight to the S3 server by presigned PUT URLs (httpx, four at
                 once, as the client sends blobs), into the direct put's bucket: what a push
                 that bypassed the API would cost in transfer. Not what the client does: see
                 `payload_hash_verified`.

During s3 put A, api upload A and push B it also reads the CPU seconds (user + system, /proc)
that the S3 server, the API process, the client process and the benchmark itself spent.

With `--other-client DIR` (a checkout of hwrepo, e.g. a worktree of an older commit), each
round also makes a third directory C, puts it with the SDK, and pushes it new and unchanged with
that checkout's client (to the same API): a before/after of the client at one load.

Before the rounds it asks the S3 server whether it refuses a header-signed PUT whose bytes are
not those of the signed `x-amz-content-sha256`, and one whose bytes are not those of its signed
`x-amz-checksum-sha256` (either would let a client send a blob to S3 directly without the API
seeing its bytes, and still have its SHA-256 guaranteed).

Targets (issues 10 and 14): a new 100 MB upload ≤ 1.3 times the direct put; an unchanged push
≤ 0.05 times the first.

    .venv/bin/python bench/bench_push.py [--rounds 3] [--warmup 1] [--mb 100] [--files 4]
        [--other-client DIR] [--push-through-api]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from common import (
    Stack,
    api_process,
    handle_termination,
    machine_line,
    median,
    print_table,
    ratio,
    run_benchmark,
    seconds,
    timed,
)

from hwrepo.client.api import Api
from hwrepo.client.files import collect
from hwrepo.client.push import push

TARGET_UPLOAD = 1.3
T = TypeVar("T")
TARGET_UNCHANGED = 0.05


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds spent during a step by the S3 server, the API process, the clients this
    benchmark started (finished children) and this process itself."""

    def __init__(self, s3_pid: int, api_pid: int) -> None:
        self.pids = {"S3 server": s3_pid, "API": api_pid}

    def _now(self) -> dict[str, float]:
        t = os.times()
        now = {name: proc_cpu_s(pid) for name, pid in self.pids.items()}
        now["client process"] = t.children_user + t.children_system
        now["benchmark (SDK, httpx)"] = t.user + t.system
        return now

    def measure(self, step: Callable[..., T], *args: Any) -> tuple[T, dict[str, float]]:
        """step(*args) and the CPU seconds each spent meanwhile."""
        before = self._now()
        result = step(*args)
        after = self._now()
        return result, {name: after[name] - before[name] for name in before}


def make_directory(root: Path, mb: int, files: int) -> list[Path]:
    root.mkdir(parents=True)
    size = mb * 1024 * 1024 // files
    paths = []
    for i in range(files):
        path = root / f"data/part-{i}.bin"
        path.parent.mkdir(exist_ok=True)
        with path.open("wb") as fh:
            left = size
            while left:
                chunk = min(left, 8 * 1024 * 1024)
                fh.write(os.urandom(chunk))
                left -= chunk
        paths.append(path)
    return paths


def s3_put(store: object, bucket: str, root: Path, paths: list[Path]) -> float:
    client = store.client  # type: ignore[attr-defined]

    def put() -> None:
        for p in paths:
            client.put_object(
                bucket,
                f"{root.name}/{p.relative_to(root).as_posix()}",
                p.open("rb"),
                p.stat().st_size,
                content_type="application/octet-stream",
            )

    wall, _ = timed(put)
    return float(wall)


def presigned_put(store: object, bucket: str, root: Path, paths: list[Path]) -> float:
    """The files PUT to presigned URLs, four at once, streamed from disk."""
    client = store.client  # type: ignore[attr-defined]
    urls = [
        client.presigned_put_object(
            bucket, f"presigned/{root.name}/{p.name}", expires=timedelta(minutes=10)
        )
        for p in paths
    ]

    def put(url: str, path: Path) -> None:
        with path.open("rb") as fh:
            r = httpx.put(url, content=fh, timeout=600)
        if r.status_code != 200:
            raise RuntimeError(f"presigned PUT: {r.status_code} {r.text[:300]}")

    def all_of_them() -> None:
        with ThreadPoolExecutor(max_workers=4) as pool:
            for done in [pool.submit(put, u, p) for u, p in zip(urls, paths, strict=True)]:
                done.result()

    wall, _ = timed(all_of_them)
    return float(wall)


def payload_hash_verified(s3: dict[str, Any], bucket: str) -> bool:
    """Whether the S3 server refuses a PUT signed (SigV4, in its headers) for the SHA-256 of
    other bytes than those it receives. Where it does not, a request the API signs for a blob's
    claimed digest proves nothing about what arrives."""
    from minio.credentials import Credentials
    from minio.signer import sign_v4_s3

    claimed, sent = b"the bytes the client says", b"other bytes, the same len"
    digest = hashlib.sha256(claimed).hexdigest()
    scheme = "https" if s3.get("secure") else "http"
    url = urlsplit(f"{scheme}://{s3['endpoint']}/{bucket}/payload-hash-probe")
    date = datetime.now(UTC).replace(microsecond=0)
    headers = {
        "Host": s3["endpoint"],
        "x-amz-date": date.strftime("%Y%m%dT%H%M%SZ"),
        "x-amz-content-sha256": digest,
    }
    signed = sign_v4_s3(
        method="PUT",
        url=url,
        region=s3.get("region") or "us-east-1",
        headers=dict(headers),
        credentials=Credentials(s3["access_key"], s3["secret_key"]),
        content_sha256=digest,
        date=date,
    )
    sent_headers = {k: v for k, v in signed.items() if k != "Host"}
    return httpx.put(url.geturl(), content=sent, headers=sent_headers).status_code >= 400


def api_upload(url: str, token: str, project: str, root: Path, paths: list[Path]) -> float:
    with contextlib.ExitStack() as files:
        parts = [
            ("files", (p.relative_to(root).as_posix(), files.enter_context(p.open("rb"))))
            for p in paths
        ]
        wall, r = timed(
            lambda: httpx.post(
                f"{url}/api/v1/projects/{project}/revisions",
                files=parts,
                data={"message": "bench"},
                headers={"Authorization": f"Bearer {token}"},
                timeout=600,
            )
        )
    if r.status_code != 201:
        raise RuntimeError(f"upload: {r.status_code} {r.text[:300]}")
    return float(wall)


def api_blobs(url: str, token: str, project: str, root: Path, paths: list[Path]) -> float:
    """The API's path for a client that knows its files' SHA-256 (what `hwrepo push` does after
    its start): each file hashed and sent by `PUT …/blobs/{sha256}`, four at once, streamed from
    disk, then one `POST …/revisions/commit`; timed from the first hash to the commit's 201."""

    def send(http: httpx.Client, path: Path) -> dict[str, Any]:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1024 * 1024):
                digest.update(chunk)
        sha = digest.hexdigest()
        with path.open("rb") as fh:
            r = http.put(f"/api/v1/projects/{project}/blobs/{sha}", content=fh)
        if r.status_code not in (200, 201):
            raise RuntimeError(f"PUT blob: {r.status_code} {r.text[:300]}")
        return {
            "path": path.relative_to(root).as_posix(),
            "size": path.stat().st_size,
            "sha256": sha,
        }

    def run() -> None:
        with (
            httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=600
            ) as http,
            ThreadPoolExecutor(max_workers=4) as pool,
        ):
            files = list(pool.map(lambda p: send(http, p), paths))
            r = http.post(
                f"/api/v1/projects/{project}/revisions/commit",
                json={"files": files, "message": "bench"},
            )
        if r.status_code != 201:
            raise RuntimeError(f"commit: {r.status_code} {r.text[:300]}")

    wall, _ = timed(run)
    return float(wall)


def client_env(home: Path, **extra: str) -> dict[str, str]:
    """A person's environment: a fresh HOME, and this interpreter's PYTHONPATH (so that the
    client run is the hwrepo this benchmark imports)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env | extra


def cli_push(
    url: str, token: str, project: str, root: Path, home: Path, client: Path | None = None
) -> tuple[float, str]:
    """`hwrepo push` in a new process; `client`: the hwrepo checkout whose client to run
    instead of this interpreter's."""
    env = client_env(home, HWREPO_SERVER=url, HWREPO_TOKEN=token)
    if client is not None:
        env["PYTHONPATH"] = str(client)
    hwrepo = Path(sys.executable).parent / "hwrepo"
    wall, done = timed(
        lambda: subprocess.run(
            [str(hwrepo), "push", str(root), "--project", project, "-m", "bench"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    )
    if done.returncode != 0:
        raise RuntimeError(f"hwrepo push exited {done.returncode}: {done.stderr[-500:]}")
    said = [ln for ln in done.stderr.splitlines() if ln.startswith("revision ")]
    return float(wall), (said[-1] if said else "")


def push_in_process_s(url: str, token: str, project: str, root: Path) -> float:
    """The unchanged push's own work, in this process (no interpreter start, no imports, no
    argument parsing): the file list (digests cached) and the commit request."""
    with Api(url, token) as api:
        wall, _ = timed(lambda: push(api, project, root, message="bench"))
    return float(wall)


def hashing_s(root: Path, *, cache: bool) -> float:
    """What the client's file list costs (hwrepo.client.files.collect): without its cache, the
    SHA-256 of every file; with it (the client's, after a push), a stat of each."""
    wall, _ = timed(lambda: collect(root, cache=cache))
    return float(wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", "-n", type=int, default=3, help="rounds (median)")
    parser.add_argument("--mb", type=int, default=100, help="MiB per directory")
    parser.add_argument("--files", type=int, default=4, help="files per directory")
    parser.add_argument("--warmup", type=int, default=1, help="rounds first, not counted")
    parser.add_argument(
        "--push-through-api",
        action="store_true",
        help="the API offers no direct PUTs to S3 (no s3_client_url): the pushes send every "
        "blob through PUT …/blobs/{sha256}",
    )
    parser.add_argument(
        "--other-client",
        type=Path,
        help="a checkout of hwrepo (e.g. an older commit's worktree) whose client also pushes "
        "in every round, for a before/after in one run",
    )
    args = parser.parse_args(argv)
    handle_termination()
    started = time.monotonic()
    print(machine_line())
    times: dict[str, list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    notes: list[str] = []
    with Stack() as stack, stack.pipeline([]) as pipe:
        token = pipe.headers["Authorization"].removeprefix("Bearer ")
        store = pipe.backends.store
        bucket = "bench-direct-" + os.urandom(4).hex()
        store.client.make_bucket(bucket)
        project_a, project_b = pipe.project("upload"), pipe.project("push")
        project_c = pipe.project("other-client")
        home = stack.root / "home"
        home.mkdir()
        # collect() here reads the digests the client's pushes keep (in its HOME)
        os.environ["XDG_CACHE_HOME"] = str(home / ".cache")
        verified = payload_hash_verified(pipe.settings.s3, bucket)
        notes.append(
            "the S3 server "
            + ("refuses" if verified else "stores")
            + " a PUT whose bytes are not the signed x-amz-content-sha256"
        )
        # the API's own question, before it offers PUTs straight to S3
        notes.append(
            "the S3 server "
            + ("refuses" if store.checks_checksums() else "does not refuse")
            + " a PUT whose bytes are not its signed x-amz-checksum-sha256 (and takes the"
            " right ones)"
        )
        served = pipe.settings
        if not args.push_through_api:  # the pushes send their blobs straight to S3
            direct = f"{'https' if served.s3['secure'] else 'http'}://{served.s3['endpoint']}"
            served = served.model_copy(update={"s3_client_url": direct})
        with api_process(served) as api:
            assert stack.s3 is not None and stack.s3.process is not None
            meter = CpuMeter(stack.s3.process.pid, api.proc.pid)
            for n in range(-args.warmup, args.rounds):
                # A warm-up round is timed like the others and not counted: the S3 server's
                # first 100 MiB into a new bucket took up to twice as long as the next.
                name = f"warm-up {n + args.warmup + 1}" if n < 0 else f"round {n + 1}"
                this: dict[str, float] = {}
                work = stack.root / f"round-{n + args.warmup}"
                a = make_directory(work / "a", args.mb, args.files)
                b = make_directory(work / "b", args.mb, args.files)
                this["s3 put A"], cpu_s3 = meter.measure(s3_put, store, bucket, work / "a", a)
                this["api upload A"], cpu_upload = meter.measure(
                    api_upload, api.url, token, project_a, work / "a", a
                )
                d = make_directory(work / "d", args.mb, args.files)
                this["s3 put D"] = s3_put(store, bucket, work / "d", d)
                this["api blobs D"], cpu_blobs = meter.measure(
                    api_blobs, api.url, token, project_a, work / "d", d
                )
                this["s3 put B"] = s3_put(store, bucket, work / "b", b)
                (this["push B"], said), cpu_push = meter.measure(
                    cli_push, api.url, token, project_b, work / "b", home
                )
                notes.append(f"{name} push: {said}")
                this["push B again"], said = cli_push(api.url, token, project_b, work / "b", home)
                notes.append(f"{name} push again: {said}")
                this["presigned B"] = presigned_put(store, bucket, work / "b", b)
                this["push B again in process"] = push_in_process_s(
                    api.url, token, project_b, work / "b"
                )
                this["hashing B"] = hashing_s(work / "b", cache=False)
                this["listing B"] = hashing_s(work / "b", cache=True)
                said_ratios = {
                    "upload": ratio(this["api upload A"], this["s3 put A"]),
                    "blobs": ratio(this["api blobs D"], this["s3 put D"]),
                    "push": ratio(this["push B"], this["s3 put B"]),
                    "unchanged": ratio(this["push B again"], this["push B"]),
                }
                print(
                    f"  {name}: "
                    + ", ".join(f"{k} {v:.2f} s" for k, v in this.items())
                    + "; ratios "
                    + ", ".join(f"{k} {v}" for k, v in said_ratios.items()),
                    flush=True,
                )
                if args.other_client is not None:
                    # the same new push and unchanged push by the other client, on bytes of
                    # their own (C), right after this client's: a before/after at one load
                    c = make_directory(work / "c", args.mb, args.files)
                    this["s3 put C"] = s3_put(store, bucket, work / "c", c)
                    for label in ("push C (other client)", "push C again (other client)"):
                        this[label], said = cli_push(
                            api.url, token, project_c, work / "c", home, args.other_client
                        )
                        notes.append(f"{name} {label}: {said}")
                if n >= 0:
                    for label, value in this.items():
                        times.setdefault(label, []).append(value)
                    for step, spent in (
                        ("s3 put", cpu_s3),
                        ("api upload", cpu_upload),
                        ("api blobs", cpu_blobs),
                        ("push", cpu_push),
                    ):
                        for who, value in spent.items():
                            cpu.setdefault((step, who), []).append(value)
                shutil.rmtree(work)
        with contextlib.suppress(Exception):
            for obj in store.client.list_objects(bucket, recursive=True):
                store.client.remove_object(bucket, obj.object_name)
            store.client.remove_bucket(bucket)

    for note in notes:
        print(note)

    def rounds_ratio(measured: str, against: str) -> float | None:
        return median([m / a for m, a in zip(times[measured], times[against], strict=True)])

    per_round = {
        "upload": rounds_ratio("api upload A", "s3 put A"),
        "blobs": rounds_ratio("api blobs D", "s3 put D"),
        "push": rounds_ratio("push B", "s3 put B"),
        "unchanged": rounds_ratio("push B again", "push B"),
    }
    med = {k: median(v) for k, v in times.items()}
    rows = [
        [
            f"API upload of {args.mb} MiB (new)",
            seconds(med["api upload A"]),
            "s3 put",
            seconds(med["s3 put A"]),
            ratio(med["api upload A"], med["s3 put A"]),
            f"≤ {TARGET_UPLOAD}x",
        ],
        [
            f"API, PUT blobs + commit, {args.mb} MiB (new)",
            seconds(med["api blobs D"]),
            "s3 put",
            seconds(med["s3 put D"]),
            ratio(med["api blobs D"], med["s3 put D"]),
            f"≤ {TARGET_UPLOAD}x",
        ],
        [
            f"hwrepo push of {args.mb} MiB (new)",
            seconds(med["push B"]),
            "s3 put",
            seconds(med["s3 put B"]),
            ratio(med["push B"], med["s3 put B"]),
            f"≤ {TARGET_UPLOAD}x",
        ],
        [
            f"presigned PUTs of {args.mb} MiB (4 at once)",
            seconds(med["presigned B"]),
            "s3 put",
            seconds(med["s3 put B"]),
            ratio(med["presigned B"], med["s3 put B"]),
            "—",
        ],
        [
            "hwrepo push, nothing changed",
            seconds(med["push B again"]),
            "first push",
            seconds(med["push B"]),
            ratio(med["push B again"], med["push B"]),
            f"≤ {TARGET_UNCHANGED}x",
        ],
    ]
    if args.other_client is not None:
        rows += [
            [
                f"the other client's push of {args.mb} MiB (new)",
                seconds(med["push C (other client)"]),
                "s3 put",
                seconds(med["s3 put C"]),
                ratio(med["push C (other client)"], med["s3 put C"]),
                f"≤ {TARGET_UPLOAD}x",
            ],
            [
                "the other client's push, nothing changed",
                seconds(med["push C again (other client)"]),
                "its first push",
                seconds(med["push C (other client)"]),
                ratio(med["push C again (other client)"], med["push C (other client)"]),
                f"≤ {TARGET_UNCHANGED}x",
            ],
        ]
        per_round["other client's push"] = rounds_ratio("push C (other client)", "s3 put C")
        per_round["other client's unchanged"] = rounds_ratio(
            "push C again (other client)", "push C (other client)"
        )
    print_table(
        ["measured", "s", "against", "s", "ratio", "target"],
        rows,
        title=f"Medians of {args.rounds} round(s) after {args.warmup} warm-up; {args.files} files"
        " per directory",
    )
    print(
        "median of the rounds' own ratios: "
        + ", ".join(f"{k} {v:.2f}x" for k, v in per_round.items() if v is not None)
    )
    again, inside, listing = med["push B again"], med["push B again in process"], med["listing B"]
    start = None if again is None or inside is None else again - inside
    request = None if inside is None or listing is None else inside - listing
    print_table(
        ["part of the unchanged push", "s"],
        [
            ["the whole `hwrepo push`, a new process", seconds(again, 3)],
            ["  interpreter, imports, argument parsing, output", seconds(start, 3)],
            ["  file list, digests cached (collect())", seconds(listing, 3)],
            ["  the commit request and its answer", seconds(request, 3)],
            ["(the file list without the cache: SHA-256 of every file)", seconds(med["hashing B"])],
        ],
        title="Where the unchanged push's time goes (medians)",
    )
    steps = ("s3 put", "api upload", "api blobs", "push")
    print_table(
        ["CPU seconds of", "s3 put A", "api upload A", "api blobs D", "push B"],
        [
            [who, *(seconds(median(cpu.get((step, who), []))) for step in steps)]
            for who in ("S3 server", "API", "client process", "benchmark (SDK, httpx)")
        ],
        title="Where the CPU goes, per step (medians; user + system, from /proc)",
    )
    print(f"\n{machine_line()}\ntotal {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    run_benchmark(main)
