"""Limits of the control plane through the real daemon: concurrent deploys of one version, follow
streams whose clients go away, and a private data dir."""

from __future__ import annotations

import shutil
import socket
import stat
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import docker
import pytest
import requests

from cli.packing import pack
from tests.integration.conftest import REPO, Daemon, _remove_labelled, launch_daemon

pytestmark = [pytest.mark.integration, pytest.mark.security]

API = "/lifecycle/api/v1"
# One HTTP worker with 4 control-plane threads, at most 3 of them streaming: every request meets the
# same limits, and a stuck thread shows at once.
LIMITED = {
    "RACETRACK_HTTP_WORKERS": "1",
    "RACETRACK_HTTP_THREADS": "4",
    "RACETRACK_MAX_FOLLOW_STREAMS": "3",
    "RACETRACK_FOLLOW_STREAMS_PER_CALLER": "3",
}


@pytest.fixture(scope="module")
def limited_daemon(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, base_image: str
) -> Iterator[Daemon]:
    handle = launch_daemon(tmp_path_factory.mktemp("limits-data"), docker_client, base_image, **LIMITED)
    try:
        yield handle
    finally:
        handle.stop()
        _remove_labelled(docker_client, handle.instance)


@pytest.fixture(scope="module")
def racing_deploys(limited_daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> list[requests.Response]:
    """Five POST /deploy of one new job version, released at the same moment."""
    job_dir = tmp_path_factory.mktemp("racer")
    shutil.copy(REPO / "samples" / "adder" / "entrypoint.py", job_dir / "entrypoint.py")
    manifest = {
        "name": "racer",
        "owner_email": "tests@example.com",
        "version": "1.0.0",
        "jobtype": "python3:latest",
        "jobtype_extra": {"entrypoint_path": "entrypoint.py"},
    }
    body = {"manifest": manifest, "build_context": pack(job_dir)}
    barrier = threading.Barrier(5)
    responses: list[Any] = [None] * 5

    def post(index: int) -> None:
        barrier.wait()
        responses[index] = limited_daemon.api("POST", f"{API}/deploy", json=body)

    threads = [threading.Thread(target=post, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return responses


@pytest.fixture(scope="module")
def silent_job(limited_daemon: Daemon, racing_deploys: list[requests.Response]) -> str:
    """The racer job, deployed and running; it prints nothing unless called."""
    winner = next(r for r in racing_deploys if r.status_code == 201).json()["id"]
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        current = limited_daemon.api("GET", f"{API}/deploy/{winner}").json()
        if current["status"] != "in_progress":
            assert current["status"] == "done", current["error"]
            return "racer"
        time.sleep(0.5)
    raise AssertionError("the racer deployment did not finish")


def test_concurrent_deploys_of_a_new_version_queue_exactly_one(
    racing_deploys: list[requests.Response], limited_daemon: Daemon
) -> None:
    statuses = sorted(response.status_code for response in racing_deploys)

    assert statuses == [201, 409, 409, 409, 409], [r.text for r in racing_deploys]
    assert all("racer 1.0.0" in r.json()["error"] for r in racing_deploys if r.status_code == 409)
    listed = limited_daemon.api("GET", f"{API}/deploy", params={"job_name": "racer"}).json()
    assert len(listed) == 1


def _open_follow(daemon: Daemon, job: str) -> tuple[socket.socket, int]:
    """A raw follow request; returns the socket (still open) and the status line's code."""
    url = urlsplit(daemon.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=10)
    sock.sendall(
        f"GET {API}/job/{job}/1.0.0/logs?follow=true&tail=1 HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"X-Racetrack-Auth: {daemon.token}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n" not in head:
        head += sock.recv(1)
    return sock, int(head.split()[1])


def test_abandoned_follow_streams_free_their_threads_and_the_limit_gives_429(
    limited_daemon: Daemon, silent_job: str
) -> None:
    streams = [_open_follow(limited_daemon, silent_job) for _ in range(3)]
    over, over_status = _open_follow(limited_daemon, silent_job)
    refused = b""
    while b"}" not in refused:  # the JSON error body
        refused += over.recv(65536)
    over.close()
    assert [status for _, status in streams] == [200, 200, 200]
    assert over_status == 429
    assert b"RACETRACK_FOLLOW_STREAMS_PER_CALLER" in refused

    for sock, _ in streams:  # the clients go; the job says nothing
        sock.close()

    # Within a few seconds all three threads are back: three new streams open (not 429) and /ready answers.
    deadline = time.monotonic() + 5
    while True:
        again = [_open_follow(limited_daemon, silent_job) for _ in range(3)]
        for sock, _ in again:
            sock.close()
        if [status for _, status in again] == [200, 200, 200]:
            break
        assert time.monotonic() < deadline, "follow streams of gone clients still hold their slots"
        time.sleep(0.5)
    assert requests.get(limited_daemon.url + "/ready", timeout=5).status_code == 200


def test_the_registry_and_uploads_are_private(limited_daemon: Daemon, silent_job: str) -> None:
    data_dir = limited_daemon.data_dir
    modes = {
        path.name: stat.S_IMODE(path.stat().st_mode)
        for path in data_dir.iterdir()
        if path.name.startswith("registry.sqlite3")
    }

    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert modes and set(modes.values()) == {0o600}, modes
    for name in ("uploads", "workspaces"):
        if (data_dir / name).exists():
            assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o700
