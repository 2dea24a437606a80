"""Adversarial tests of the control plane's limits and resilience: private data dir, disk full,
request and archive sizes, concurrent deployments, build log growth."""

from __future__ import annotations

import asyncio
import errno
import io
import json
import os
import stat
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import peewee
import pytest
from flask import Flask
from flask.testing import FlaskClient

from builders import context as context_module
from builders.context import ContextLimits, archive_as_tar_gz, assemble_docker_context, unpack_build_context
from racetrackd import daemon
from racetrackd.asgi import create_asgi_app
from racetrackd.db import Deployment, DeploymentStatus, Job, JobStatus, open_database
from racetrackd.deploy import deployer as deployer_module
from racetrackd.deploy import jobsecrets
from racetrackd.deploy.deployer import Deployer
from racetrackd.deploy.requests import follow_build_logs
from racetrackd.deploy.worker import DeploymentWorker
from racetrackd.errors import TooManyStreams, ValidationError
from racetrackd.settings import Settings
from racetrackd.streams import ClientGone, StreamLimiter
from tests.unit.conftest import ADMIN_TOKEN
from tests.unit.fakes import FakeRuntime, build_context, sample_manifest

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
        for name in (
            "registry.sqlite3",
            "registry.sqlite3-wal",
            "registry.sqlite3-shm",
            daemon.LOG_FILE,
            "uploads/d1.tar.gz",
        ):
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

    with (
        assemble_docker_context("FROM scratch\n", job_dir, jobtype_dir, None) as context,
        tarfile.open(fileobj=io.BytesIO(context.read())) as tar,
    ):
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


@pytest.mark.parametrize(
    "error", [OSError(errno.ENOSPC, "No space left on device"), peewee.OperationalError("database or disk is full")]
)
def test_disk_full_at_a_status_write_fails_the_deployment_and_the_worker_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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
def test_concurrent_deploys_of_one_new_version_queue_exactly_one(app: Flask, slow_sealing: None, force: bool) -> None:
    body = {
        "manifest": sample_manifest(name="racer", version="1.0.0"),
        "build_context": build_context(),
        "force": force,
    }

    responses = _deploy_at_once(app, [body] * 5)

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201, 409, 409, 409, 409]
    for response in responses:
        if response.status_code == 409:
            assert "racer 1.0.0" in response.get_json()["error"]
    assert Deployment.select().where(Deployment.job_name == "racer").count() == 1
    uploads = list((app.extensions["racetrackd"].settings.data_dir / "uploads").iterdir())
    assert len(uploads) == 1  # the losers' uploads are not left behind


# --- item 12: build logs are capped (head + tail) and kept out of the deployment table -----------


def _registry_bytes(data_dir: Path) -> int:
    return sum(path.stat().st_size for path in data_dir.glob("registry.sqlite3*"))


def test_20_mb_of_build_output_keeps_the_registry_small_and_the_log_readable(make_app: Callable[..., Flask]) -> None:
    app = make_app(build_log_max_size="256Ki")
    client = app.test_client()
    client.environ_base["HTTP_X_RACETRACK_AUTH"] = ADMIN_TOKEN
    data_dir = app.extensions["racetrackd"].settings.data_dir
    cap = int(app.extensions["racetrackd"].settings.build_log_max_size)
    deployment = Deployment.create(job_name="loud", job_version="1.0.0", manifest_yaml="x")
    before = _registry_bytes(data_dir)
    polled, offset = [], 0
    line_no = 0
    for _ in range(40):  # 40 half-second flushes of ~500 KB each: 20 MB in all
        chunk = "".join(f"step {line_no + i:07d} {'x' * 40}\n" for i in range(10_000))
        line_no += 10_000
        deployment.append_logs(chunk, cap)
        answer = client.get(f"{API}/deploy/{deployment.id}/build-logs?offset={offset}").get_json()
        polled.append(answer["logs"])
        offset = answer["offset"]

    grown = _registry_bytes(data_dir) - before
    whole = client.get(f"{API}/deploy/{deployment.id}/build-logs").get_json()["logs"]
    # Before: each flush rewrote the whole log in the deployment row (20 MB of output: +24 MB registry,
    # +100 MB WAL). Now a flush adds one chunk and drops old ones; what remains is SQLite's WAL high-water
    # mark (its 1000-page autocheckpoint) and free pages, whatever the output.
    assert grown < 8 * 1024**2, f"registry and WAL grew {grown} bytes for a {cap}-character log"
    assert len(whole) <= cap + 200
    assert whole.startswith("step 0000000 ")
    assert whole.endswith(f"step {line_no - 1:07d} {'x' * 40}\n")
    kept = whole.count("\n") - 1
    assert f"… {line_no - kept} lines cut" in whole
    assert offset == line_no * len("step 0000000 " + "x" * 40 + "\n")  # offsets count everything written
    assert "".join(polled).startswith("step 0000000 ")
    tail = client.get(f"{API}/job/loud/1.0.0/build-logs?tail=2").get_json()["logs"]
    assert tail == f"step {line_no - 2:07d} {'x' * 40}\nstep {line_no - 1:07d} {'x' * 40}\n"
    row = Deployment.get_by_id(deployment.id)
    assert row.build_logs == ""  # the hot table holds none of it


def test_a_short_build_log_is_kept_whole(app: Flask, client: FlaskClient) -> None:
    deployment = Deployment.create(job_name="quiet", job_version="1.0.0", manifest_yaml="x")
    deployment.append_logs("step 1\n", 1000)
    deployment.append_logs("step 2\n", 1000)

    first = client.get(f"{API}/deploy/{deployment.id}/build-logs").get_json()
    later = client.get(f"{API}/deploy/{deployment.id}/build-logs?offset=7").get_json()

    assert first == {"logs": "step 1\nstep 2\n", "offset": 14}
    assert later == {"logs": "step 2\n", "offset": 14}


def test_an_older_registry_moves_its_build_logs_out_of_the_deployment_table(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    db = open_database(path)
    Deployment.create(id="old", job_name="a", job_version="1.0.0", manifest_yaml="x", build_logs="built\n")
    db.execute_sql("DROP TABLE build_log")
    db.execute_sql("DROP TABLE build_log_chunk")
    db.execute_sql("PRAGMA user_version = 11")
    db.close()

    open_database(path)

    old = Deployment.get_by_id("old")
    assert old.build_logs == ""
    assert old.build_logs_since(0) == ("built\n", 6)
    old.append_logs("more\n", 1000)
    assert old.build_log_text == "built\nmore\n"


# --- item 11: request bodies, JSON nesting and archives are bounded before they are read ---------


def test_a_large_body_to_the_open_register_endpoint_is_413_before_it_is_read(make_app: Callable[..., Flask]) -> None:
    app = make_app(max_request_body="64Ki")
    body = b'{"username": "' + b"a" * 200_000 + b'"}'
    read: list[int] = []

    class CountingStream(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            chunk = super().read(size)
            read.append(len(chunk))
            return chunk

    response = app.test_client().post(
        f"{API}/users/register",
        input_stream=CountingStream(body),
        content_type="application/json",
        headers={"Content-Length": str(len(body))},
    )

    assert response.status_code == 413
    assert response.get_json()["type"] == "payload-too-large"
    assert "RACETRACK_MAX_REQUEST_BODY" in response.get_json()["error"]
    assert sum(read) == 0


def test_the_default_request_body_limit_is_one_mebibyte(app: Flask) -> None:
    body = b"{" + b" " * (1024**2) + b"}"
    response = app.test_client().post(f"{API}/users/login", data=body, content_type="application/json")
    assert response.status_code == 413


def test_a_deploy_may_be_larger_than_other_requests_up_to_its_own_limit(make_app: Callable[..., Flask]) -> None:
    app = make_app(max_request_body="1Ki", max_deploy_body="64Ki")
    client = app.test_client()
    client.environ_base["HTTP_X_RACETRACK_AUTH"] = ADMIN_TOKEN
    manifest = sample_manifest(name="big", version="1.0.0")

    fits = client.post(
        f"{API}/deploy",
        json={
            "manifest": manifest,
            "build_context": build_context(),
            "secret_vars": {"build_env": {"PAD": "x" * 4000}},
        },
    )
    over = client.post(f"{API}/deploy", json={"manifest": manifest, "build_context": "A" * 80_000})

    assert fits.status_code == 201, fits.get_json()
    assert over.status_code == 413
    assert "RACETRACK_MAX_DEPLOY_BODY" in over.get_json()["error"]


@pytest.mark.parametrize("depth", [65, 100_000])
def test_deeply_nested_json_is_400_naming_the_limit(client: FlaskClient, depth: int) -> None:
    body = "[" * depth + "]" * depth

    response = client.put(f"{API}/maintenance", data=body, content_type="application/json")

    assert response.status_code == 400
    assert "nested more than 64 levels" in response.get_json()["error"]


def _tar_gz(members: list[tuple[str, int]], fill: bytes = b"\0") -> bytes:
    """A tar.gz of regular files of the given sizes, streamed (the data is never held whole)."""

    class Repeating(io.RawIOBase):
        def __init__(self, size: int) -> None:
            self.left = size

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            count = min(len(buffer), self.left)
            buffer[:count] = fill * count
            self.left -= count
            return count

    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w:gz", compresslevel=1) as tar:
        for name, size in members:
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BufferedReader(Repeating(size)))
    return packed.getvalue()


def test_a_gzip_bomb_is_refused_by_its_expansion_ratio_before_anything_is_written(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.tar.gz"
    archive.write_bytes(_tar_gz([("a.txt", 100), ("zeros", 128 * 1024**2)]))  # ~130 KiB: under every size cap
    destination = tmp_path / "job"

    with pytest.raises(ValidationError, match="RACETRACK_MAX_CONTEXT_RATIO") as refused:
        unpack_build_context(archive, destination)

    assert "200 times" in refused.value.message
    assert not destination.exists() or not any(destination.iterdir())


def test_a_build_context_with_too_many_entries_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    archive = tmp_path / "many.tar.gz"
    archive.write_bytes(_tar_gz([(f"f{i}", 1) for i in range(101)]))
    destination = tmp_path / "job"

    with pytest.raises(ValidationError, match="more than 100 entries.*RACETRACK_MAX_CONTEXT_ENTRIES"):
        unpack_build_context(archive, destination, limits=ContextLimits(max_entries=100))

    assert not destination.exists() or not any(destination.iterdir())


def test_a_zip_bomb_from_the_dashboard_is_refused_without_inflating_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context_module, "RATIO_FLOOR_BYTES", 1024**2, raising=False)
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros", b"\0" * (8 * 1024**2))

    with pytest.raises(ValidationError, match="RACETRACK_MAX_CONTEXT_RATIO"):
        archive_as_tar_gz(packed.getvalue())
    with pytest.raises(ValidationError, match="RACETRACK_MAX_CONTEXT_ENTRIES"):
        archive_as_tar_gz(packed.getvalue(), limits=ContextLimits(max_entries=0))


def test_zip_entries_are_repacked_streamed_not_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("main.py", b"print('hi')\n" * 10_000)
    monkeypatch.setattr(zipfile.ZipFile, "read", lambda *args: pytest.fail("an entry was read whole"))

    repacked = archive_as_tar_gz(packed.getvalue())

    with tarfile.open(fileobj=io.BytesIO(repacked)) as tar:
        assert tar.extractfile("main.py").read() == b"print('hi')\n" * 10_000  # type: ignore[union-attr]


# --- item 8: follow streams end when their client goes; a cap per caller and in all ---------------


class _StreamingCall:
    """One request to an ASGI app whose client can hang up at any moment."""

    def __init__(self, app: Any, path: str, token: str = ADMIN_TOKEN) -> None:
        path, _, query = path.partition("?")
        self.scope = {
            "type": "http",
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"x-racetrack-auth", token.encode())],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 7102),
        }
        self.hung_up = asyncio.Event()
        self.started = asyncio.Event()
        self.status = 0
        self.body = b""
        self._request_sent = False
        self.task = asyncio.ensure_future(app(self.scope, self._receive, self._send))

    async def _receive(self) -> dict[str, Any]:
        if not self._request_sent:
            self._request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.hung_up.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if self.hung_up.is_set():
            raise OSError("client disconnected")  # what gunicorn's send does once the socket is gone
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.started.set()
        else:
            self.body += message.get("body", b"")


@pytest.fixture
def silent_job(runtime: FakeRuntime) -> Iterator[FakeRuntime]:
    runtime.silent_follow = True
    yield runtime
    for stream in runtime.follow_streams:  # never leave a pool thread waiting after the test
        stream.close()


def _follow_app(make_settings: Callable[..., Settings], runtime: FakeRuntime, **extra: str) -> Any:
    app = create_asgi_app(make_settings(http_threads="4", **extra), runtime)
    Job.create(
        name="adder",
        version="1.0.0",
        status=JobStatus.RUNNING,
        manifest_yaml="name: adder\n",
        job_type_version="python3:1.0.0",
        image_name="img",
        container_name="job-adder-v-1-0-0",
        internal_name="127.0.0.1:1",
        deployment_timestamp=1,
    )
    runtime.logs["job-adder-v-1-0-0"] = "started\n"
    return app


def test_abandoned_follow_streams_free_their_threads_and_the_control_plane_answers(
    make_settings: Callable[..., Settings], silent_job: FakeRuntime
) -> None:
    app = _follow_app(make_settings, silent_job, max_follow_streams="4", follow_streams_per_caller="4")

    async def scenario() -> int:
        calls = [_StreamingCall(app, f"{API}/job/adder/1.0.0/logs?follow=true") for _ in range(4)]
        await asyncio.wait_for(asyncio.gather(*(call.started.wait() for call in calls)), 5)
        assert all(call.status == 200 for call in calls)
        for call in calls:  # every client goes away while the job says nothing
            call.hung_up.set()
        await asyncio.wait_for(asyncio.gather(*(call.task for call in calls)), 5)
        ready = _StreamingCall(app, "/ready")  # needs a free thread of the 4
        await asyncio.wait_for(ready.task, 5)
        return ready.status

    assert asyncio.run(scenario()) == 200
    assert all(stream.finished.wait(5) for stream in silent_job.follow_streams)
    assert len(silent_job.follow_streams) == 4


def test_follow_streams_over_the_caller_limit_get_429_naming_it(
    make_settings: Callable[..., Settings], silent_job: FakeRuntime
) -> None:
    app = _follow_app(make_settings, silent_job, follow_streams_per_caller="2", max_follow_streams="3")

    async def scenario() -> tuple[list[int], dict[str, Any], int]:
        calls = [_StreamingCall(app, f"{API}/job/adder/1.0.0/logs?follow=true") for _ in range(2)]
        await asyncio.wait_for(asyncio.gather(*(call.started.wait() for call in calls)), 5)
        third = _StreamingCall(app, f"{API}/job/adder/1.0.0/logs?follow=true")
        await asyncio.wait_for(third.task, 5)
        for call in calls:
            call.hung_up.set()
        await asyncio.wait_for(asyncio.gather(*(call.task for call in calls)), 5)
        again = _StreamingCall(app, f"{API}/job/adder/1.0.0/logs?follow=true")  # the slots came back
        await asyncio.wait_for(again.started.wait(), 5)
        again.hung_up.set()
        await asyncio.wait_for(again.task, 5)
        return [call.status for call in calls], json.loads(third.body), third.status

    statuses, refused, refused_status = asyncio.run(scenario())
    assert statuses == [200, 200]
    assert refused_status == 429
    assert refused["type"] == "too-many-streams"
    assert "RACETRACK_FOLLOW_STREAMS_PER_CALLER" in refused["error"]


def test_follow_streams_over_the_total_limit_get_429_naming_it() -> None:
    limiter = StreamLimiter(per_caller=2, total=3)
    releases = [limiter.acquire("user:a"), limiter.acquire("user:a"), limiter.acquire("user:b")]

    with pytest.raises(TooManyStreams, match="RACETRACK_MAX_FOLLOW_STREAMS"):
        limiter.acquire("user:c")
    releases[0]()
    releases[0]()  # a second release changes nothing
    assert limiter.open_streams() == 2
    limiter.acquire("user:c")


def test_a_build_log_follow_ends_when_its_client_goes(tmp_path: Path) -> None:
    open_database(tmp_path / "registry.sqlite3")
    deployment = Deployment.create(job_name="slow", job_version="1.0.0", manifest_yaml="x")  # stays in progress
    gone = ClientGone()
    chunks: list[str] = []
    follower = threading.Thread(target=lambda: chunks.extend(follow_build_logs(deployment.id, gone, 0.05)))
    follower.start()

    time.sleep(0.2)
    gone.fire()
    follower.join(timeout=2)

    assert not follower.is_alive()


@pytest.mark.parametrize(
    "error", [OSError(errno.ENOSPC, "No space left on device"), peewee.OperationalError("database or disk is full")]
)
def test_a_deploy_on_a_full_disk_is_507_saying_so_and_the_api_keeps_serving(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    original = Path.write_bytes

    def full(path: Path, data: bytes) -> int:
        if path.parent.name == "uploads":
            raise error
        return original(path, data)

    monkeypatch.setattr(Path, "write_bytes", full)

    refused = client.post(f"{API}/deploy", json={"manifest": sample_manifest(), "build_context": build_context()})
    listed = client.get(f"{API}/deploy")

    assert refused.status_code == 507
    assert refused.get_json()["type"] == "storage-full"
    assert "disk" in refused.get_json()["error"] and "full" in refused.get_json()["error"]
    assert listed.status_code == 200 and listed.get_json() == []


def test_other_os_errors_stay_internal_errors(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> int:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "write_bytes", broken)

    response = client.post(f"{API}/deploy", json={"manifest": sample_manifest(), "build_context": build_context()})

    assert response.status_code == 500
    assert response.get_json()["type"] == "internal-server-error"
