"""Revisions: numbering, content-addressed storage with de-duplication, Idempotency-Key, parallel
uploads, downloads. On SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient

from hwrepo.adapters.objectstore import blob_key, manifest_key
from hwrepo.service_layer.backends import Backends
from tests.conftest import Actor
from tests.integration.helpers import (
    API,
    assert_problem,
    blob_keys,
    content,
    create_project,
    revision_total,
    sha256,
    upload,
    uploaded,
)

pytestmark = pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)


def _blobs_of(*datas: bytes) -> set[str]:
    return {blob_key(sha256(d)) for d in datas}


def test_unchanged_files_are_not_stored_again(
    api: TestClient, backends: Backends, alice: Actor
) -> None:
    project = create_project(api, alice, "blinky")
    a, b1, b2 = content("a", 3000), content("b1", 1000), content("b2", 1777)

    first = uploaded(api, alice, "alice/blinky", {"a.bin": a, "b.bin": b1})
    assert (first["number"], first["new_bytes"], first["total_size"]) == (1, 4000, 4000)
    assert blob_keys(backends) == _blobs_of(a, b1)

    # One file unchanged, one changed: only the changed file's bytes are written.
    second = uploaded(api, alice, "alice/blinky", {"a.bin": a, "b.bin": b2})
    assert (second["number"], second["parent"]) == (2, 1)
    assert second["new_bytes"] == len(b2)
    assert blob_keys(backends) == _blobs_of(a, b1, b2)
    assert [(f["path"], f["size"], f["sha256"]) for f in second["files"]] == [
        ("a.bin", len(a), sha256(a)),
        ("b.bin", len(b2), sha256(b2)),
    ]
    manifest = backends.store.get_json(manifest_key(project["id"], 2))
    assert manifest is not None
    assert [(f["path"], f["sha256"]) for f in manifest["files"]] == [
        ("a.bin", sha256(a)),
        ("b.bin", sha256(b2)),
    ]

    # The same files again: a new revision, no new bytes.
    third = uploaded(api, alice, "alice/blinky", {"b.bin": b2, "a.bin": a})
    assert (third["number"], third["new_bytes"]) == (3, 0)
    # The same bytes in another project, and twice within one upload: stored once.
    create_project(api, alice, "other")
    c = content("c", 500)
    other = uploaded(api, alice, "alice/other", {"copy.bin": a, "x/c1": c, "y/c2": c})
    assert (other["number"], other["new_bytes"]) == (1, len(c))
    assert blob_keys(backends) == _blobs_of(a, b1, b2, c)

    # Every revision reads back its own bytes from the shared blobs.
    for number, path, data in [(1, "b.bin", b1), (2, "b.bin", b2), (3, "a.bin", a)]:
        r = api.get(f"{API}/alice/blinky/revisions/{number}/files/{path}")
        assert r.content == data
    assert api.get(f"{API}/alice/other/revisions/1/files/y/c2").content == c


def test_base_carries_files_over(api: TestClient, backends: Backends, alice: Actor) -> None:
    create_project(api, alice, "blinky")
    a, b, c = content("a", 100), content("b", 200), content("c", 300)
    uploaded(api, alice, "alice/blinky", {"a.v": a, "b.v": b})
    uploaded(api, alice, "alice/blinky", {"only.v": c})
    r = uploaded(api, alice, "alice/blinky", {"b.v": c}, base=1, message="on top of 1")
    assert (r["number"], r["parent"], r["new_bytes"]) == (3, 1, 0)
    assert [(f["path"], f["sha256"]) for f in r["files"]] == [
        ("a.v", sha256(a)),
        ("b.v", sha256(c)),
    ]
    problem = assert_problem(upload(api, alice, "alice/blinky", {"x": b"x"}, base=9), 422)
    assert problem["detail"] == "base revision 9 does not exist in alice/blinky"
    assert revision_total(api, alice, "alice/blinky") == 3


def test_idempotency_key_replays_the_first_upload(
    api: TestClient, backends: Backends, alice: Actor
) -> None:
    project = create_project(api, alice, "blinky")
    files = {"rtl/top.v": b"module top; endmodule\n", "doc.md": b"# doc\n"}
    key = {"Idempotency-Key": f"upload-{uuid.uuid4()}"}

    first = upload(api, alice, "alice/blinky", files, message="m", headers=key)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    assert first.json()["created_now"] is True
    assert first.json()["idempotency_key"] == key["Idempotency-Key"]
    blobs = blob_keys(backends)

    again = upload(api, alice, "alice/blinky", files, message="m", headers=key)
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    body = again.json()
    assert (body["number"], body["id"]) == (1, first.json()["id"])
    assert (body["created_now"], body["new_bytes"]) == (False, 0)
    assert revision_total(api, alice, "alice/blinky") == 1
    manifest = backends.store.get_json(manifest_key(project["id"], 1))
    assert manifest is not None and manifest["idempotency_key"] == key["Idempotency-Key"]

    # The same key with other content, or another message, is a conflict; nothing is stored.
    changed = {**files, "doc.md": b"# changed\n"}
    for other_files, message in [(changed, "m"), (files, "another message")]:
        r = upload(api, alice, "alice/blinky", other_files, message=message, headers=key)
        problem = assert_problem(r, 409)
        assert key["Idempotency-Key"] in problem["detail"]
        assert "revision 1" in problem["detail"]
    assert revision_total(api, alice, "alice/blinky") == 1
    assert blob_keys(backends) == blobs
    assert backends.store.get_json(manifest_key(project["id"], 2)) is None

    # Without the key, or with a new one, the same content is a new revision.
    assert uploaded(api, alice, "alice/blinky", files, message="m")["number"] == 2
    new_key = {"Idempotency-Key": f"upload-{uuid.uuid4()}"}
    assert uploaded(api, alice, "alice/blinky", files, message="m", headers=new_key)["number"] == 3
    # Keys belong to one project.
    create_project(api, alice, "other")
    r = upload(api, alice, "alice/other", files, message="m", headers=key)
    assert (r.status_code, r.json()["number"], r.json()["created_now"]) == (201, 1, True)


def test_parallel_uploads_get_distinct_consecutive_numbers(
    client: TestClient, backends: Backends, alice: Actor
) -> None:
    project = create_project(client, alice, "blinky")
    start = threading.Barrier(8)

    def one(i: int) -> httpx.Response:
        start.wait(timeout=30)
        files = {f"f{i}.txt": f"file {i}\n".encode(), "shared.txt": b"same in every upload\n"}
        return upload(client, alice, "alice/blinky", files, message=f"upload {i}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(one, range(8)))
    assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses]
    number_of = {i: r.json()["number"] for i, r in enumerate(responses)}
    assert sorted(number_of.values()) == list(range(1, 9))
    assert revision_total(client, alice, "alice/blinky") == 8

    for i, number in number_of.items():
        revision = client.get(f"{API}/alice/blinky/revisions/{number}").json()
        assert revision["message"] == f"upload {i}"
        assert revision["parent"] == (number - 1 if number > 1 else None)
        assert [f["path"] for f in revision["files"]] == [f"f{i}.txt", "shared.txt"]
        manifest = backends.store.get_json(manifest_key(project["id"], number))
        assert manifest is not None and manifest["message"] == f"upload {i}"
    assert uploaded(client, alice, "alice/blinky", {"late.txt": b"late"})["number"] == 9


def test_parallel_retries_with_one_idempotency_key_make_one_revision(
    client: TestClient, alice: Actor
) -> None:
    create_project(client, alice, "blinky")
    start = threading.Barrier(6)
    key = {"Idempotency-Key": f"retry-{uuid.uuid4()}"}

    def one(_: int) -> httpx.Response:
        start.wait(timeout=30)
        return upload(client, alice, "alice/blinky", {"a.txt": b"a"}, message="m", headers=key)

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(one, range(6)))
    assert [r.status_code for r in responses] == [201] * 6, [r.text for r in responses]
    assert {r.json()["number"] for r in responses} == {1}
    assert sorted(r.json()["created_now"] for r in responses) == [False] * 5 + [True]
    assert revision_total(client, alice, "alice/blinky") == 1
