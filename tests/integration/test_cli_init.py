"""`rtd init` end to end: a scaffold submitted unchanged to the real daemon answers its README's call.

The golang case needs the golang base image (scripts/setup-host.sh --with-golang) and a Go build
of one to two minutes; the rust case the rust base image (--with-rust) and a cargo build.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Daemon
from tests.launcher import clean_env

pytestmark = pytest.mark.integration

EXPECTED = {"python3": "Hello, you!", "dockerfile": {"hello": "you"}, "golang": "Hello, you!", "rust": "Hello, you!"}


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


def test_the_readme_first_job_walkthrough_works_as_written(daemon: Daemon, tmp_path: Path) -> None:
    """README.md, "Your first job": init, validate, submit, call, change and --force, rollback, delete,
    each run from the job's directory as the README shows."""
    env = {
        **clean_env(),
        "RTD_REMOTE": daemon.url,
        "RTD_TOKEN": daemon.token,
        "RTD_CONFIG": str(daemon.data_dir / "rtd-config.yaml"),
        "PYTHONPATH": str(REPO),
    }

    def rtd(*args: str, cwd: Path) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "cli", *args],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=900,
            check=False,
        )
        return ok(done)

    readme = (REPO / "README.md").read_text()
    walkthrough = readme[readme.index("## Your first job") : readme.index("## The dashboard")]
    for command in ("rtd init python3 hello", "rtd validate", "rtd submit --force", "rtd rollback hello"):
        assert command in walkthrough
    rtd("init", "python3", "hello", cwd=tmp_path)
    job = tmp_path / "hello"
    call = ("call", "hello", "--data", '{"name": "you"}')
    try:
        assert "name: hello" in rtd("validate", cwd=job)
        rtd("submit", cwd=job)
        assert json.loads(rtd(*call, cwd=job)) == "Hello, you!"

        entrypoint = job / "entrypoint.py"
        entrypoint.write_text(entrypoint.read_text().replace('f"Hello, {name}!"', 'f"Hi, {name}!"'))
        rtd("submit", "--force", cwd=job)
        assert json.loads(rtd(*call, cwd=job)) == "Hi, you!"

        assert "hello 0.0.1 runs the release of deployment" in rtd("rollback", "hello", cwd=job)
        assert json.loads(rtd(*call, cwd=job)) == "Hello, you!"
    finally:
        rtd("delete", "hello", "--version", "0.0.1", cwd=job)
