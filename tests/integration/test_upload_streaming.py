"""A multipart upload is staged while it arrives, and the put of each big file (over 5 MiB)
starts as soon as it is staged, holding back its last bytes until the upload is accepted: what
is refused, replaced or replayed leaves no blob, and what is kept is stored byte for byte."""

from __future__ import annotations

import httpx
from fastapi.testclient import TestClient

from hwrepo.adapters.objectstore import AT_ONCE, MIN_PART_SIZE, PART_SIZE, blob_key
from hwrepo.service_layer.backends import Backends
from tests.conftest import Actor
from tests.integration.helpers import (
    API,
    assert_problem,
    blob_keys,
    content,
    create_project,
    headers_of,
    sha256,
    upload,
    uploaded,
)

BIG = MIN_PART_SIZE + 1  # the smallest file whose put starts early
# two full parts and a tail of a few bytes (objectstore._held_part_size)
BIGGER = 2 * PART_SIZE + 12_345


def _files(client: TestClient, actor: Actor, project: str, number: int) -> dict[str, str]:
    r = client.get(f"{API}/{project}/revisions/{number}", headers=headers_of(actor))
    assert r.status_code == 200, r.text
    return {f["path"]: f["sha256"] for f in r.json()["files"]}


def test_big_files_are_stored_byte_for_byte(
    api: TestClient, backends: Backends, alice: Actor
) -> None:
    project = create_project(api, alice, "big")["full_name"]
    small, big, bigger = content("small", 1000), content("big", BIG), content("bigger", BIGGER)
    rev = uploaded(
        api, alice, project, {"a.bin": big, "notes.txt": small, "b/c.bin": bigger, "d.bin": big}
    )
    assert rev["new_bytes"] == len(small) + len(big) + len(bigger)
    assert blob_keys(backends) == {blob_key(sha256(d)) for d in (small, big, bigger)}
    for path, data in (("a.bin", big), ("b/c.bin", bigger), ("d.bin", big)):
        r = api.get(f"{API}/{project}/revisions/1/files/{path}", headers=headers_of(alice))
        assert r.status_code == 200, r.text
        assert r.content == data, path
    # the same again: every blob is there, nothing is sent to the bucket twice
    again = uploaded(api, alice, project, {"a.bin": big, "b/c.bin": bigger})
    assert again["new_bytes"] == 0


def test_a_refused_upload_leaves_no_blob_of_the_files_before_the_problem(
    api: TestClient, backends: Backends, alice: Actor
) -> None:
    project = create_project(api, alice, "refused")["full_name"]
    before = blob_keys(backends)
    big, bigger = content("early", BIG), content("early2", BIGGER)
    r = upload(api, alice, project, {"a.bin": big, "c.bin": bigger, "../escape.v": b"x"})
    problem = assert_problem(r, 422)
    assert problem["entry"] == "../escape.v"
    assert blob_keys(backends) == before
    # refused after the whole body: a base revision that does not exist
    r = upload(api, alice, project, {"a.bin": big, "c.bin": bigger}, base=7)
    assert "base revision 7" in assert_problem(r, 422)["detail"]
    assert blob_keys(backends) == before
    # then the same files are accepted and stored whole
    uploaded(api, alice, project, {"a.bin": big, "c.bin": bigger})
    r = api.get(f"{API}/{project}/revisions/1/files/c.bin", headers=headers_of(alice))
    assert r.content == bigger


def test_a_file_replaced_later_in_the_upload_is_not_stored(
    api: TestClient, backends: Backends, alice: Actor
) -> None:
    project = create_project(api, alice, "replaced")["full_name"]
    first, second = content("first", BIG), content("second", BIG)
    parts = [("files", ("x.bin", first)), ("files", ("x.bin", second))]
    r = api.post(f"{API}/{project}/revisions", files=parts, headers=headers_of(alice))
    assert r.status_code == 201, r.text
    assert _files(api, alice, project, 1) == {"x.bin": sha256(second)}
    assert blob_keys(backends) == {blob_key(sha256(second))}
    # a replaced content kept under another path is stored whole, even when its put could
    # only start after the upload was accepted (AT_ONCE earlier puts held the threads)
    held = {f"held-{i}.bin": content(f"held {i}", BIG) for i in range(AT_ONCE)}
    third = content("third", BIG)
    parts = [("files", (path, data)) for path, data in held.items()]
    parts += [("files", ("x.bin", third)), ("files", ("x.bin", first)), ("files", ("y.bin", third))]
    r = api.post(f"{API}/{project}/revisions", files=parts, headers=headers_of(alice))
    assert r.status_code == 201, r.text
    assert _files(api, alice, project, 2) == {
        **{path: sha256(data) for path, data in held.items()},
        "x.bin": sha256(first),
        "y.bin": sha256(third),
    }
    got = api.get(f"{API}/{project}/revisions/2/files/y.bin", headers=headers_of(alice))
    assert got.content == third


def test_a_replayed_upload_stores_nothing_new(
    api: TestClient, backends: Backends, alice: Actor
) -> None:
    project = create_project(api, alice, "replayed")["full_name"]
    big = content("replayed", BIG)
    key = {"Idempotency-Key": "one"}
    first = uploaded(api, alice, project, {"a.bin": big}, headers=key)
    keys = blob_keys(backends)
    r = upload(api, alice, project, {"a.bin": big}, headers=key)
    assert r.status_code == 201, r.text
    assert r.headers["Idempotent-Replayed"] == "true"
    assert r.json()["number"] == first["number"]
    assert blob_keys(backends) == keys
    # the same key for other files: a conflict, and the other file is not stored
    other = content("other", BIG)
    assert_problem(upload(api, alice, project, {"a.bin": other}, headers=key), 409)
    assert blob_keys(backends) == keys


def test_fields_may_come_after_the_files(api: TestClient, backends: Backends, alice: Actor) -> None:
    project = create_project(api, alice, "order")["full_name"]
    big, small = content("ordered", BIG), b"module top; endmodule\n"
    boundary = "b0undary"

    def part(name: str, data: bytes, filename: str | None = None) -> bytes:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        return (
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
        )

    body = (
        part("files", big, "a.bin")
        + part("message", b"fields last")
        + part("directory", b"hw/")
        + part("files", small, "rtl/top.v")
        + f"--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    r = api.post(f"{API}/{project}/revisions", content=body, headers=headers_of(alice, headers))
    assert r.status_code == 201, r.text
    assert r.json()["message"] == "fields last"
    assert _files(api, alice, project, 1) == {
        "hw/a.bin": sha256(big),
        "hw/rtl/top.v": sha256(small),
    }
    twice = body.replace(f"--{boundary}--".encode(), part("directory", b"x") + b"--b0undary--")
    r = api.post(f"{API}/{project}/revisions", content=twice, headers=headers_of(alice, headers))
    assert "'directory' field is given twice" in assert_problem(r, 422)["detail"]


def test_a_body_that_ends_early_is_refused_and_stores_nothing(
    api: TestClient, backends: Backends, alice: Actor
) -> None:
    project = create_project(api, alice, "truncated")["full_name"]
    before = blob_keys(backends)
    big = content("cut", BIG + 100_000)
    request = httpx.Request(
        "POST", "http://x/", files=[("files", ("a.bin", big)), ("files", ("b.txt", b"b"))]
    )
    body = request.read()
    headers = {"Content-Type": request.headers["Content-Type"]}
    for cut, words in (
        (len(body) - 10, "ended before its closing boundary"),
        (len(big) // 2, "ended before its closing boundary"),
    ):
        r = api.post(
            f"{API}/{project}/revisions", content=body[:cut], headers=headers_of(alice, headers)
        )
        assert words in assert_problem(r, 422)["detail"]
    r = api.post(
        f"{API}/{project}/revisions",
        content=b"not multipart at all",
        headers=headers_of(alice, headers),
    )
    assert_problem(r, 422)
    assert blob_keys(backends) == before
    assert api.get(f"{API}/{project}/revisions", headers=headers_of(alice)).json()["total"] == 0
