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
