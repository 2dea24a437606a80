"""Redeploying someone else's job, end to end on the real daemon and engine.

alice (a plain user) deploys a job with a runtime secret. bob (a new plain user) force-redeploys
the same name and version with his own code, which shows its environment: refused without a
grant; with an admin's deploy_job grant it deploys, but his code gets neither alice's secret nor
the family's AUTH_TOKEN, while alice redeploying her own job keeps both.
"""

from __future__ import annotations

import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from cli.packing import pack
from tests.integration.conftest import Daemon

pytestmark = [pytest.mark.integration, pytest.mark.security]

API = "/lifecycle/api/v1"
ENV_PROBE = """import os


class EnvProbe:
    def perform(self):
        return {"secret": os.environ.get("RUNTIME_SECRET", ""), "auth_token": os.environ.get("AUTH_TOKEN", "")}
"""


def write_job(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True)
    (directory / "job.yaml").write_text(
        f"name: {name}\nowner_email: tests@example.com\nversion: 0.0.1\njobtype: python3:latest\n"
        "jobtype_extra:\n  entrypoint_path: entrypoint.py\n"
    )
    (directory / "entrypoint.py").write_text(ENV_PROBE)
    return directory


def new_user(daemon: Daemon, prefix: str) -> tuple[str, str]:
    username = f"{prefix}-{uuid.uuid4().hex[:6]}"
    assert daemon.api("POST", f"{API}/users", json={"username": username}).status_code == 201
    token = daemon.api("POST", f"{API}/users/{username}/tokens", json={}).json()["token"]
    return username, token


def deploy(daemon: Daemon, token: str, job_dir: Path, *, force: bool, secret: str | None = None) -> requests.Response:
    body: dict[str, Any] = {
        "manifest": yaml.safe_load((job_dir / "job.yaml").read_text()),
        "build_context": pack(job_dir),
        "force": force,
    }
    if secret is not None:
        body["secret_vars"] = {"build_env": {}, "runtime_env": {"RUNTIME_SECRET": secret}}
    return requests.post(f"{daemon.url}{API}/deploy", json=body, headers={"X-Racetrack-Auth": token}, timeout=60)


def wait_done(daemon: Daemon, response: requests.Response, timeout: float = 300) -> None:
    assert response.status_code == 201, response.text
    deployment_id = response.json()["id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = daemon.api("GET", f"{API}/deploy/{deployment_id}").json()
        if status["status"] != "in_progress":
            assert status["status"] == "done", status.get("error")
            return
        time.sleep(1)
    raise AssertionError(f"deployment {deployment_id} did not finish in {timeout} s")


def probe(daemon: Daemon, name: str) -> dict[str, str]:
    """What the running job version sees in its environment (as the admin calls it)."""
    deadline = time.monotonic() + 30
    while True:
        response = daemon.api("POST", f"/pub/job/{name}/0.0.1/api/v1/perform", json={})
        if response.status_code == 200 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            return dict(response.json())
        time.sleep(0.3)


def test_a_redeploy_by_another_user_needs_a_grant_and_gets_neither_secrets_nor_auth_token(
    daemon: Daemon, tmp_path: Path
) -> None:
    name = f"env-probe-{uuid.uuid4().hex[:6]}"
    secret = secrets.token_hex(16)
    alice, alice_token = new_user(daemon, "alice")
    bob, bob_token = new_user(daemon, "bob")
    alice_job = write_job(tmp_path / "alice", name)
    bob_job = write_job(tmp_path / "bob", name)  # the same code here; what matters is whose upload it is
    wait_done(daemon, deploy(daemon, alice_token, alice_job, force=False, secret=secret))
    as_alice = probe(daemon, name)
    assert as_alice["secret"] == secret and as_alice["auth_token"].startswith("rtd_")

    refused = deploy(daemon, bob_token, bob_job, force=True)

    assert refused.status_code == 403, refused.text
    assert refused.json()["type"] == "forbidden"
    assert "it lacks the deploy_job scope" in refused.json()["error"]
    assert f"rtd grant add user:{bob} deploy_job --job {name}" in refused.json()["hint"]

    granted = daemon.api(
        "POST", f"{API}/auth/grants", json={"subject": f"user:{bob}", "scope": "deploy_job", "job_name": name}
    )
    assert granted.status_code == 201, granted.text
    wait_done(daemon, deploy(daemon, bob_token, bob_job, force=True))
    as_bob = probe(daemon, name)

    assert as_bob == {"secret": "", "auth_token": ""}

    wait_done(daemon, deploy(daemon, alice_token, alice_job, force=True))  # the owner, sending no secrets
    again = probe(daemon, name)

    assert again["secret"] == secret and again["auth_token"] == as_alice["auth_token"]
