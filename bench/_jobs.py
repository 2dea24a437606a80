"""What the benchmarks do to jobs alike: check that one answers 42, submit one with rtd."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]


def check_answer(url: str, token: str, name: str) -> None:
    """Stop the benchmark unless job `name` (samples/adder's code) answers 40 + 2 through the gateway."""
    response = requests.post(
        f"{url}/pub/job/{name}/latest/api/v1/perform",
        json={"a": 40, "b": 2},
        headers={"X-Racetrack-Auth": token},
        timeout=10,
    )
    if response.status_code != 200 or response.json() != 42:
        raise SystemExit(f"{name} answered {response.status_code}: {response.text}")


def submit(env: dict[str, str], job_dir: Path) -> None:
    """`rtd submit -q job_dir` against the daemon `env` names; stop the benchmark if it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "cli", "submit", "-q", str(job_dir)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
        timeout=900,
    )
    if result.returncode != 0:
        raise SystemExit(f"rtd submit {job_dir} failed:\n{result.stdout}\n{result.stderr}")
