"""`rtd init` end to end: a scaffold submitted unchanged to the real daemon answers its README's call.

The golang case needs the golang base image (scripts/setup-host.sh --with-golang) and a Go build
of one to two minutes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import Daemon

pytestmark = pytest.mark.integration

EXPECTED = {"python3": "Hello, you!", "dockerfile": {"hello": "you"}, "golang": "Hello, you!"}


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_a_scaffold_deploys_and_answers_as_is(daemon: Daemon, tmp_path: Path, kind: str) -> None:
    name = f"init-{kind}"
    job = tmp_path / name
    ok(daemon.rtd("init", kind, name, "--directory", str(job)))
    try:
        ok(daemon.rtd("submit", str(job)))

        answer = ok(daemon.rtd("call", name, "--data", '{"name": "you"}'))

        assert json.loads(answer) == EXPECTED[kind]
    finally:
        ok(daemon.rtd("delete", name, "--version", "0.0.1"))
