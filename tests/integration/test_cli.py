"""The `hwrepo` command as a user runs it: a subprocess configured by HWREPO_* variables, against
the same S3 server, bucket, database and NATS as the API under test."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from hwrepo.config import EmbeddedPorts, Settings
from hwrepo.entrypoints import embedded
from hwrepo.service_layer.backends import Backends
from hwrepo.service_layer.users import token_digest
from tests.conftest import Actor
from tests.integration.helpers import API, clean_env, cli_env, create_project, uploaded


def hwrepo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hwrepo.entrypoints.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_users_tokens_and_reindex_from_the_command_line(
    api: TestClient, backends: Backends, settings: Settings, tmp_path: Path
) -> None:
    env = cli_env(settings, tmp_path / "cli-data")

    r = hwrepo(env, "users", "create", "carol")
    assert (r.returncode, r.stdout) == (0, ""), r.stderr
    assert "created user carol" in r.stderr
    r = hwrepo(env, "users", "create", "root", "--admin")
    assert r.returncode == 0, r.stderr
    assert "created user root (admin)" in r.stderr

    r = hwrepo(env, "tokens", "create", "carol", "--name", "laptop")
    assert r.returncode == 0, r.stderr
    token = r.stdout.removesuffix("\n")
    assert r.stdout == token + "\n"  # the token alone, on its own line
    assert re.fullmatch(r"hwr_[A-Za-z0-9_-]{40,}", token), token
    assert token not in r.stderr

    # The token authenticates against the API, as carol.
    carol = Actor("carol", token)
    assert create_project(api, carol, "blinky")["owner"] == "carol"
    assert uploaded(api, carol, "carol/blinky", {"a.txt": b"a"})["author"] == "carol"
    # Only its digest is stored.
    document = backends.store.get_json("users/carol.json")
    assert document is not None
    assert [(t["name"], t["sha256"]) for t in document["tokens"]] == [
        ("laptop", token_digest(token))
    ]
    assert token not in (backends.store.get_bytes("users/carol.json") or b"").decode()

    r = hwrepo(env, "reindex")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(
        r"reindexed 2 users, 1 projects, 1 revisions, \d+ checks, 0 review threads, 0 verdicts "
        r"\(0 skipped\)\n",
        r.stdout,
    ), r.stdout
    # After the rebuild the token still works and numbering goes on.
    assert api.get(f"{API}/carol/blinky", headers=carol.headers).status_code == 200
    assert uploaded(api, carol, "carol/blinky", {"b.txt": b"b"})["number"] == 2


def test_command_line_errors_are_one_line_without_traceback(
    backends: Backends, settings: Settings, tmp_path: Path
) -> None:
    env = cli_env(settings, tmp_path / "cli-data")
    assert hwrepo(env, "users", "create", "dave").returncode == 0
    for args, message in [
        (("users", "create", "dave"), "error: a user named 'dave' already exists"),
        (("users", "create", "bad name"), "error: User name 'bad name' is not allowed"),
        (("tokens", "create", "nobody"), "error: there is no user named 'nobody'"),
    ]:
        r = hwrepo(env, *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert r.stdout == "", args
        assert message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr, (args, r.stderr)
    with backends.reading() as index:
        dave = index.user("dave")
    assert dave is not None and dave.tokens == []


def test_reindex_on_nothing_starts_the_embedded_s3_and_waits_until_it_serves(
    tmp_path: Path,
) -> None:
    """Each run starts on a data directory that does not exist yet, with nothing running: the
    command starts the embedded S3 server itself and must wait until its API serves requests
    (not only until its port accepts connections)."""
    names = [n for n in EmbeddedPorts.model_fields if n != "nats"]
    for attempt in range(6):
        ports = embedded.free_ports(len(names))
        env = clean_env(
            HWREPO_DATA_DIR=str(tmp_path / f"data-{attempt}"),
            **{f"HWREPO_EMBEDDED__{n.upper()}": str(p) for n, p in zip(names, ports, strict=True)},
        )
        r = hwrepo(env, "reindex")
        assert r.returncode == 0, (attempt, r.stderr)
        assert r.stdout == (
            "reindexed 0 users, 0 projects, 0 revisions, 0 checks, 0 review threads, 0 verdicts "
            "(0 skipped)\n"
        )
        assert "Traceback" not in r.stderr, (attempt, r.stderr)
        assert not embedded.answers(ports[names.index("s3")])  # stopped again


def test_an_s3_error_is_one_line_with_the_servers_words(settings: Settings, tmp_path: Path) -> None:
    env = cli_env(settings, tmp_path / "cli-data")
    env["HWREPO_S3_SECRET_KEY"] = "not-the-secret-key"
    for args in (("reindex",), ("users", "create", "erin")):
        r = hwrepo(env, *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and "frozen" not in r.stderr, r.stderr
        (line,) = r.stderr.splitlines()
        assert line.startswith("error: S3 object storage answered with an error: "), line
        assert "SignatureDoesNotMatch" in line or "AccessDenied" in line, line
