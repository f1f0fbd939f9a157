"""Helpers of the integration tests: API calls, problem+json checks, archives, JetStream events."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import tarfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import DeliverPolicy
from nats.js.client import JetStreamContext

from hwrepo.config import Settings
from hwrepo.domain.events import EVENTS_STREAM, EVENTS_SUBJECT_PREFIX
from hwrepo.service_layer.backends import Backends
from tests.conftest import Actor

API = "/api/v1/projects"
PROBLEM_JSON = "application/problem+json"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content(label: str, size: int) -> bytes:
    """`size` bytes that depend on `label` and hardly compress (far from any max_ratio)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{label}/{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


# -- API -----------------------------------------------------------------------------------------


def headers_of(actor: Actor | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {**(actor.headers if actor is not None else {}), **(extra or {})}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """Check an RFC 9457 problem response with this status; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON, response.headers
    body = response.json()
    assert body["type"] == "about:blank"
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def create_project(
    client: TestClient,
    actor: Actor,
    name: str,
    *,
    kind: str = "hardware",
    licence: str = "CERN-OHL-S-2.0",
    **fields: Any,
) -> dict[str, Any]:
    r = client.post(
        API,
        json={"name": name, "kind": kind, "licence": licence, **fields},
        headers=actor.headers,
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def upload(
    client: TestClient,
    actor: Actor | None,
    project: str,
    files: Mapping[str, bytes] | None = None,
    *,
    archives: Iterable[tuple[str, bytes]] = (),
    message: str = "",
    directory: str | None = None,
    base: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """POST a revision of `project` ("owner/name") as multipart: `files` parts named by path,
    then `archive` parts."""
    parts: list[tuple[str, tuple[str, bytes]]] = [
        ("files", (path, data)) for path, data in (files or {}).items()
    ]
    parts += [("archive", (filename, data)) for filename, data in archives]
    data = {"message": message}
    if directory is not None:
        data["directory"] = directory
    if base is not None:
        data["base"] = str(base)
    return client.post(
        f"{API}/{project}/revisions", files=parts, data=data, headers=headers_of(actor, headers)
    )


def uploaded(
    client: TestClient, actor: Actor, project: str, files: Mapping[str, bytes], **kw: Any
) -> dict[str, Any]:
    """Upload and insist on 201; return the revision."""
    r = upload(client, actor, project, files, **kw)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def revision_total(client: TestClient, actor: Actor | None, project: str) -> int:
    r = client.get(f"{API}/{project}/revisions", headers=headers_of(actor))
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


def blob_keys(backends: Backends) -> set[str]:
    return set(backends.store.list_keys("blobs/"))


# -- archives ------------------------------------------------------------------------------------


def make_zip(members: Iterable[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def zip_symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = (0o120777 << 16) | 0x20
    info.create_system = 3  # Unix
    return info, target.encode()


def make_tar(members: Iterable[tuple[str | tarfile.TarInfo, bytes]], *, gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = name if isinstance(name, tarfile.TarInfo) else tarfile.TarInfo(name)
            if info.isreg():
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return buf.getvalue()


def tar_special(name: str, kind: bytes, *, linkname: str = "") -> tarfile.TarInfo:
    """A tar header of another type than a regular file (SYMTYPE, LNKTYPE, CHRTYPE, ...)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info


# -- events --------------------------------------------------------------------------------------


async def subscribe_events(
    nc: Client, event_type: str, *, from_start: bool = False
) -> JetStreamContext.PushSubscription:
    """An ordered (ephemeral) consumer of one event type on the HWREPO_EVENTS stream, from the
    next message on, or from the stream's first message."""
    js = nc.jetstream()
    return await js.subscribe(
        f"{EVENTS_SUBJECT_PREFIX}.{event_type}",
        stream=EVENTS_STREAM,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL if from_start else DeliverPolicy.NEW,
    )


async def collect(
    sub: JetStreamContext.PushSubscription,
    project_id: str,
    *,
    count: int,
    timeout: float,
) -> list[Msg]:
    """This project's messages, until `count` arrived or `timeout` seconds passed (the list is
    then shorter). Messages of other projects (other tests share the stream) are skipped."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    found: list[Msg] = []
    while len(found) < count:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            msg = await sub.next_msg(timeout=remaining)
        except (NatsTimeoutError, TimeoutError):
            break
        if json.loads(msg.data).get("projectid") == project_id:
            found.append(msg)
    return found


# -- subprocesses --------------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any HWREPO_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HWREPO_")}
    env.update(extra)
    return env


def cli_env(settings: Settings, data_dir: Path) -> dict[str, str]:
    """Environment for a `hwrepo` command using the servers, bucket and database of `settings`."""
    assert settings.s3_access_key and settings.s3_secret_key and settings.nats_urls
    return clean_env(
        HWREPO_DATA_DIR=str(data_dir),
        HWREPO_S3_ENDPOINT=str(settings.s3_endpoint),
        HWREPO_S3_ACCESS_KEY=settings.s3_access_key,
        HWREPO_S3_SECRET_KEY=settings.s3_secret_key,
        HWREPO_S3_BUCKET=settings.s3_bucket,
        HWREPO_NATS_URLS=json.dumps(settings.nats_urls),
        HWREPO_DATABASE_URL=settings.db_url,
    )
