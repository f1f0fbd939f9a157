from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import Actor


def test_upload_and_read_back(client: TestClient, alice: Actor) -> None:
    r = client.post(
        "/api/v1/projects",
        json={"name": "blinky", "kind": "hardware", "licence": "CERN-OHL-S-2.0"},
        headers=alice.headers,
    )
    assert r.status_code == 201, r.text
    r = client.post(
        "/api/v1/projects/alice/blinky/revisions",
        files=[("files", ("rtl/top.v", b"module top; endmodule\n"))],
        data={"message": "first"},
        headers=alice.headers,
    )
    assert r.status_code == 201, r.text
    assert r.json()["number"] == 1
    r = client.get("/api/v1/projects/alice/blinky/revisions/1/files/rtl/top.v")
    assert r.content == b"module top; endmodule\n"


def test_uploaded_files_are_served_without_script_rights(client: TestClient, alice: Actor) -> None:
    client.post(
        "/api/v1/projects",
        json={"name": "x", "kind": "hardware", "licence": "MIT"},
        headers=alice.headers,
    )
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    r = client.post(
        "/api/v1/projects/alice/x/revisions",
        files=[("files", ("render.svg", svg))],
        headers=alice.headers,
    )
    assert r.status_code == 201
    r = client.get("/api/v1/projects/alice/x/revisions/1/files/render.svg")
    assert r.content == svg
    assert "sandbox" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
