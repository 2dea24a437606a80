"""Adversarial tests of the control plane's limits and resilience: private data dir, disk full,
request and archive sizes, concurrent deployments, build log growth."""

from __future__ import annotations

import errno
import io
import os
import stat
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import peewee
import pytest
from flask import Flask

from builders.context import assemble_docker_context
from racetrackd import daemon, jobsecrets
from racetrackd import deployer as deployer_module
from racetrackd.db import Deployment, DeploymentStatus, open_database
from racetrackd.deployer import Deployer
from racetrackd.settings import Settings
from racetrackd.worker import DeploymentWorker
from tests.unit.conftest import ADMIN_TOKEN
from tests.unit.fakes import build_context, sample_manifest

pytestmark = pytest.mark.security


@pytest.fixture
def restored_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- item 13: the data dir is private to the daemon's user ---------------------------------------

def test_registry_log_and_uploads_are_private_to_the_daemon_user(tmp_path: Path, restored_umask: None) -> None:
    os.umask(0o022)  # what a login shell usually gives the daemon
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    old_log = data_dir / daemon.LOG_FILE
    old_log.write_text("written by an earlier version\n")
    old_log.chmod(0o644)
    (data_dir / "uploads").mkdir(mode=0o755)

    daemon.restrict_data_dir(data_dir)
    db = open_database(data_dir / "registry.sqlite3")
    db.execute_sql("CREATE TABLE IF NOT EXISTS probe (x)")  # makes the -wal and -shm files
    (data_dir / "workspaces" / "d1").mkdir(parents=True)
    (data_dir / "uploads" / "d1.tar.gz").write_bytes(b"x")

    try:
        assert _mode(data_dir) == 0o700
        for name in ("registry.sqlite3", "registry.sqlite3-wal", "registry.sqlite3-shm", daemon.LOG_FILE,
                     "uploads/d1.tar.gz"):
            assert _mode(data_dir / name) == 0o600, name
        for name in ("uploads", "workspaces", "workspaces/d1"):
            assert _mode(data_dir / name) == 0o700, name
    finally:
        db.close()


def test_private_workspaces_still_give_images_readable_files(tmp_path: Path, restored_umask: None) -> None:
    """Under umask 077 the job type's files are owner-only; in the image (another user) they must be readable."""
    os.umask(0o077)
    job_dir, jobtype_dir = tmp_path / "job", tmp_path / "jobtype"
    job_dir.mkdir()
    jobtype_dir.mkdir()
    (jobtype_dir / "wrapper.py").write_text("print('hi')\n")
    (jobtype_dir / "run.sh").write_text("#!/bin/sh\n")
    (jobtype_dir / "run.sh").chmod(0o700)

    with assemble_docker_context("FROM scratch\n", job_dir, jobtype_dir, None) as context, \
            tarfile.open(fileobj=io.BytesIO(context.read())) as tar:
        modes = {member.name: stat.S_IMODE(member.mode) for member in tar.getmembers()}

    assert modes["jobtype"] == 0o755
    assert modes["jobtype/wrapper.py"] == 0o644
    assert modes["jobtype/run.sh"] == 0o755


# --- item 14: a full disk fails the deployment cleanly; the worker keeps serving -----------------

class _FlakyStatusWrites:
    """Deployment.save that fails (as a full disk does) while `failures` lasts, then works again."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.attempts = 0
        original = Deployment.save

        def save(deployment: Deployment, *args: Any, **kwargs: Any) -> Any:
            if deployment.job_name == "full" and self.failures > 0:
                self.failures -= 1
                self.attempts += 1
                raise self.error
            return original(deployment, *args, **kwargs)

        monkeypatch.setattr(Deployment, "save", save)


def _deployer(tmp_path: Path) -> Deployer:
    settings = Settings.from_env({"RACETRACK_DATA_DIR": str(tmp_path / "data")})
    deployer = Deployer(settings, None, None, None, None, SimpleNamespace(vault=None))  # type: ignore[arg-type]

    def deploy(deployment: Deployment, workspace: Path, secrets: object) -> None:
        deployment.set_phase("building image")  # a status write: the one a full disk refuses
        deployment.finish(DeploymentStatus.DONE)

    deployer._deploy = deploy  # type: ignore[method-assign]
    return deployer


def _run_worker_until_settled(worker: DeploymentWorker, seconds: float = 20) -> threading.Thread:
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    deadline = time.monotonic() + seconds
    while Deployment.select().where(Deployment.status == DeploymentStatus.IN_PROGRESS).exists():
        assert time.monotonic() < deadline, "a deployment stayed in progress"
        time.sleep(0.05)
    return thread


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   peewee.OperationalError("database or disk is full")])
def test_disk_full_at_a_status_write_fails_the_deployment_and_the_worker_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    monkeypatch.setattr(deployer_module, "STATUS_WRITE_DELAYS", (0.01, 0.01, 0.01), raising=False)
    open_database(tmp_path / "registry.sqlite3")
    full = Deployment.create(job_name="full", job_version="1.0.0", manifest_yaml="x", create_time=1.0)
    nxt = Deployment.create(job_name="next", job_version="1.0.0", manifest_yaml="x", create_time=2.0)
    writes = _FlakyStatusWrites(monkeypatch, failures=3, error=error)  # the phase, the failure, one retry
    worker = DeploymentWorker(_deployer(tmp_path), poll_interval=0.02)

    thread = _run_worker_until_settled(worker)

    assert thread.is_alive()
    worker.stop()
    thread.join(timeout=5)
    failed, done = Deployment.get_by_id(full.id), Deployment.get_by_id(nxt.id)
    assert writes.attempts == 3
    assert failed.status == DeploymentStatus.FAILED
    assert "disk" in failed.error and "full" in failed.error and "free some space" in failed.error
    assert done.status == DeploymentStatus.DONE


def test_a_failure_the_registry_cannot_take_for_long_is_recorded_once_it_can(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deployer_module, "STATUS_WRITE_DELAYS", (0.01,), raising=False)
    open_database(tmp_path / "registry.sqlite3")
    full = Deployment.create(job_name="full", job_version="1.0.0", manifest_yaml="x", create_time=1.0)
    nxt = Deployment.create(job_name="next", job_version="1.0.0", manifest_yaml="x", create_time=2.0)
    _FlakyStatusWrites(monkeypatch, failures=12, error=peewee.OperationalError("database or disk is full"))
    worker = DeploymentWorker(_deployer(tmp_path), poll_interval=0.02)

    thread = _run_worker_until_settled(worker)

    assert thread.is_alive()
    worker.stop()
    thread.join(timeout=5)
    assert Deployment.get_by_id(full.id).status == DeploymentStatus.FAILED
    assert "disk" in Deployment.get_by_id(full.id).error
    assert Deployment.get_by_id(nxt.id).status == DeploymentStatus.DONE


# --- item 12: one deployment per job version, however many ask at once ---------------------------

API = "/lifecycle/api/v1"


def _deploy_at_once(app: Flask, bodies: list[dict[str, Any]]) -> list[Any]:
    """POST /deploy with each body from its own thread, all released together."""
    barrier = threading.Barrier(len(bodies))
    responses: list[Any] = [None] * len(bodies)

    def post(index: int) -> None:
        client = app.test_client()
        client.environ_base["HTTP_X_RACETRACK_AUTH"] = ADMIN_TOKEN
        barrier.wait()
        responses[index] = client.post(f"{API}/deploy", json=bodies[index])

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return responses


@pytest.fixture
def slow_sealing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Widen the window between a request's checks and its insert, as a large upload does."""
    original = jobsecrets.for_deployment

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)
        return original(*args, **kwargs)

    monkeypatch.setattr(jobsecrets, "for_deployment", slow)


@pytest.mark.parametrize("force", [False, True])
def test_concurrent_deploys_of_one_new_version_queue_exactly_one(app: Flask, slow_sealing: None,
                                                                 force: bool) -> None:
    body = {"manifest": sample_manifest(name="racer", version="1.0.0"), "build_context": build_context(),
            "force": force}

    responses = _deploy_at_once(app, [body] * 5)

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201, 409, 409, 409, 409]
    for response in responses:
        if response.status_code == 409:
            assert "racer 1.0.0" in response.get_json()["error"]
    assert Deployment.select().where(Deployment.job_name == "racer").count() == 1
    uploads = list((app.extensions["racetrackd"].settings.data_dir / "uploads").iterdir())
    assert len(uploads) == 1  # the losers' uploads are not left behind
