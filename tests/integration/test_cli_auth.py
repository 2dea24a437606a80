"""rtd's auth commands against a real daemon: log in and out, tokens, users, ESCs, grants.

Runs the real CLI in a subprocess, with its own config file, answering password prompts on stdin.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from cli.errors import EXIT_AUTH
from tests.integration.conftest import Daemon, run_rtd

PASSWORD = "correct horse battery"


def rtd(
    daemon: Daemon, config: Path, *args: str, stdin: str = "", token: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {"RTD_REMOTE": daemon.url, "RTD_CONFIG": str(config)}
    if token is not None:
        env["RTD_TOKEN"] = token
    return run_rtd(env, *args, stdin=stdin)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return tmp_path / "rtd.yaml"


@pytest.fixture
def username(daemon: Daemon, config: Path) -> str:
    """A user made by the admin through rtd, with a password."""
    name = f"alice-{uuid.uuid4().hex[:6]}"
    ok(rtd(daemon, config, "user", "add", name, stdin=f"{PASSWORD}\n{PASSWORD}\n", token=daemon.token))
    return name


def test_login_with_username_and_password_saves_a_token_that_works_and_logout_revokes_it(
    daemon: Daemon, config: Path, username: str
) -> None:
    out = ok(rtd(daemon, config, "login", "--username", username, stdin=f"{PASSWORD}\n"))

    assert f"as {username}" in out
    saved = yaml.safe_load(config.read_text())["tokens"][daemon.url]
    assert config.stat().st_mode & 0o077 == 0
    assert ok(rtd(daemon, config, "token")).strip() == saved
    assert isinstance(json.loads(ok(rtd(daemon, config, "list", "--json"))), list)  # the saved token is used

    assert "logged out" in ok(rtd(daemon, config, "logout"))
    assert daemon.url not in (yaml.safe_load(config.read_text())["tokens"] or {})
    gone = requests.get(f"{daemon.url}/lifecycle/api/v1/job", headers={"X-Racetrack-Auth": saved}, timeout=10)
    assert gone.status_code == 401


def test_a_wrong_password_fails_with_one_clear_line(daemon: Daemon, config: Path, username: str) -> None:
    result = rtd(daemon, config, "login", "--username", username, stdin="not the password\n")

    assert result.returncode == EXIT_AUTH
    assert "invalid username or password" in result.stderr and "Traceback" not in result.stderr


def test_login_with_a_token_checks_it_first(daemon: Daemon, config: Path) -> None:
    bad = rtd(daemon, config, "login", "rtd_not-a-real-token")
    assert bad.returncode == EXIT_AUTH and "invalid" in bad.stderr
    assert not config.exists() or daemon.url not in (yaml.safe_load(config.read_text()).get("tokens") or {})

    out = ok(rtd(daemon, config, "login", "--remote", daemon.url, daemon.token))
    assert "as admin" in out


def test_tokens_are_made_listed_and_revoked_and_never_listed_in_full(
    daemon: Daemon, config: Path, username: str
) -> None:
    made = rtd(
        daemon,
        config,
        "token",
        "create",
        "--subject",
        f"user:{username}",
        "--expires",
        "30d",
        "--description",
        "ci",
        token=daemon.token,
    )
    new_token = ok(made).strip()
    assert new_token.startswith("rtd_") and "expires" in made.stderr

    listed = ok(rtd(daemon, config, "token", "list", "--subject", f"user:{username}", token=daemon.token))
    assert "ci" in listed and new_token not in listed
    token_id = next(line.split()[0] for line in listed.splitlines() if line.endswith("ci"))
    assert (
        requests.get(
            f"{daemon.url}/lifecycle/api/v1/job", headers={"X-Racetrack-Auth": new_token}, timeout=10
        ).status_code
        == 200
    )

    assert "revoked" in ok(rtd(daemon, config, "token", "revoke", token_id, token=daemon.token))
    assert (
        requests.get(
            f"{daemon.url}/lifecycle/api/v1/job", headers={"X-Racetrack-Auth": new_token}, timeout=10
        ).status_code
        == 401
    )


def test_an_esc_with_a_grant_may_call_only_what_it_was_granted(daemon: Daemon, config: Path) -> None:
    esc_id = f"billing-{uuid.uuid4().hex[:6]}"
    ok(rtd(daemon, config, "esc", "add", "Billing", "--id", esc_id, token=daemon.token))
    esc_token = ok(rtd(daemon, config, "token", "create", "--subject", f"esc:{esc_id}", token=daemon.token)).strip()

    refused = rtd(daemon, config, "list", "--json", token=esc_token)
    assert refused.returncode == 0 and refused.stdout.strip() == "[]"  # sees no job: no read_job

    granted = ok(
        rtd(daemon, config, "grant", "add", f"esc:{esc_id}", "read_job", "--job", "nothing-here", token=daemon.token)
    )
    assert f"read_job on nothing-here to esc:{esc_id}" in granted
    grants = ok(rtd(daemon, config, "grant", "list", "--subject", f"esc:{esc_id}", token=daemon.token))
    assert "nothing-here" in grants

    not_admin = rtd(daemon, config, "user", "list", token=esc_token)
    assert not_admin.returncode == EXIT_AUTH and "full_access" in not_admin.stderr

    ok(rtd(daemon, config, "esc", "remove", esc_id, token=daemon.token))
    assert (
        requests.get(
            f"{daemon.url}/lifecycle/api/v1/job", headers={"X-Racetrack-Auth": esc_token}, timeout=10
        ).status_code
        == 401
    )


def test_an_unknown_scope_is_refused_by_rtd_before_any_request(daemon: Daemon, config: Path) -> None:
    result = rtd(daemon, config, "grant", "add", "user:admin", "call_everything", token=daemon.token)

    assert result.returncode == 2 and "call_everything" in result.stderr
