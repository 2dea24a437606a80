"""Where rtd finds the daemon and the token: flags, then RTD_REMOTE / RTD_TOKEN, then the config file.

The config file keeps named remotes (`rtd remote add prod https://...`), the current remote (a
name or a URL), and one token per remote URL, as Racetrack's `user_auths` does. It holds tokens,
so it is kept at mode 0600.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

DEFAULT_REMOTE = "http://127.0.0.1:7102"
REMOTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")  # no '.', ':' or '/': never mistaken for a host


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
    remotes: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> ClientConfig:
        environ = os.environ if environ is None else environ
        path = config_path(environ)
        data: dict[str, Any] = {}
        if path.is_file():
            data = yaml.safe_load(path.read_text()) or {}
        return cls(
            path=path,
            remote=data.get("remote"),
            tokens=dict(data.get("tokens") or {}),
            remotes=dict(data.get("remotes") or {}),
        )

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(mode=0o600, exist_ok=True)
        self.path.chmod(0o600)  # it holds tokens
        self.path.write_text(
            yaml.safe_dump({"remote": self.remote, "remotes": self.remotes, "tokens": self.tokens}, sort_keys=True)
        )

    def chosen(self, remote: str | None, environ: Mapping[str, str] | None = None) -> str:
        """The remote as the user spelled it (a name or a URL), by precedence: flag, environment, file, default."""
        environ = os.environ if environ is None else environ
        return (remote or environ.get("RTD_REMOTE") or self.remote or DEFAULT_REMOTE).strip()

    def url_of(self, remote: str) -> str:
        """A named remote's URL, or the URL itself, normalized."""
        return normalize_remote(self.remotes.get(remote, remote))

    def name_of(self, url: str) -> str | None:
        return next(
            (name for name, named_url in sorted(self.remotes.items()) if normalize_remote(named_url) == url), None
        )

    def resolve(
        self, remote: str | None, token: str | None, environ: Mapping[str, str] | None = None
    ) -> tuple[str, str | None]:
        """The remote's URL and the token to use, by precedence: flag, environment, config file, default."""
        environ = os.environ if environ is None else environ
        url = self.url_of(self.chosen(remote, environ))
        return url, token or environ.get("RTD_TOKEN") or self.tokens.get(url)

    def add_remote(self, name: str, url: str) -> str:
        """Name a remote; returns its normalized URL."""
        if not REMOTE_NAME.match(name):
            raise ValueError(f"remote name {name!r}: use letters, digits, '-' and '_' (up to 63, no dots)")
        self.remotes[name] = normalize_remote(url)
        return self.remotes[name]
