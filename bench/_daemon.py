"""A private daemon for one benchmark: its own loopback port, data dir, admin token and rtd config,
started from this checkout with tests/launcher.py, and jobs made from samples/adder's code."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import requests
import yaml
from _jobs import REPO, submit

sys.path.insert(0, str(REPO))  # the repository root: the shared launcher
from tests import launcher  # after the path it is found on

SAMPLE = REPO / "samples" / "adder"


class BenchDaemon:
    """What every daemon-driving benchmark needs; each adds its own measurements in a subclass."""

    def __init__(self, *, prefix: str, instance: str, base_image: str, env: dict[str, str]) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"racetrackd-bench-{prefix}-"))
        self.jobs_dir = self.data_dir / "jobs"
        self.token = uuid.uuid4().hex
        port = launcher.free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.headers = {"X-Racetrack-Auth": self.token}
        self.env = launcher.daemon_env(
            port=port, data_dir=self.data_dir, token=self.token, instance=instance, base_image=base_image
        )
        self.env.update(
            {**env, "RTD_REMOTE": self.url, "RTD_TOKEN": self.token, "RTD_CONFIG": str(self.data_dir / "rtd.yaml")}
        )
        self.log_path = self.data_dir / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None

    # -- the daemon ---------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> float:
        """Start the daemon; returns seconds until it answers /ready (the clock starts at Popen)."""
        started = time.perf_counter()
        self.process = launcher.start(self.env, self.log_path, new_session=False)  # Ctrl-C reaches it too
        # fine steps: a restart's time to ready is what some benchmarks measure
        launcher.wait_ready(self.url, self.process, self.log_path, timeout=timeout, step=0.02)
        return time.perf_counter() - started

    def stop(self) -> None:
        launcher.stop(self.process)

    def remove_data(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- jobs -----------------------------------------------------------------------------------
    def make_job(self, name: str, **fields: Any) -> Path:
        """A copy of samples/adder named `name`, its manifest with `fields` on top."""
        job_dir = self.jobs_dir / name
        shutil.copytree(SAMPLE, job_dir)
        manifest = yaml.safe_load((job_dir / "job.yaml").read_text())
        manifest.update({"name": name, **fields})
        (job_dir / "job.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
        return job_dir

    def submit(self, job_dir: Path) -> None:
        submit(self.env, job_dir)

    def call(self, session: requests.Session, name: str, timeout: float = 10) -> bool:
        """Whether job `name` answers 40 + 2 through the gateway."""
        try:
            response = session.post(
                f"{self.url}/pub/job/{name}/latest/api/v1/perform",
                json={"a": 40, "b": 2},
                headers=self.headers,
                timeout=timeout,
            )
            return response.status_code == 200 and response.json() == 42
        except (requests.RequestException, ValueError):
            return False

    def statuses(self) -> dict[str, str]:
        """Each job's status by name ({} while the API does not answer)."""
        try:
            response = requests.get(f"{self.url}/lifecycle/api/v1/job", headers=self.headers, timeout=10)
        except requests.RequestException:
            return {}
        return {job["name"]: job["status"] for job in response.json()} if response.status_code == 200 else {}
