"""Async calls (/pub/async/...): submitted through the gateway, carried out by the AsyncCallRunner, polled."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from racetrackd import db
from racetrackd.auth.access import CALL_ADMIN_API, JOB_FAMILY, USER, GrantRule, Identity
from racetrackd.db import AsyncTask, TaskState
from racetrackd.errors import ConflictError, DockerUnavailable, NotFoundError
from racetrackd.gateway import asynccalls
from racetrackd.gateway.asynccalls import AsyncCallRunner
from racetrackd.settings import Settings
from tests.unit.conftest import ADMIN_TOKEN
from tests.unit.gateway_helpers import (
    Daemons,
    LoopClient,
    Request,
    ServerConnection,
    Servers,
    UpstreamServer,
    add_job,
    echo,
    free_port,
    reply,
)

AUTH = {"X-Racetrack-Auth": ADMIN_TOKEN}
API = "/lifecycle/api/v1"
FAST = {"async_retry_interval": "0.05", "async_max_attempts": "3"}


class Runner:
    """The AsyncCallRunner on its own thread, as the daemon runs it."""

    def __init__(self, settings: Settings, wake: Callable[[db.Job], None] | None = None) -> None:
        self.woken: list[db.Job] = []
        self._wake = wake
        self.runner = AsyncCallRunner(settings, self._record_wake, poll_interval=0.01)
        self.thread = threading.Thread(target=self.runner.run_forever, daemon=True)

    def _record_wake(self, job: db.Job) -> None:
        self.woken.append(job)
        if self._wake:
            self._wake(job)

    def __enter__(self) -> Runner:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.runner.stop()
        self.thread.join(3)
        assert not self.thread.is_alive()


def wait_until_finished(task_id: str, seconds: float = 3.0) -> AsyncTask:
    deadline = time.monotonic() + seconds
    while True:
        task = AsyncTask.get_by_id(task_id)
        if asynccalls.finished(task):
            return task
        assert time.monotonic() < deadline, f"task still {task.state} after {seconds} s"
        time.sleep(0.01)


def submit(
    client: LoopClient,
    path: str = "/pub/async/new/job/adder/latest/api/v1/perform?q=1",
    body: bytes = b'{"a": 40, "b": 2}',
    headers: dict[str, str] | None = None,
) -> str:
    response = client.post(path, body, {**AUTH, "Content-Type": "application/json", **(headers or {})})
    assert response.status_code == 201, response.data
    assert response.json["status"] == "ongoing"
    return str(response.json["task_id"])


def make_task(**fields: Any) -> AsyncTask:
    values = {
        "job_name": "adder",
        "job_version": "1.0.0",
        "method": "POST",
        "target": "/pub/job/adder/1.0.0/x",
        "request_body": b"{}",
        **fields,
    }
    return AsyncTask.create(**values)


# --- submit, run, poll ---------------------------------------------------------------------------


def test_an_async_call_is_stored_run_and_its_answer_polled(daemon: Daemons, servers: Servers) -> None:
    client = daemon()
    server = servers()
    add_job("adder", "1.0.0", addresses=[server.address])

    task_id = submit(client, headers={"X-Request-Tracing-Id": "trace-async", "X-Custom": "kept"})
    stored = AsyncTask.get_by_id(task_id)
    queued = client.get(f"/pub/async/task/{task_id}/poll?wait=0", AUTH)
    with Runner(daemon.settings):
        wait_until_finished(task_id)
    answer = client.get(f"/pub/async/task/{task_id}/poll?wait=1", {**AUTH, "X-Request-Tracing-Id": "poll-1"})
    status = client.get(f"/pub/async/task/{task_id}/status", AUTH)

    assert (stored.job_name, stored.job_version, stored.method) == ("adder", "1.0.0", "POST")
    assert stored.target == "/pub/job/adder/1.0.0/api/v1/perform?q=1"
    assert stored.caller == "admin"
    assert queued.status_code == 202 and queued.json["status"] == "ongoing"
    assert answer.status_code == 200
    assert answer.header("x-request-tracing-id") == "poll-1"
    assert answer.header("content-type") == "application/json"  # the job's own headers
    got = answer.json
    assert got["method"] == "POST" and got["target"] == "/pub/job/adder/1.0.0/api/v1/perform?q=1"
    assert got["body"] == '{"a": 40, "b": 2}'
    headers = dict(got["headers"])
    assert headers["host"] == server.address
    assert headers["x-custom"] == "kept" and headers["x-caller-name"] == "admin"
    assert headers["x-request-tracing-id"] == "trace-async"
    assert "x-racetrack-auth" not in headers
    assert status.status_code == 200
    assert status.json["status"] == "completed" and status.json["attempts"] == 1
    assert status.json["response_status"] == 200 and status.json["duration"] is not None


def test_the_jobs_own_error_status_is_a_completed_task(daemon: Daemons, servers: Servers) -> None:
    client = daemon()
    server = servers(lambda connection, request: connection.send(reply(422, b'{"error": "bad a"}')))
    add_job("adder", "1.0.0", addresses=[server.address])

    task_id = submit(client)
    with Runner(daemon.settings):
        task = wait_until_finished(task_id)
    answer = client.get(f"/pub/async/task/{task_id}/poll", AUTH)

    assert task.state == TaskState.COMPLETED
    assert answer.status_code == 422 and answer.json == {"error": "bad a"}


def test_an_unreachable_job_is_tried_again_then_the_task_fails(daemon: Daemons) -> None:
    client = daemon(**FAST)
    add_job("adder", "1.0.0", addresses=[f"127.0.0.1:{free_port()}"])

    task_id = submit(client)
    with Runner(daemon.settings):
        task = wait_until_finished(task_id)
    poll = client.get(f"/pub/async/task/{task_id}/poll", AUTH)

    assert task.state == TaskState.FAILED
    assert task.attempts == 3
    assert "refused" in str(task.error) and str(task.error).endswith("(after 3 attempt(s))")
    assert poll.status_code == 500
    assert poll.json["status"] == "failed" and poll.json["error"] == task.error


def test_a_job_that_drops_the_first_attempt_answers_the_second(daemon: Daemons, servers: Servers) -> None:
    client = daemon(**FAST)
    holder: list[UpstreamServer] = []

    def flaky(connection: ServerConnection, request: Request) -> bool | None:
        if len(holder[0].requests) == 1:
            return False  # hangs up without answering, as a crashing job does
        echo(connection, request)
        return None

    server = servers(flaky)
    holder.append(server)
    add_job("adder", "1.0.0", addresses=[server.address])

    task_id = submit(client)
    with Runner(daemon.settings):
        task = wait_until_finished(task_id)

    assert task.state == TaskState.COMPLETED
    assert task.attempts == 2
    assert task.error is None
    assert len(server.requests) == 2


def test_an_attempt_past_the_call_timeout_fails_without_retrying(daemon: Daemons, servers: Servers) -> None:
    client = daemon(call_timeout="0.2", **FAST)
    holder: list[UpstreamServer] = []
    server = servers(lambda connection, request: holder[0].stopping.wait(3) and None)
    holder.append(server)
    add_job("adder", "1.0.0", addresses=[server.address])

    task_id = submit(client)
    with Runner(daemon.settings):
        task = wait_until_finished(task_id)

    assert task.state == TaskState.FAILED and task.attempts == 1
    assert "did not answer within its call_timeout of 0.2 s" in str(task.error)


def test_an_answer_larger_than_async_max_body_fails_the_task(daemon: Daemons, servers: Servers) -> None:
    client = daemon(async_max_body="100")
    server = servers(lambda connection, request: connection.send(reply(200, b"x" * 1000)))
    add_job("adder", "1.0.0", addresses=[server.address])

    task_id = submit(client, body=b"{}")
    with Runner(daemon.settings):
        task = wait_until_finished(task_id)

    assert task.state == TaskState.FAILED and "async_max_body" in str(task.error)


def test_a_task_whose_job_was_deleted_fails(daemon: Daemons, servers: Servers) -> None:
    client = daemon()
    add_job("adder", "1.0.0", addresses=[servers().address])
    task_id = submit(client)
    db.Job.delete().execute()

    with Runner(daemon.settings):
        task = wait_until_finished(task_id)

    assert task.state == TaskState.FAILED and "no longer exists" in str(task.error)


def test_a_sleeping_job_is_woken_for_its_async_call(daemon: Daemons, servers: Servers) -> None:
    client = daemon()
    server = servers()
    add_job("sleepy", "1.0.0", db.JobStatus.SLEEPING, [])

    def wake(job: db.Job) -> None:
        db.Job.update(status=db.JobStatus.RUNNING, replica_addresses=(server.address,)).execute()

    task_id = submit(client, "/pub/async/new/job/sleepy/1.0.0/api/v1/perform")
    with Runner(daemon.settings, wake) as runner:
        task = wait_until_finished(task_id)

    assert task.state == TaskState.COMPLETED
    assert [job.name for job in runner.woken] == ["sleepy"]
    assert len(server.requests) == 1


# --- submit errors -------------------------------------------------------------------------------


def test_submitting_without_a_token_is_401(daemon: Daemons) -> None:
    client = daemon()
    add_job("adder", "1.0.0", addresses=["127.0.0.1:1"])

    response = client.post("/pub/async/new/job/adder/1.0.0/api/v1/perform", b"{}")

    assert response.status_code == 401 and response.json["type"] == "unauthorized"
    assert AsyncTask.select().count() == 0


def test_submitting_to_an_unknown_job_is_404(daemon: Daemons) -> None:
    client = daemon()

    response = client.post("/pub/async/new/job/nothing/latest/api/v1/perform", b"{}", AUTH)

    assert response.status_code == 404 and response.json["type"] == "job-not-found"
    assert response.json["job_name"] == "nothing"
    assert AsyncTask.select().count() == 0


def test_a_request_body_over_async_max_body_is_413(daemon: Daemons) -> None:
    client = daemon(async_max_body="10")
    add_job("adder", "1.0.0", addresses=["127.0.0.1:1"])

    response = client.post("/pub/async/new/job/adder/1.0.0/api/v1/perform", b"x" * 11, AUTH)

    assert response.status_code == 413 and response.json["type"] == "payload-too-large"
    assert AsyncTask.select().count() == 0


@pytest.mark.parametrize(
    "path",
    [
        "/pub/async/new/job/adder",
        "/pub/async/new/other/adder/1.0.0/x",
        "/pub/async/task/abc",
        "/pub/async/task/abc/result",
    ],
)
def test_malformed_async_paths_are_404(daemon: Daemons, path: str) -> None:
    client = daemon()

    response = client.request("POST" if "/new/" in path else "GET", path, b"{}", AUTH)

    assert response.status_code == 404 and response.json["type"] == "not-found"


def test_polling_an_unknown_task_is_404(daemon: Daemons) -> None:
    client = daemon()

    response = client.get("/pub/async/task/no-such-task/poll", AUTH)

    assert response.status_code == 404 and response.json["type"] == "not-found"


def test_polling_a_running_task_waits_up_to_wait_seconds_then_says_202(daemon: Daemons) -> None:
    client = daemon()
    task = make_task(state=TaskState.RUNNING, attempts=1)

    started = time.monotonic()
    response = client.get(f"/pub/async/task/{task.id}/poll?wait=0.3", AUTH)

    assert 0.25 < time.monotonic() - started < 2.0
    assert response.status_code == 202 and response.json["status"] == "ongoing"


# --- who sees a task -----------------------------------------------------------------------------


def test_a_task_is_visible_to_its_caller_and_admins_only(daemon: Daemons) -> None:
    daemon()
    task = make_task(caller="Job family one")
    anonymous = make_task(caller=None)
    one, two = Identity(JOB_FAMILY, "one"), Identity(JOB_FAMILY, "two")
    operator = Identity(USER, "ops", grants=(GrantRule(CALL_ADMIN_API),))

    assert asynccalls.find(task.id, one).id == task.id
    assert asynccalls.find(task.id, Identity(USER, "admin", unrestricted=True)).id == task.id
    assert asynccalls.find(task.id, operator).id == task.id
    with pytest.raises(NotFoundError):
        asynccalls.find(task.id, two)
    with pytest.raises(NotFoundError):
        asynccalls.find(task.id, Identity(USER, "one"))  # a user named like the family is someone else
    assert asynccalls.find(anonymous.id, two).id == anonymous.id


# --- requeue, retry, purge -----------------------------------------------------------------------


def test_tasks_left_running_by_a_dead_daemon_are_queued_again(daemon: Daemons) -> None:
    daemon()
    running = make_task(state=TaskState.RUNNING, attempts=1, next_attempt_at=time.time() + 999)
    queued = make_task(state=TaskState.QUEUED, attempts=1)
    done = make_task(state=TaskState.COMPLETED, attempts=1)

    assert asynccalls.requeue_interrupted() == 1

    requeued = AsyncTask.get_by_id(running.id)
    assert requeued.state == TaskState.QUEUED and requeued.attempts == 0  # the lost attempt does not count
    assert requeued.next_attempt_at <= time.time()
    assert AsyncTask.get_by_id(queued.id).attempts == 1
    assert AsyncTask.get_by_id(done.id).state == TaskState.COMPLETED


def test_the_runner_carries_out_an_interrupted_task_at_start(daemon: Daemons, servers: Servers) -> None:
    daemon()
    server = servers()
    add_job("adder", "1.0.0", addresses=[server.address])
    task = make_task(state=TaskState.RUNNING, attempts=1, started_at=time.time() - 60)

    with Runner(daemon.settings):
        finished = wait_until_finished(task.id)

    assert finished.state == TaskState.COMPLETED and finished.attempts == 1
    assert [r.target for r in server.requests] == ["/pub/job/adder/1.0.0/x"]


def test_a_failed_task_retried_by_hand_runs_again(daemon: Daemons, servers: Servers) -> None:
    client = daemon()
    server = servers()
    add_job("adder", "1.0.0", addresses=[server.address])
    task = make_task(
        state=TaskState.FAILED,
        attempts=2,
        error="connection refused (after 2 attempt(s))",
        started_at=time.time() - 5,
        ended_at=time.time() - 4,
        caller="admin",
    )

    retried = client.post(f"{API}/async/tasks/{task.id}/retry", b"", AUTH)
    with Runner(daemon.settings):
        finished = wait_until_finished(task.id)

    assert retried.status_code == 200
    assert retried.json["state"] == "queued" and retried.json["attempts"] == 0
    assert retried.json["error"] is None and retried.json["ended_at"] is None
    assert finished.state == TaskState.COMPLETED and finished.attempts == 1


@pytest.mark.parametrize("state", [TaskState.QUEUED, TaskState.RUNNING, TaskState.COMPLETED])
def test_only_failed_tasks_can_be_retried(daemon: Daemons, state: str) -> None:
    client = daemon()
    task = make_task(state=state)

    response = client.post(f"{API}/async/tasks/{task.id}/retry", b"", AUTH)

    assert response.status_code == 409 and response.json["type"] == "already-exists"
    assert AsyncTask.get_by_id(task.id).state == state
    with pytest.raises(ConflictError):
        asynccalls.retry(task.id, "admin")


def test_retrying_an_unknown_task_is_404(daemon: Daemons) -> None:
    client = daemon()

    assert client.post(f"{API}/async/tasks/nope/retry", b"", AUTH).status_code == 404


def test_tasks_are_listed_newest_first_and_filtered(daemon: Daemons) -> None:
    client = daemon()
    old = make_task(state=TaskState.FAILED, create_time=time.time() - 30, error="refused")
    new = make_task(state=TaskState.COMPLETED, create_time=time.time() - 10)
    other = make_task(state=TaskState.FAILED, job_name="other", create_time=time.time())

    everything = client.get(f"{API}/async/tasks", AUTH).json
    failed = client.get(f"{API}/async/tasks?state=failed", AUTH).json
    adder = client.get(f"{API}/async/tasks?job_name=adder&limit=1", AUTH).json
    bad = client.get(f"{API}/async/tasks?state=bogus", AUTH)
    unauthorized = client.get(f"{API}/async/tasks")

    assert [t["task_id"] for t in everything] == [other.id, new.id, old.id]
    assert [t["task_id"] for t in failed] == [other.id, old.id]
    assert [t["task_id"] for t in adder] == [new.id]
    assert bad.status_code == 400 and bad.json["type"] == "validation-error"
    assert unauthorized.status_code == 401


def test_purge_drops_old_finished_tasks_and_answers_read_a_while_ago(daemon: Daemons) -> None:
    daemon()
    now = time.time()
    ttl = 3600.0
    old_done = make_task(state=TaskState.COMPLETED, ended_at=now - ttl - 10, response_body=b"old")
    old_failed = make_task(state=TaskState.FAILED, ended_at=now - ttl - 10)
    recent_done = make_task(state=TaskState.COMPLETED, ended_at=now - 10, response_body=b"recent")
    old_queued = make_task(state=TaskState.QUEUED, create_time=now - ttl - 10)
    read_long_ago = make_task(
        state=TaskState.COMPLETED,
        ended_at=now - 100,
        response_body=b"read",
        retrieved_at=now - asynccalls.RESULT_GRACE_SECONDS - 5,
    )
    read_just_now = make_task(
        state=TaskState.COMPLETED, ended_at=now - 100, response_body=b"read", retrieved_at=now - 1
    )

    asynccalls.purge(ttl)

    remaining = {task.id: task for task in AsyncTask.select()}
    assert old_done.id not in remaining and old_failed.id not in remaining
    assert set(remaining) == {recent_done.id, old_queued.id, read_long_ago.id, read_just_now.id}
    assert remaining[recent_done.id].response_body == b"recent"
    assert remaining[read_long_ago.id].response_body is None and remaining[read_long_ago.id].request_body is None
    assert remaining[read_just_now.id].response_body == b"read"


def test_an_answer_can_be_read_again_until_it_is_purged(daemon: Daemons) -> None:
    client = daemon()
    task = make_task(
        state=TaskState.COMPLETED,
        response_status=201,
        response_body=b"made",
        response_headers=json.dumps([["x-job", "yes"]]),
        ended_at=time.time(),
        caller="admin",
    )

    first = client.get(f"/pub/async/task/{task.id}/poll", AUTH)
    second = client.get(f"/pub/async/task/{task.id}/poll", AUTH)
    AsyncTask.update(retrieved_at=time.time() - asynccalls.RESULT_GRACE_SECONDS - 1).execute()
    asynccalls.purge(3600)
    gone = client.get(f"/pub/async/task/{task.id}/poll", AUTH)

    assert (first.status_code, first.data, first.header("x-job")) == (201, b"made", "yes")
    assert (second.status_code, second.data) == (201, b"made")
    assert gone.status_code == 404 and "already read" in gone.json["error"]


def test_a_wake_up_that_fails_otherwise_does_not_leave_the_task_running(daemon: Daemons) -> None:
    client = daemon(**FAST)
    add_job("sleepy", "1.0.0", db.JobStatus.SLEEPING, [])

    def wake(job: db.Job) -> None:
        raise DockerUnavailable("cannot reach the Docker engine")

    task_id = submit(client, "/pub/async/new/job/sleepy/1.0.0/api/v1/perform")
    with Runner(daemon.settings, wake):
        task = wait_until_finished(task_id, seconds=0.5)

    assert task.state == TaskState.FAILED and "Docker" in str(task.error)


def test_an_async_call_counts_as_the_jobs_last_call(daemon: Daemons, servers: Servers) -> None:
    client = daemon()
    add_job("adder", "1.0.0", addresses=[servers().address])
    before = time.time()

    submit(client)
    client.app.gateway.last_calls.flush()

    assert before <= (db.Job.get(db.Job.name == "adder").last_call_time or 0) <= time.time()
