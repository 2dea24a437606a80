"""Jobs whose server does not keep the wrapper contract (docker-proxy): the gateway maps paths to
the user's server (forward and rewrite mode), rewrites its redirects, and answers the job's
/live, /ready, /health and /metrics itself. Through create_asgi_app, to a real server on 127.0.0.1."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from racetrackd import db
from racetrackd.plugins.jobtypes import FORWARD, REWRITE, Serving
from tests.unit.conftest import ADMIN_TOKEN
from tests.unit.gateway_helpers import (
    Daemons,
    LoopClient,
    Request,
    ServerConnection,
    Servers,
    UpstreamServer,
    add_job,
    reply,
)

AUTH = {"X-Racetrack-Auth": ADMIN_TOKEN}


def proxied(mode: str) -> str | None:
    return Serving(port=7001, path_mode=mode, probe_path="/").to_json()


@pytest.fixture(params=[FORWARD, REWRITE])
def web(request: pytest.FixtureRequest, daemon: Daemons, servers: Servers) -> tuple[LoopClient, UpstreamServer, str]:
    """A docker-proxy job `web` 1.0.0 (in each path mode) whose server echoes what it received."""
    client = daemon()
    server = servers()
    add_job("web", "1.0.0", addresses=[server.address], serving=proxied(request.param))
    return client, server, request.param


def target_seen(client: LoopClient, path: str) -> str:
    response = client.get(path, AUTH)
    assert response.status_code == 200, response.data
    return str(response.json["target"])


def test_forward_mode_sends_api_v1_paths_to_the_servers_root(daemon: Daemons, servers: Servers) -> None:
    client = daemon()
    server = servers()
    add_job("web", "1.0.0", addresses=[server.address], serving=proxied(FORWARD))

    assert target_seen(client, "/pub/job/web/latest/api/v1/hello/a%3Fb?x=1") == "/hello/a%3Fb?x=1"
    assert target_seen(client, "/pub/job/web/1.0.0/api/v1/") == "/"


def test_forward_mode_refuses_paths_outside_api_v1_without_calling_the_server(
    daemon: Daemons, servers: Servers
) -> None:
    client = daemon()
    server = servers()
    add_job("web", "1.0.0", addresses=[server.address], serving=proxied(FORWARD))

    response = client.get("/pub/job/web/latest/static/app.css", AUTH)

    assert response.status_code == 404
    assert "/api/v1/" in response.json["error"] and "proxy_mode: rewrite" in response.json["hint"]
    assert server.requests == []


def test_rewrite_mode_sends_every_path_without_the_gateway_prefix(daemon: Daemons, servers: Servers) -> None:
    client = daemon()
    server = servers()
    add_job("site", "2.0.0", addresses=[server.address], serving=proxied(REWRITE))

    assert target_seen(client, "/pub/job/site/latest/posts/first/?page=2") == "/posts/first/?page=2"
    assert target_seen(client, "/pub/job/site/2.0.0/") == "/"
    assert target_seen(client, "/pub/job/site/2.0.0/api/v1/x") == "/api/v1/x"


@pytest.mark.parametrize(
    ("mode", "path", "location"),
    [
        (REWRITE, "/pub/job/web/latest", "/pub/job/web/latest/"),
        (REWRITE, "/pub/job/web/1.x?lang=en", "/pub/job/web/1.x/?lang=en"),
        (FORWARD, "/pub/job/web/latest/api/v1", "/pub/job/web/latest/api/v1/"),
    ],
)
def test_the_servers_root_without_its_slash_is_redirected_to_it(
    daemon: Daemons, servers: Servers, mode: str, path: str, location: str
) -> None:
    # Relative links of a page served at .../latest would resolve one level up, outside the job.
    client = daemon()
    server = servers()
    add_job("web", "1.0.0", addresses=[server.address], serving=proxied(mode))

    response = client.get(path, AUTH)

    assert response.status_code == 308
    assert response.header("location") == location
    assert server.requests == []


def test_the_server_learns_the_prefix_its_root_is_reached_at(web: tuple[LoopClient, UpstreamServer, str]) -> None:
    client, _, mode = web
    path = "/pub/job/web/latest/api/v1/x"

    response = client.get(path, AUTH)

    headers = dict(response.json["headers"])
    expected = "/pub/job/web/latest/api/v1" if mode == FORWARD else "/pub/job/web/latest"
    assert headers["x-forwarded-prefix"] == expected


def _redirecting(connection: ServerConnection, request: Request) -> None:
    location = parse_qs(urlsplit(request.target).query)["to"][0]
    connection.send(reply(301, b"", [("Location", location)], reason="Moved Permanently"))


@pytest.mark.parametrize(
    ("mode", "location", "expected"),
    [
        (FORWARD, "/login", "/pub/job/web/latest/api/v1/login"),
        (FORWARD, "/", "/pub/job/web/latest/api/v1/"),
        (REWRITE, "/posts/", "/pub/job/web/latest/posts/"),
        (REWRITE, "http://{self}/posts/", "/pub/job/web/latest/posts/"),
        (REWRITE, "posts/", "posts/"),  # relative: already resolves under the caller's path
        (REWRITE, "//cdn.example.com/x", "//cdn.example.com/x"),
        (REWRITE, "https://elsewhere.example.com/a", "https://elsewhere.example.com/a"),
    ],
)
def test_the_servers_redirects_come_back_under_the_gateway_path(
    daemon: Daemons, servers: Servers, mode: str, location: str, expected: str
) -> None:
    client = daemon()
    server = servers(_redirecting)
    add_job("web", "1.0.0", addresses=[server.address], serving=proxied(mode))
    prefix = "/pub/job/web/latest/api/v1" if mode == FORWARD else "/pub/job/web/latest"

    response = client.get(f"{prefix}/r?to={location.replace('{self}', server.address)}", AUTH)

    assert response.status_code == 301
    assert response.header("location") == expected


@pytest.mark.parametrize("path", ["/live", "/ready", "/health"])
def test_probes_are_answered_by_the_daemon_without_a_token(
    web: tuple[LoopClient, UpstreamServer, str], path: str
) -> None:
    client, server, _ = web

    response = client.get(f"/pub/job/web/latest{path}")

    assert response.status_code == 200, response.data
    assert server.requests == []
    body = response.json
    if path == "/live":
        assert body == {"live": True, "deployment_timestamp": 1_700_000_000}
    elif path == "/ready":
        assert body == {"ready": True}
    else:
        assert (body["job_name"], body["job_version"], body["status"], body["live"]) == ("web", "1.0.0", "pass", True)


def test_a_job_whose_server_fails_its_probe_is_not_ready(daemon: Daemons, servers: Servers) -> None:
    client = daemon()
    server = servers()
    job = add_job("web", "1.0.0", addresses=[server.address], serving=proxied(FORWARD))
    db.Job.update(
        status=db.JobStatus.ERROR,
        replica_addresses=(),
        internal_name="",
        error="probe failing: / on port 7001 unreachable",
    ).where(db.Job.id == job.id).execute()

    ready = client.get("/pub/job/web/1.0.0/ready")
    health = client.get("/pub/job/web/1.0.0/health")
    live = client.get("/pub/job/web/1.0.0/live")

    assert ready.status_code == 500 and ready.json == {"ready": False}
    assert health.status_code == 500
    assert health.json["status"] == "fail" and "port 7001" in health.json["error"]
    assert live.status_code == 200  # the container runs; its server is what is failing


def test_metrics_count_the_jobs_own_calls_only(daemon: Daemons, servers: Servers) -> None:
    client = daemon()
    server = servers()
    name = f"metered-{uuid.uuid4().hex[:8]}"  # the gateway's counters live as long as the test process
    add_job(name, "1.0.0", addresses=[server.address], serving=proxied(FORWARD))
    add_job(f"{name}-other", "1.0.0", addresses=[server.address], serving=proxied(FORWARD))
    for _ in range(3):
        client.get(f"/pub/job/{name}/1.0.0/api/v1/x", AUTH)
    client.get(f"/pub/job/{name}-other/1.0.0/api/v1/x", AUTH)

    response = client.get(f"/pub/job/{name}/1.0.0/metrics", AUTH)

    assert response.status_code == 200
    text = response.data.decode()
    assert f'racetrackd_gateway_requests_total{{job_name="{name}",job_version="1.0.0",status_code="200"}} 3.0' in text
    assert f'job_name="{name}-other"' not in text
    assert not any(request.target.endswith("/metrics") for request in server.requests)


def test_metrics_of_a_proxied_job_still_need_a_token(web: tuple[LoopClient, UpstreamServer, str]) -> None:
    client, _, _ = web

    assert client.get("/pub/job/web/latest/metrics").status_code == 401


def test_a_wrapper_jobs_probes_still_go_to_the_job(daemon: Daemons, servers: Servers) -> None:
    client = daemon()
    server = servers()
    add_job("adder", "1.0.0", addresses=[server.address])

    response = client.get("/pub/job/adder/latest/live")

    assert response.json["target"] == "/pub/job/adder/1.0.0/live"


def test_an_async_call_to_a_proxied_job_is_stored_with_the_servers_path(daemon: Daemons, servers: Servers) -> None:
    from racetrackd.db import AsyncTask

    client = daemon()
    server = servers()
    add_job("web", "1.0.0", addresses=[server.address], serving=proxied(FORWARD))

    response = client.request(
        "POST", "/pub/async/new/job/web/latest/api/v1/work?n=1", b"{}", {**AUTH, "Content-Type": "application/json"}
    )

    assert response.status_code == 201, response.data
    task: Any = AsyncTask.get_by_id(response.json["task_id"])
    assert task.target == "/work?n=1"
