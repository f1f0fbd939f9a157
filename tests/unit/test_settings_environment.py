"""Settings handed to another process as HWREPO_* variables come back the same there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hwrepo.config import Settings, UploadLimits


def test_settings_given_as_variables_are_read_back_the_same(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    given = Settings(
        data_dir=tmp_path / "worker",
        s3_endpoint="http://127.0.0.1:9000",
        s3_access_key="key",
        s3_secret_key="a secret with spaces",
        nats_urls=["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"],
        nats_stream_replicas=3,
        seed_demo_projects=False,
        job_ack_wait_s=8.5,
        worker_kinds=["simulation"],
        upload_limits=UploadLimits(max_entries=7),
    )
    env = given.as_environment()
    assert env["HWREPO_NATS_URLS"] == '["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]'
    assert env["HWREPO_SEED_DEMO_PROJECTS"] == "false"
    assert "HWREPO_S3_BUCKET" not in env  # not given: the other process keeps its default
    for key in [k for k in os.environ if k.startswith("HWREPO_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert Settings() == given
