"""Blobs a push client sends straight to the S3 server: the API signs a PUT for each missing
content (its key, size and `x-amz-checksum-sha256`), the S3 server keeps only bytes with that
SHA-256, and the client falls back to the API's `PUT …/blobs/{sha256}` when the store cannot be
reached from where it runs. Real S3 server, real API process, the client as a process."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from hwrepo.adapters.objectstore import blob_key
from hwrepo.config import Settings
from hwrepo.entrypoints import embedded
from hwrepo.entrypoints.api.app import create_app
from hwrepo.service_layer import users
from hwrepo.service_layer.backends import Backends
from tests.conftest import Actor
from tests.integration.helpers import API, assert_problem, blob_keys, create_project, headers_of
from tests.integration.test_client import hwrepo
from tests.pipeline import api_process, pipeline_stack

COMMIT_ROUTE = "/api/v1/projects/{owner}/{name}/revisions/commit"
BLOB_ROUTE = "/api/v1/projects/{owner}/{name}/blobs/{sha256}"


def _store_url(settings: Settings) -> str:
    return f"http://{settings.s3['endpoint']}"


@pytest.fixture
def direct_api(settings: Settings, backends: Backends) -> Iterator[TestClient]:
    """The API of `api`, its settings naming the test's S3 server as the clients' address."""
    tuned = settings.model_copy(update={"s3_client_url": _store_url(settings)})
    own = Backends.from_settings(tuned)
    try:
        with TestClient(create_app(tuned, own, relay=False)) as client:
            yield client
    finally:
        own.close()


def test_the_store_keeps_only_the_bytes_the_api_signed_for(
    direct_api: TestClient, backends: Backends, alice: Actor, settings: Settings
) -> None:
    project = create_project(direct_api, alice, "direct")["full_name"]
    data, other = b"module top; endmodule\n" * 1000, b"module bad; endmodule\n" * 1000
    sha = hashlib.sha256(data).hexdigest()
    files = {"files": [{"path": "top.v", "size": len(data), "sha256": sha}]}
    commit = f"{API}/{project}/revisions/commit"
    problem = assert_problem(direct_api.post(commit, json=files, headers=headers_of(alice)), 422)
    assert problem["missing"] == [sha]
    offer = problem["uploads"][sha]
    assert offer["method"] == "PUT" and offer["url"].startswith(_store_url(settings))
    assert offer["headers"]["content-length"] == str(len(data))
    assert str(settings.s3_secret_key) not in json.dumps(problem)  # a signature, not the key
    # other bytes of the same length: refused by the store, and nothing kept
    r = httpx.put(offer["url"], content=other, headers=offer["headers"])
    assert r.status_code == 400, r.text
    # the claimed digest changed to that of the other bytes: the signature no longer holds
    forged = {**offer["headers"], "x-amz-checksum-sha256": problem_digest(other)}
    assert httpx.put(offer["url"], content=other, headers=forged).status_code == 403
    assert blob_key(sha) not in blob_keys(backends)
    assert blob_key(hashlib.sha256(other).hexdigest()) not in blob_keys(backends)
    # the bytes themselves: kept, and the commit makes the revision
    assert httpx.put(offer["url"], content=data, headers=offer["headers"]).status_code == 200
    made = direct_api.post(commit, json=files, headers=headers_of(alice))
    assert made.status_code == 201, made.text
    got = direct_api.get(f"{API}/{project}/revisions/1/files/top.v", headers=headers_of(alice))
    assert got.content == data
    assert not list(backends.store.list_keys("probes/"))  # the store's probe left nothing


def problem_digest(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_no_uploads_are_offered_without_an_address_clients_reach(
    api: TestClient, alice: Actor
) -> None:
    project = create_project(api, alice, "through")["full_name"]
    data = b"wire w;\n"
    files = {
        "files": [{"path": "w.v", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}]
    }
    r = api.post(f"{API}/{project}/revisions/commit", json=files, headers=headers_of(alice))
    assert "uploads" not in assert_problem(r, 422)


def _requests(url: str, method: str, route: str) -> float:
    text = httpx.get(url + "/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("hwrepo_http_requests_total{")
        and f'route="{route}"' in line
        and f'method="{method}"' in line
    )


@pytest.mark.parametrize("reachable", [True, False])
def test_push_sends_blobs_to_the_store_or_else_through_the_api(
    settings: Settings, tmp_path: Path, reachable: bool
) -> None:
    with pipeline_stack(settings, tmp_path) as (own, backends, _client):
        (closed,) = embedded.free_ports(1)
        store = _store_url(own) if reachable else f"http://127.0.0.1:{closed}"
        log = tmp_path / "api.log"
        with api_process(own, tmp_path / "api-data", log, HWREPO_S3_CLIENT_URL=store) as url:
            users.create_user(backends, "alice")
            token = users.create_token(backends, "alice", "ci")
            home = tmp_path / "home"
            home.mkdir()
            design = tmp_path / "design"
            design.mkdir()
            (design / "big.bin").write_bytes(hashlib.sha256(b"x").digest() * 200_000)
            (design / "top.v").write_text("module top; endmodule\n")
            env = {"HWREPO_SERVER": url, "HWREPO_TOKEN": token}
            pushed = hwrepo(home, "push", str(design), "-p", "alice/d", "--create",
                            "--licence", "MIT", **env)  # fmt: skip
            assert pushed.returncode == 0, pushed.stderr + log.read_text()
            assert "2 files, 2 sent" in pushed.stderr
            through_api = _requests(url, "PUT", BLOB_ROUTE)
            assert through_api == (0 if reachable else 2), log.read_text()
            assert _requests(url, "POST", COMMIT_ROUTE) == 2
            r = httpx.get(
                f"{url}/api/v1/projects/alice/d/revisions/1/files/big.bin",
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.content == (design / "big.bin").read_bytes()
