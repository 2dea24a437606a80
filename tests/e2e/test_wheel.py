"""A wheel that installs: built from this checkout, installed in a fresh venv, the daemon started from
that venv deploys a job with that venv's rtd and serves it through the gateway.

Nothing comes from the source tree: the daemon and rtd run from outside the checkout with no
PYTHONPATH, and the test checks that racetrackd, its templates and job types import from the venv.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.integration.conftest import REPO, Daemon, _clean_env, _remove_labelled, launch_daemon
from tests.wheel_build import build_wheel

pytestmark = pytest.mark.integration

ADDER = REPO / "samples" / "adder"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with racetrackd installed from its wheel (dependencies pinned by constraints.txt)."""
    workdir = tmp_path_factory.mktemp("wheel-e2e")
    wheel = build_wheel(workdir)
    venv = workdir / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-c", str(REPO / "constraints.txt"), str(wheel)],
        env=outside_env(),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"installing the wheel failed:\n{result.stdout}\n{result.stderr}"
    return venv


def outside_env() -> dict[str, str]:
    """The test environment minus anything that would import from the checkout or its .venv."""
    return {k: v for k, v in _clean_env().items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


@pytest.fixture(scope="module")
def installed_daemon(
    venv: Path, tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, base_image: str
) -> Iterator[Daemon]:
    elsewhere = tmp_path_factory.mktemp("cwd")  # not the checkout: python -m and '' on sys.path would find it
    handle = launch_daemon(
        tmp_path_factory.mktemp("racetrackd-data"),
        docker_client,
        base_image,
        unset=("PYTHONPATH", "VIRTUAL_ENV"),
        command=(str(venv / "bin" / "racetrackd"), "serve"),
        cwd=elsewhere,
    )
    try:
        yield handle
    finally:
        handle.stop()
        _remove_labelled(docker_client, handle.instance)


def test_everything_imports_from_the_venv(venv: Path, tmp_path: Path) -> None:
    code = (
        "import json, racetrackd, templates, jobtype_plugins, cli, builders; "
        "print(json.dumps([m.__file__ for m in (racetrackd, templates, jobtype_plugins, cli, builders)]))"
    )
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        env=outside_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    for module_file in json.loads(result.stdout):
        assert Path(module_file).is_relative_to(venv), module_file


def test_the_installed_daemon_has_the_built_in_job_types(installed_daemon: Daemon) -> None:
    response = installed_daemon.api("GET", "/lifecycle/api/v1/plugin/job_type/versions")

    assert response.status_code == 200, response.text
    assert {"python3", "golang", "docker-proxy", "dockerfile"} <= {v.split(":")[0] for v in response.json()}


def test_the_installed_rtd_deploys_a_job_the_gateway_serves(
    venv: Path, installed_daemon: Daemon, tmp_path: Path
) -> None:
    job_dir = tmp_path / "adder"
    shutil.copytree(ADDER, job_dir)
    env = {
        **outside_env(),
        "RTD_REMOTE": installed_daemon.url,
        "RTD_TOKEN": installed_daemon.token,
        "RTD_CONFIG": str(tmp_path / "rtd-config.yaml"),
    }

    def rtd(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(venv / "bin" / "rtd"), *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=900,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert result.returncode == 0, f"rtd {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result

    submitted = rtd("submit", str(job_dir))
    called = rtd("call", "adder", "--data", '{"a": 40, "b": 2}')
    response = installed_daemon.api("POST", "/pub/job/adder/latest/api/v1/perform", json={"a": 40, "b": 2})

    assert "adder 0.0.1 is running" in submitted.stdout
    assert called.stdout.strip() == "42"
    assert response.status_code == 200, response.text
    assert response.json() == 42
