"""Adversarial tests of the control plane's limits and resilience: private data dir, disk full,
request and archive sizes, concurrent deployments, build log growth."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from builders.context import assemble_docker_context
from racetrackd import daemon
from racetrackd.db import open_database

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
