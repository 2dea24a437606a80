"""Adversarial tests through the real daemon: what users send that reaches a build.

The unit suite (tests/unit/test_security_build.py) covers each case in-process; these show the
same through `rtd submit`, the worker and the real engine, where only that proves the point.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Daemon, _remove_labelled, launch_daemon
from tests.integration.git_servers import GitServer, git_daemon  # noqa: F401 (fixture)
from tests.integration.test_image_builder import ADDER_CODE, deploy_api, manifest, wait_deployment

pytestmark = [pytest.mark.integration, pytest.mark.security]

GLOBALS = "cycler.__init__.__globals__.os"


def test_a_dockerfile_template_injection_fails_the_deployment_and_runs_nothing_in_the_daemon(
    daemon: Daemon, tmp_path: Path
) -> None:
    job = tmp_path / "inject"
    job.mkdir()
    (job / "job.yaml").write_text(
        "name: inject\nowner_email: mallory@example.com\nversion: 0.0.1\njobtype: dockerfile:latest\n"
    )
    # The reported payload: printed the daemon's uid and pid, and listed its data directory.
    (job / "Dockerfile").write_text(
        "FROM {{ base_image }}\n"
        f'RUN echo "uid={{{{ {GLOBALS}.getuid() }}}} pid={{{{ {GLOBALS}.getpid() }}}}"\n'
        f'RUN echo "{{{{ {GLOBALS}.listdir({GLOBALS}.environ.RACETRACK_DATA_DIR) }}}}"\n'
    )

    result = daemon.rtd("submit", "--force", str(job))

    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "jobtype_extra.dockerfile_path: Dockerfile uses what a job's Dockerfile may not" in output
    listed: list[dict[str, Any]] = json.loads(daemon.rtd("deployments", "inject", "--json", check=True).stdout)
    record = json.dumps(listed[0])
    assert listed[0]["status"] == "failed"
    assert "jobtype_extra.dockerfile_path" in (listed[0].get("error") or "")
    for seen in (output, record):
        assert "secret-key" not in seen and "admin-token" not in seen and "registry.sqlite3" not in seen
        assert "uid=0" not in seen and f"pid={os.getpid()}" not in seen
    assert not [
        image
        for image in daemon.docker.images.list(filters={"label": f"racetrackd.instance={daemon.instance}"})
        if any("inject" in tag for tag in image.tags)
    ]


def test_by_default_the_daemon_refuses_to_clone_from_a_loopback_remote(
    tmp_path: Path,
    daemon: Daemon,
    git_daemon: GitServer,  # noqa: F811 (the fixture imported above)
) -> None:
    # The shared integration daemon allows private remotes (its git servers are on loopback); this
    # one keeps the default. The repository is real and reachable: only the policy refuses it.
    git_daemon.create_repo("private-calc", {"entrypoint.py": ADDER_CODE})
    remote = git_daemon.remote("private-calc")
    strict = launch_daemon(
        tmp_path / "data",
        daemon.docker,
        daemon.env["RACETRACK_PYTHON_BASE_IMAGE"],
        unset=("RACETRACK_GIT_ALLOW_PRIVATE_REMOTES",),
    )
    try:
        assert "RACETRACK_GIT_ALLOW_PRIVATE_REMOTES" not in strict.env
        done = wait_deployment(
            strict, deploy_api(strict, manifest("private-remote", git={"remote": remote})), timeout=120
        )
    finally:
        strict.stop()
        _remove_labelled(daemon.docker, strict.instance)

    assert done["status"] == "failed"
    assert done["error"].startswith("git.remote: 127.0.0.1 is 127.0.0.1, a loopback, private or link-local address")
    assert not done.get("git_commit")  # nothing was fetched
