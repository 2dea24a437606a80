"""scripts/swarm-lab.sh without Docker: the settings it prints for racetrackd, and the refusals that
come before it makes anything (tests/e2e/test_swarm_cluster.py runs it for real)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "swarm-lab.sh"


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_LAB_")}
    return subprocess.run(
        [str(SCRIPT), *args], env={**clean, **env}, capture_output=True, text=True, timeout=30, check=False
    )


def test_env_points_racetrackd_at_the_managers_socket_and_the_lab_registry(tmp_path: Path) -> None:
    result = run("env", SWARM_LAB_NAME="lab2", SWARM_LAB_SUBNET="10.77.3.0/24", SWARM_LAB_DIR=str(tmp_path))

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"export DOCKER_HOST=unix://{tmp_path}/manager/docker.sock",
        "export RACETRACK_REGISTRY=10.77.3.5:5000",
        "export RACETRACK_REGISTRY_USERNAME=lab",
        f"export RACETRACK_REGISTRY_PASSWORD_FILE={tmp_path}/registry/registry-password",
        "export RACETRACK_ORCHESTRATOR=swarm",
    ]


def test_a_subnet_that_is_not_a_24_is_refused_before_anything_is_made() -> None:
    result = run("up", SWARM_LAB_SUBNET="10.0.0.0/16")

    assert result.returncode == 2
    assert "SWARM_LAB_SUBNET must be a /24 such as 172.30.99.0/24 (got 10.0.0.0/16)" in result.stderr


def test_an_unknown_command_prints_the_usage() -> None:
    result = run("start")

    assert result.returncode == 2
    assert "usage:" in result.stderr and "up|down|status|env|image" in result.stderr
