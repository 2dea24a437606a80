"""The deployment queue: claiming order, one deployment per job version at a time, concurrency."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from racetrackd.db import Deployment, DeploymentStatus, open_database
from racetrackd.deploy.worker import INTERRUPTED, DeploymentWorker


def queue(tmp_path: Path, *jobs: tuple[str, str]) -> list[Deployment]:
    open_database(tmp_path / "registry.sqlite3")
    deployments = []
    for index, (name, version) in enumerate(jobs):
        deployments.append(
            Deployment.create(job_name=name, job_version=version, manifest_yaml="x", create_time=1000.0 + index)
        )
    return deployments


def test_the_oldest_is_claimed_first_and_a_busy_version_waits(tmp_path: Path) -> None:
    first, same_version, other = queue(tmp_path, ("a", "1.0.0"), ("a", "1.0.0"), ("b", "1.0.0"))

    claims = [Deployment.claim_next(), Deployment.claim_next(), Deployment.claim_next()]

    assert [c.id if c else None for c in claims] == [first.id, other.id, None]
    first.finish(DeploymentStatus.DONE)
    next_claim = Deployment.claim_next()
    assert next_claim is not None and next_claim.id == same_version.id


class _RecordingDeployer:
    def __init__(self) -> None:
        self.abandoned: list[str] = []
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def run(self, deployment: Deployment) -> None:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(0.2)
        with self.lock:
            self.running -= 1
        deployment.finish(DeploymentStatus.DONE)

    def abandon(self, deployment: Deployment) -> None:
        self.abandoned.append(deployment.id)


def _drain(worker: DeploymentWorker) -> None:
    thread = threading.Thread(target=worker.run_forever)
    thread.start()
    deadline = time.monotonic() + 10
    while Deployment.select().where(Deployment.status == DeploymentStatus.IN_PROGRESS).exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker.stop()
    thread.join(timeout=5)


def test_deployments_run_one_at_a_time_by_default(tmp_path: Path) -> None:
    queue(tmp_path, ("a", "1.0.0"), ("b", "1.0.0"), ("c", "1.0.0"))
    deployer = _RecordingDeployer()

    _drain(DeploymentWorker(deployer, poll_interval=0.02))  # type: ignore[arg-type]

    assert deployer.most_at_once == 1


def test_concurrency_runs_several_at_once(tmp_path: Path) -> None:
    queue(tmp_path, ("a", "1.0.0"), ("b", "1.0.0"), ("c", "1.0.0"), ("d", "1.0.0"))
    deployer = _RecordingDeployer()

    _drain(DeploymentWorker(deployer, poll_interval=0.02, concurrency=2))  # type: ignore[arg-type]

    assert deployer.most_at_once == 2


def test_deployments_interrupted_by_a_restart_are_failed_with_a_reason(tmp_path: Path) -> None:
    (interrupted,) = queue(tmp_path, ("a", "1.0.0"))
    Deployment.claim_next()  # a previous worker took it, then died
    deployer = _RecordingDeployer()
    worker = DeploymentWorker(deployer, poll_interval=0.02)  # type: ignore[arg-type]

    worker.fail_interrupted()

    row: Any = Deployment.get_by_id(interrupted.id)
    assert row.status == DeploymentStatus.FAILED
    assert row.error == INTERRUPTED
    assert deployer.abandoned == [interrupted.id]  # what it left half-done is cleaned up


def test_a_deployment_queued_by_another_connection_is_taken_up_at_once_not_after_the_poll_interval(
    tmp_path: Path,
) -> None:
    # The HTTP worker that queues a deployment is another process (another connection): the worker
    # notices its commit within milliseconds, where it used to sleep out its poll interval.
    queue(tmp_path)
    deployer = _RecordingDeployer()
    worker = DeploymentWorker(deployer, poll_interval=60)  # type: ignore[arg-type]
    thread = threading.Thread(target=worker.run_forever)
    thread.start()
    try:
        time.sleep(0.3)  # the worker found the queue empty and waits

        def queue_from_another_connection() -> str:
            return str(Deployment.create(job_name="late", job_version="1.0.0", manifest_yaml="x").id)

        results: list[str] = []
        other = threading.Thread(target=lambda: results.append(queue_from_another_connection()))
        other.start()
        other.join()
        deadline = time.monotonic() + 20  # far below the 60 s poll interval
        while Deployment.select().where(Deployment.status == DeploymentStatus.IN_PROGRESS).exists():
            assert time.monotonic() < deadline, "the queued deployment waited for the poll interval"
            time.sleep(0.05)
    finally:
        worker.stop()
        thread.join(timeout=5)
    finished = Deployment.get_by_id(results[0])
    assert finished.status == DeploymentStatus.DONE
