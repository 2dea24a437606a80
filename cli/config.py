"""Where rtd finds the daemon and the token: flags, then RTD_REMOTE / RTD_TOKEN, then the config file."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

DEFAULT_REMOTE = "http://127.0.0.1:7102"


def config_path(environ: Mapping[str, str]) -> Path:
    if environ.get("RTD_CONFIG"):
        return Path(environ["RTD_CONFIG"]).expanduser()
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "rtd" / "config.yaml"


def normalize_remote(url: str) -> str:
    """Accept `host:port`, a full URL, or Racetrack's `.../lifecycle` form; return the daemon's base URL."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    if url.endswith("/lifecycle"):
        url = url[: -len("/lifecycle")]
    return url


@dataclasses.dataclass
class ClientConfig:
    path: Path
    remote: str | None = None
    tokens: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> ClientConfig:
        environ = os.environ if environ is None else environ
        path = config_path(environ)
        data: dict[str, Any] = {}
        if path.is_file():
            data = yaml.safe_load(path.read_text()) or {}
        return cls(path=path, remote=data.get("remote"), tokens=dict(data.get("tokens") or {}))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(mode=0o600, exist_ok=True)
        self.path.chmod(0o600)  # it holds tokens
        self.path.write_text(yaml.safe_dump({"remote": self.remote, "tokens": self.tokens}, sort_keys=True))

    def resolve(self, remote: str | None, token: str | None, environ: Mapping[str, str] | None = None
                ) -> tuple[str, str | None]:
        """The remote and token to use, by precedence: flag, environment, config file, default."""
        environ = os.environ if environ is None else environ
        chosen = normalize_remote(remote or environ.get("RTD_REMOTE") or self.remote or DEFAULT_REMOTE)
        return chosen, token or environ.get("RTD_TOKEN") or self.tokens.get(chosen)
