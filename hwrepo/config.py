"""All configuration in one place: environment variables (HWREPO_*) and an optional TOML file.

When no S3 endpoint, NATS URL or database URL is given, `hwrepo up` runs the embedded default:
a SeaweedFS S3 server, a nats-server and SQLite, all under the data directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import tomllib
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class EmbeddedPorts(BaseModel):
    """Ports of the embedded servers (127.0.0.1 only). Change them to run two stacks at once."""

    nats: int = 14222
    s3: int = 18333
    s3_grpc: int = 28333
    master: int = 19333
    master_grpc: int = 29333
    volume: int = 19340
    volume_grpc: int = 29340
    filer: int = 18888
    filer_grpc: int = 28888
    admin: int = 23646
    admin_grpc: int = 33646

    def named(self) -> dict[str, int]:
        return self.model_dump()


class UploadLimits(BaseModel):
    max_entries: int = 20_000
    max_file_size: int = 2 * 1024**3
    max_total_size: int = 8 * 1024**3
    max_ratio: float = 200.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HWREPO_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    data_dir: Path = Path(".hwrepo")
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    public_url: str | None = None

    # Object storage (any S3 server, through the MinIO SDK). None: the embedded SeaweedFS.
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_bucket: str = "hwrepo"
    s3_region: str = "us-east-1"
    s3_secure: bool = False
    s3_timeout_s: float = 5.0  # each read (connects and sends: at most 3 s); not a transfer
    # The S3 server's URL as push clients reach it (https://s3.example.org). Set, the API signs
    # each missing blob's PUT for the client to send there itself, if the server refuses bytes
    # that are not those of a signed x-amz-checksum-sha256 (asked once); else blobs go through
    # the API. Unset: the embedded S3 server's own address when the API listens on a loopback
    # address (its clients are on this machine), else none.
    s3_client_url: str | None = None

    # Events. None: the embedded nats-server.
    nats_urls: list[str] | None = None
    nats_user: str | None = None
    nats_password: str | None = None
    nats_token: str | None = None
    nats_creds_file: Path | None = None
    nats_stream_replicas: int = 1

    # Metadata index. None: SQLite in the data directory.
    database_url: str | None = None

    embedded: EmbeddedPorts = Field(default_factory=EmbeddedPorts)
    upload_limits: UploadLimits = Field(default_factory=UploadLimits)
    outbox_poll_s: float = 0.5
    # Answers read from the index that an API process keeps while the index is unchanged
    # (service_layer/readcache.py), at most this much; 0 keeps none.
    read_cache_mib: float = Field(32.0, ge=0)
    # The pages: anyone may make an account when `registration` is on (else an admin sets
    # passwords with `hwrepo users password`); sessions last `session_days`; session cookies
    # are `Secure` when the site is served over HTTPS (public_url https://...).
    registration: bool = False
    session_days: int = 14
    seed_demo_projects: bool = True
    ready_timeout_s: float = 60.0  # `hwrepo up`: how long /readyz may take to answer 200

    # Check workers (`hwrepo worker`; `hwrepo up` starts `workers` of them).
    workers: int = 1
    # jobs one worker process runs at once; None: as many as the machine has cores, and no more
    # than its memory holds at a sandbox's memory limit each (`default_concurrency`)
    worker_concurrency: int | None = None
    worker_kinds: list[str] | None = None  # None: every kind this machine can run
    job_max_attempts: int = 3  # deliveries of a job before it ends errored
    job_ack_wait_s: float = 60.0  # a job whose worker went silent this long is redelivered
    worker_cache_dir: Path | None = None  # blobs, environments, model builds (default: data dir)
    cancel_superseded: bool = True  # a newer revision cancels an older one's queued jobs

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("HWREPO_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    def as_environment(self) -> dict[str, str]:
        """These settings as the HWREPO_* variables that hand them to another process (the
        parts `hwrepo cluster` starts, a test's or a benchmark's worker): every field given
        explicitly, in the form this class reads back (lists and tables as JSON)."""
        env = {}
        for name, value in self.model_dump(mode="json", exclude_unset=True).items():
            if value is not None:
                text = value if isinstance(value, str) else json.dumps(value)
                env[f"{self.model_config.get('env_prefix', '')}{name}".upper()] = text
        return env

    # -- derived -------------------------------------------------------------------------
    @property
    def embedded_s3(self) -> bool:
        return self.s3_endpoint is None

    @property
    def embedded_nats(self) -> bool:
        return self.nats_urls is None

    @property
    def embedded_db(self) -> bool:
        return self.database_url is None

    @cached_property
    def secrets(self) -> dict[str, str]:
        """Credentials of the embedded servers, made once per data directory and kept there."""
        return load_secrets(self.data_dir)

    @property
    def nats_credentials(self) -> dict[str, str]:
        """User and password for NATS: the embedded server's own, or the configured ones."""
        if self.embedded_nats:
            return {"user": "hwrepo", "password": self.secrets["nats_password"]}
        if self.nats_user:
            return {"user": self.nats_user, "password": self.nats_password or ""}
        return {}

    @property
    def s3(self) -> dict[str, Any]:
        """Connection parameters for the MinIO client."""
        if self.embedded_s3:
            return {
                "endpoint": f"127.0.0.1:{self.embedded.s3}",
                "access_key": self.secrets["s3_access_key"],
                "secret_key": self.secrets["s3_secret_key"],
                "secure": False,
                "region": self.s3_region,
            }
        assert self.s3_endpoint is not None
        endpoint = self.s3_endpoint.removeprefix("http://").removeprefix("https://")
        return {
            "endpoint": endpoint.rstrip("/"),
            "access_key": self.s3_access_key,
            "secret_key": self.s3_secret_key,
            "secure": self.s3_secure or self.s3_endpoint.startswith("https://"),
            "region": self.s3_region,
        }

    @property
    def s3_direct_url(self) -> str | None:
        """Where push clients send blobs themselves (see s3_client_url); None: through the API."""
        if self.s3_client_url:
            return self.s3_client_url.rstrip("/")
        if self.embedded_s3 and self.api_host in {"127.0.0.1", "localhost", "::1"}:
            return f"http://127.0.0.1:{self.embedded.s3}"
        return None

    @property
    def nats_servers(self) -> list[str]:
        if self.nats_urls is None:
            return [f"nats://127.0.0.1:{self.embedded.nats}"]
        return self.nats_urls

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'index.sqlite3').resolve()}"

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.api_host}:{self.api_port}"


# Secrets of the embedded servers, made once per data directory. The S3 keys are the MinIO
# client's; the NATS password is every client's; the JWT signing keys are the SeaweedFS server's
# own (its filer and volume servers accept only requests signed with them, see embedded.py).
SECRET_MAKERS: dict[str, Callable[[], str]] = {
    "s3_access_key": lambda: "hwrepo-" + secrets.token_hex(6),
    "s3_secret_key": lambda: secrets.token_urlsafe(30),
    "nats_password": lambda: secrets.token_urlsafe(24),
    "s3_jwt_volume_write": lambda: secrets.token_urlsafe(32),
    "s3_jwt_volume_read": lambda: secrets.token_urlsafe(32),
    "s3_jwt_filer_write": lambda: secrets.token_urlsafe(32),
    "s3_jwt_filer_read": lambda: secrets.token_urlsafe(32),
}


def private_dir(path: Path) -> Path:
    """The data directory, made if need be, readable by its owner alone: it holds the index,
    the secrets, the servers' data and logs, and the workers' caches of private projects."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def load_secrets(data_dir: Path) -> dict[str, str]:
    """The data directory's secrets.toml (0600), with any secret it lacks made and added (under
    a lock, so that processes starting together agree on them)."""
    path = data_dir / "secrets.toml"
    private_dir(data_dir)
    lock_fd = os.open(data_dir / ".secrets.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        values: dict[str, str] = {}
        if path.exists():
            with path.open("rb") as fh:
                values = {k: str(v) for k, v in tomllib.load(fh).items()}
        missing = {k: make() for k, make in SECRET_MAKERS.items() if k not in values}
        if missing:
            values.update(missing)
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.writelines(f'{k} = "{v}"\n' for k, v in values.items())
            os.replace(tmp, path)
    finally:
        os.close(lock_fd)
    return values


def load_settings(**overrides: Any) -> Settings:
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)


def default_concurrency(per_job_bytes: int = 4 * 1024**3) -> int:
    """As many jobs at once as the machine has cores, and no more than its memory holds at
    `per_job_bytes` each (a sandbox's default memory limit)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        pages = per_job_bytes
    return max(1, min(cores or 1, pages // per_job_bytes))
