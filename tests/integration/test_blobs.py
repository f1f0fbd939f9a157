"""Pushing only what the server lacks, on the real S3 server: a blob larger than one part of
the bucket's multipart upload arrives whole and is the revision's file; bytes that are not the
blob they are sent as are refused and leave nothing behind; a blob sent twice is stored once."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

from fastapi.testclient import TestClient

from hwrepo.adapters.objectstore import PART_SIZE
from tests.conftest import Actor
from tests.integration.helpers import assert_problem
from tests.pipeline import new_project


def _in_pieces(data: bytes, size: int = 65536) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_a_blob_of_several_parts_is_stored_whole_and_wrong_bytes_are_refused(
    api: TestClient, alice: Actor
) -> None:
    project = new_project(api, alice.headers, "big")
    base = f"/api/v1/projects/{project}"
    data = os.urandom(PART_SIZE + PART_SIZE // 2 + 12345)  # two parts, the second one short
    sha = hashlib.sha256(data).hexdigest()
    ref = {"path": "data/big.bin", "size": len(data), "sha256": sha}
    r = api.post(f"{base}/blobs/missing", json={"files": [ref]}, headers=alice.headers)
    assert r.status_code == 200 and r.json()["missing"] == [sha], r.text

    # the same length but other bytes (one flipped at the end): refused, nothing stored
    wrong = data[:-1] + bytes([data[-1] ^ 1])
    headers = alice.headers | {"Content-Length": str(len(data))}
    r = api.put(f"{base}/blobs/{sha}", content=_in_pieces(wrong), headers=headers)
    assert "not the blob" in assert_problem(r, 422)["detail"]
    r = api.post(f"{base}/blobs/missing", json={"files": [ref]}, headers=alice.headers)
    assert r.json()["missing"] == [sha]

    r = api.put(f"{base}/blobs/{sha}", content=_in_pieces(data), headers=headers)
    assert r.status_code == 201, r.text
    r = api.put(f"{base}/blobs/{sha}", content=_in_pieces(data), headers=headers)
    assert r.status_code == 200, r.text  # there already
    r = api.post(f"{base}/blobs/missing", json={"files": [ref]}, headers=alice.headers)
    assert r.json()["missing"] == []

    r = api.post(f"{base}/revisions/commit", json={"files": [ref]}, headers=alice.headers)
    assert r.status_code == 201, r.text
    number = r.json()["number"]
    got = api.get(f"{base}/revisions/{number}/files/data/big.bin", headers=alice.headers)
    assert got.status_code == 200
    assert hashlib.sha256(got.content).hexdigest() == sha


def test_a_commit_names_the_contents_it_lacks_and_a_retry_needs_none(
    api: TestClient, alice: Actor
) -> None:
    """What `hwrepo push` relies on: commit first; the answer names the missing contents (by
    SHA-256, each once); once they are sent the same commit makes the revision, and the same
    commit again (its Idempotency-Key) returns it."""
    project = new_project(api, alice.headers, "commit-first")
    base = f"/api/v1/projects/{project}"
    kept, new = b"module kept; endmodule\n", os.urandom(70_000)
    for data in (kept,):
        sha = hashlib.sha256(data).hexdigest()
        headers = alice.headers | {"Content-Length": str(len(data))}
        assert api.put(f"{base}/blobs/{sha}", content=data, headers=headers).status_code == 201
    refs = [
        {"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
        for p, d in [("rtl/kept.v", kept), ("data/a.bin", new), ("data/b.bin", new)]
    ]
    commit = {"files": refs, "message": "first"}
    key = alice.headers | {"Idempotency-Key": "commit-first-1"}

    problem = assert_problem(api.post(f"{base}/revisions/commit", json=commit, headers=key), 422)
    assert problem["missing"] == [refs[1]["sha256"]]
    assert "data/a.bin, data/b.bin" in problem["detail"]

    headers = alice.headers | {"Content-Length": str(len(new))}
    r = api.put(f"{base}/blobs/{refs[1]['sha256']}", content=new, headers=headers)
    assert r.status_code == 201, r.text
    first = api.post(f"{base}/revisions/commit", json=commit, headers=key)
    assert first.status_code == 201 and first.json()["created_now"] is True, first.text
    again = api.post(f"{base}/revisions/commit", json=commit, headers=key)
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["number"] == first.json()["number"]
