"""A user's own API tokens, without shell access to the server: who am I, make (read, write,
checks scopes; an expiry), list, revoke; refused tokens say why; reindex keeps them."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from hwrepo.domain.model import utcnow
from hwrepo.service_layer import users
from hwrepo.service_layer.backends import Backends
from tests.conftest import Actor

PROJECT = {"name": "blinky", "kind": "hardware", "licence": "MIT"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_tokens_made_listed_used_and_revoked_through_the_api(
    api: TestClient, alice: Actor, bob: Actor
) -> None:
    me = api.get("/api/v1/user", headers=alice.headers)
    assert me.status_code == 200 and me.json()["name"] == "alice"
    anonymous = api.get("/api/v1/user")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"].startswith("application/problem+json")

    made = api.post(
        "/api/v1/user/tokens",
        json={"name": "ci read", "scope": "read", "expires_in_days": 30},
        headers=alice.headers,
    )
    assert made.status_code == 201, made.text
    read = made.json()
    assert read["token"].startswith("hwr_") and read["scope"] == "read"
    assert read["expires"] is not None

    listed = api.get("/api/v1/user/tokens", headers=alice.headers).json()
    assert "ci read" in {t["name"] for t in listed}
    assert all("token" not in t and "sha256" not in t for t in listed)  # never the secret again

    # a read-only token reads, and can change nothing
    assert api.get("/api/v1/user", headers=bearer(read["token"])).json()["name"] == "alice"
    refused = api.post("/api/v1/projects", json=PROJECT, headers=bearer(read["token"]))
    assert refused.status_code == 403 and "read-only" in refused.json()["detail"]
    assert api.post("/api/v1/projects", json=PROJECT, headers=alice.headers).status_code == 201

    # bob cannot revoke alice's token; alice can
    assert api.delete(f"/api/v1/user/tokens/{read['id']}", headers=bob.headers).status_code == 404
    assert api.delete(f"/api/v1/user/tokens/{read['id']}", headers=alice.headers).status_code == 204
    gone = api.get("/api/v1/user", headers=bearer(read["token"]))
    assert gone.status_code == 401 and "was revoked on" in gone.json()["detail"]
    assert read["id"] not in {
        t["id"] for t in api.get("/api/v1/user/tokens", headers=alice.headers).json()
    }

    bad = api.post(
        "/api/v1/user/tokens", json={"name": "x", "scope": "admin"}, headers=alice.headers
    )
    assert bad.status_code == 422


def test_an_expired_token_is_refused_with_its_expiry(
    api: TestClient, backends: Backends, alice: Actor
) -> None:
    secret, _ = users.issue_token(
        backends, "alice", "short", expires=utcnow() + timedelta(seconds=1)
    )
    assert api.get("/api/v1/user", headers=bearer(secret)).status_code == 200
    time.sleep(1.2)
    expired = api.get("/api/v1/user", headers=bearer(secret))
    assert expired.status_code == 401 and "expired on" in expired.json()["detail"]
    unknown = api.get("/api/v1/user", headers=bearer("hwr_" + "x" * 43))
    assert unknown.status_code == 401 and "not valid" in unknown.json()["detail"]


def test_a_checks_token_may_only_report_external_checks(
    api: TestClient, backends: Backends, alice: Actor
) -> None:
    secret = users.create_token(backends, "alice", "ci checks", scope="checks")
    refused = api.post("/api/v1/projects", json=PROJECT, headers=bearer(secret))
    assert refused.status_code == 403 and "external checks" in refused.json()["detail"]
    assert api.get("/api/v1/user", headers=bearer(secret)).status_code == 200
