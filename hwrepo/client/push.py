"""Pushing a directory as a revision, sending only what the server lacks: the commit of the
file list (sizes and SHA-256, with an Idempotency-Key derived from the content, so a retried
push returns the same revision) first; when the server answers that it lacks some contents, it
names them, the client sends those and commits again. A content the server offers a signed
PUT for goes straight to its S3 server (which checks its SHA-256), any other, or one whose
direct PUT fails, through the API. An unchanged push is one request, and reads no file whose
stat is what it was at the last push (files.HashCache)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from hwrepo.client.api import Api, ClientError
from hwrepo.client.files import IGNORE_FILE, LocalFile, collect, idempotency_key

CHUNK = 1024 * 1024
# Blobs sent at once: the server receives one while it writes another to the bucket.
PARALLEL_BLOBS = 4


@dataclass
class Pushed:
    revision: dict[str, Any]
    files: int
    sent_files: int
    sent_bytes: int
    left_out: list[str]


def split_project(project: str) -> tuple[str, str]:
    owner, _, name = project.partition("/")
    if not owner or not name or "/" in name:
        raise ClientError(f"{project!r} is not a project: write OWNER/NAME")
    return owner, name


def ensure_project(
    api: Api, project: str, *, create: bool, licence: str | None, private: bool
) -> None:
    owner, name = split_project(project)
    try:
        api.json("GET", f"/projects/{owner}/{name}")
        return
    except ClientError as exc:
        if exc.status != 404:
            raise
        if not create:
            raise ClientError(
                f"project {project} does not exist, or is private and this token may not see "
                "it (push with --create to make it)"
            ) from None
    if not licence:
        raise ClientError(
            f"project {project} does not exist: --create needs --licence (an SPDX id such as "
            "CERN-OHL-S-2.0, or LicenseRef-<name>)"
        )
    me = api.json("GET", "/user")["name"]
    if me != owner:
        raise ClientError(f"--create makes projects of your own ({me}/…), not of {owner}")
    body = {
        "name": name,
        "kind": "hardware",
        "licence": licence,
        "visibility": "private" if private else "public",
    }
    api.json("POST", "/projects", json=body)


class Reporter:
    """Progress while bytes go out: a bar on a terminal, plain lines elsewhere (CI logs)."""

    def __init__(self, total: int, files: int, out: Any = None) -> None:
        self.out = out or sys.stderr
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.total, self.files = total, files
        self.done = 0
        self.next_line = 0
        self.lock = threading.Lock()  # blobs go out from several threads
        self.progress: Any = None  # rich's Progress, on a terminal
        self.task: Any = None

    def __enter__(self) -> Reporter:
        if self.tty and self.total:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.progress = Progress(
                TextColumn("uploading {task.fields[files]}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self.progress.start()
            files = counted(self.files, "file")
            self.task = self.progress.add_task("upload", total=self.total, files=files)
        elif self.total:
            print(f"uploading {counted(self.files, 'file')}, {self.total} bytes", file=self.out)
        return self

    def advance(self, n: int) -> None:
        with self.lock:
            self.done += n
            if self.progress is not None:
                self.progress.update(self.task, advance=n)
            elif self.total and self.done >= self.next_line:
                print(f"  {100 * self.done // self.total}% ({self.done} bytes)", file=self.out)
                self.next_line = self.done + max(self.total // 10, 1)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


def _chunks(path: Path, advance: Callable[[int], None]) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            advance(len(chunk))
            yield chunk


def push(
    api: Api,
    project: str,
    root: Path,
    *,
    message: str = "",
    out: Any = None,
) -> Pushed:
    owner, name = split_project(project)
    if not root.is_dir():
        raise ClientError(f"{root} is not a directory")
    files, left_out = collect(root)
    if not files:
        raise ClientError(
            f"nothing to push: {root} holds no file once .git/, sim_build/, __pycache__/ and "
            f"the patterns of {IGNORE_FILE} are left out"
        )
    base = f"/projects/{owner}/{name}"
    commit = {"files": [f.ref() for f in files], "message": message}
    key = {"Idempotency-Key": idempotency_key(files, message)}
    try:
        revision = api.json("POST", f"{base}/revisions/commit", json=commit, headers=key)
        return Pushed(revision, len(files), 0, 0, left_out)
    except ClientError as exc:
        if exc.status != 422 or "were not uploaded" not in exc.message:
            raise
        if "missing" in exc.problem:
            missing = set(exc.problem["missing"])
        else:  # a server that does not name them: ask
            asked = api.json("POST", f"{base}/blobs/missing", json={"files": commit["files"]})
            missing = set(asked["missing"])
        offers = exc.problem.get("uploads") or {}
    to_send: dict[str, LocalFile] = {}
    for f in files:
        if f.sha256 in missing:
            to_send.setdefault(f.sha256, f)
    total = sum(f.size for f in to_send.values())
    with Reporter(total, len(to_send), out) as reporter:

        def send(sha: str, f: LocalFile) -> None:
            offer = offers.get(sha)
            if isinstance(offer, dict) and _sent_to_store(direct, offer, f, reporter):
                return
            api.request(
                "PUT",
                f"{base}/blobs/{sha}",
                content=_chunks(f.local, reporter.advance),
                headers={"Content-Length": str(f.size), "Content-Type": "application/octet-stream"},
                timeout=None,
            )

        # The largest first, so that the last one out is a small one.
        order = sorted(to_send.items(), key=lambda item: -item[1].size)
        with (
            httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0)) as direct,
            ThreadPoolExecutor(max_workers=PARALLEL_BLOBS) as pool,
        ):
            for sent in [pool.submit(send, sha, f) for sha, f in order]:
                sent.result()  # the first failure is the push's
    revision = api.json("POST", f"{base}/revisions/commit", json=commit, headers=key)
    return Pushed(revision, len(files), len(to_send), total, left_out)


def _sent_to_store(
    http: httpx.Client, offer: dict[str, Any], f: LocalFile, reporter: Reporter
) -> bool:
    """Send `f` by the PUT the server signed for it, straight to its S3 server (no token goes
    there: `http` is a client of its own). False when that fails in any way (the store
    unreachable from here, the signature too old…): the caller sends it through the API."""
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        reporter.advance(n)

    try:
        answer = http.request(
            str(offer.get("method", "PUT")),
            str(offer["url"]),
            content=_chunks(f.local, advance),
            headers={str(k): str(v) for k, v in dict(offer.get("headers") or {}).items()},
        )
        stored = answer.status_code in {200, 201}
    except (httpx.HTTPError, KeyError, ValueError):
        stored = False
    if not stored:
        reporter.advance(-done)
    return stored


def counted(n: int, thing: str) -> str:
    """'1 file', '3 files'."""
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"
