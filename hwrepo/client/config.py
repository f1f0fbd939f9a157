"""Where the client keeps the server and token: `$XDG_CONFIG_HOME/hwrepo/client.toml` (else
`~/.config/hwrepo/client.toml`), readable by its owner alone. `HWREPO_SERVER` and
`HWREPO_TOKEN` override it (for CI)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

ENV_SERVER = "HWREPO_SERVER"
ENV_TOKEN = "HWREPO_TOKEN"


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hwrepo" / "client.toml"


@dataclass
class ClientConfig:
    server: str | None = None
    token: str | None = None
    source: str = "nothing"  # where they came from, for messages

    @classmethod
    def load(cls) -> ClientConfig:
        found = cls()
        path = config_path()
        if path.is_file():
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError):
                data = {}
            found = cls(data.get("server"), data.get("token"), str(path))
        if os.environ.get(ENV_SERVER):
            found.server, found.source = os.environ[ENV_SERVER], ENV_SERVER
        if os.environ.get(ENV_TOKEN):
            found.token = os.environ[ENV_TOKEN]
        return found

    def save(self) -> Path:
        path = config_path()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        text = f"server = {_quote(self.server or '')}\ntoken = {_quote(self.token or '')}\n"
        fd = os.open(path.with_suffix(".part"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(path.with_suffix(".part"), path)
        path.chmod(0o600)
        return path

    @staticmethod
    def forget() -> bool:
        path = config_path()
        if path.is_file():
            path.unlink()
            return True
        return False


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
