"""Runtime logs of a job through the API (Racetrack's `{"logs"}` shape, plain text, follow)."""

from __future__ import annotations

from flask.testing import FlaskClient

from racetrackd.db import Job, JobStatus
from tests.unit.fakes import FakeRuntime


def _running_job() -> Job:
    return Job.create(
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


def test_logs_return_the_tail_of_the_jobs_container_output(client: FlaskClient, runtime: FakeRuntime) -> None:
    _running_job()
    runtime.logs["job-adder-v-1-0-0"] = "\n".join(f"line {n}" for n in range(1, 31))

    default = client.get("/lifecycle/api/v1/job/adder/latest/logs").json
    three = client.get("/lifecycle/api/v1/job/adder/1.0.0/logs?tail=3").json
    plain = client.get("/lifecycle/api/v1/job/adder/1.0.0/logs/plain?tail=2")

    assert default["logs"].splitlines()[0] == "line 11"  # 20 lines by default
    assert three == {"logs": "line 28\nline 29\nline 30"}
    assert plain.mimetype == "text/plain"
    assert plain.get_data(as_text=True) == "line 29\nline 30"


def test_follow_streams_plain_text(client: FlaskClient, runtime: FakeRuntime) -> None:
    _running_job()
    runtime.logs["job-adder-v-1-0-0"] = "first\nsecond"

    response = client.get("/lifecycle/api/v1/job/adder/1.0.0/logs?follow=true&tail=5")

    assert response.mimetype == "text/plain"
    assert response.get_data(as_text=True) == "first\nsecond\n"


def test_logs_of_an_unknown_job_are_404(client: FlaskClient) -> None:
    response = client.get("/lifecycle/api/v1/job/ghost/latest/logs")

    assert response.status_code == 404
    assert response.json["type"] == "job-not-found"


def test_a_bad_tail_is_400_naming_it(client: FlaskClient) -> None:
    _running_job()

    response = client.get("/lifecycle/api/v1/job/adder/1.0.0/logs?tail=many")

    assert response.status_code == 400
    assert "tail" in response.json["error"]


def test_racetracks_socketio_log_follow_is_refused_saying_what_to_use(client: FlaskClient) -> None:
    # `racetrack logs NAME -f` (the official client) opens Engine.IO at /lifecycle/socket.io/ without
    # a token and prints the JSON of a refused connection: it must say why and what to run instead.
    answer = client.get("/lifecycle/socket.io/?transport=polling&EIO=4&t=abc", headers={"X-Racetrack-Auth": ""})

    assert answer.status_code == 501
    assert answer.json == {
        "error": "following logs over Socket.IO (racetrack logs -f) is not offered: "
        "Racetrack's client sends no token on it",
        "type": "not-supported",
        "hint": "racetrack logs NAME (without -f) shows the recent lines; rtd logs NAME -f follows them",
    }
