"""The job's secret env files (`secret_build_env_file`, `secret_runtime_env_file`), read for a deploy.

They stay on the user's machine and in the request: rtd never prints their values.
Format: one `NAME=value` per line; blank lines and `#` comments skipped; an optional `export `
prefix; a value in matching single or double quotes loses them (no other unescaping).
"""

from __future__ import annotations

import re
from pathlib import Path

from jobmanifest import Manifest

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SecretFileError(Exception):
    pass


def parse_env_file(text: str, source: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not NAME.match(name):
            raise SecretFileError(f"{source}:{number}: expected NAME=value")  # the line itself may be a secret
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[name] = value
    return values


def read_secret_vars(manifest: Manifest, directory: Path) -> tuple[dict[str, dict[str, str]] | None, list[str]]:
    """`secret_vars` for the deploy request, and warnings. None when the manifest names a file that is
    not here: the daemon then reuses the secrets of this version's last deployment."""
    found: dict[str, dict[str, str]] = {"build_env": {}, "runtime_env": {}}
    missing = []
    for field, part, name in (
        ("secret_build_env_file", "build_env", manifest.secret_build_env_file),
        ("secret_runtime_env_file", "runtime_env", manifest.secret_runtime_env_file),
    ):
        if not name:
            continue
        path = directory / name
        if not path.is_file():
            missing.append(f"{field}: {path} not found")
            continue
        found[part] = parse_env_file(path.read_text(), f"{field} {path}")
    if missing:
        return None, [*missing, "sending no secrets: the daemon reuses those of this version's last deployment"]
    return found, []
