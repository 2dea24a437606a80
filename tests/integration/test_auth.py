"""Auth and secrets as a user sees them: tokens, grants, public endpoints, chain calls, the failed-auth
limit, and job secrets that reach builds and jobs but no image, log, registry file or API answer.

Everything runs on daemons of this module's own (`private`; `limited`, with a failure limit of 5)
so that tokens, grants and restarts stay here. Fixture jobs (tests/fixtures/jobs):

- auth-probe    deployed as 0.0.1 and 0.0.2, called with tokens holding different grants
- public-probe  asks for /api/v1/perform to be public
- chain         (with samples/adder) calls another job with its family's token
- secret-probe  needs a secret build env (PIP_FIND_LINKS: a URL with a secret path, served by
                this module's private index) to install its one requirement, and shows the
                SHA-256 of a secret runtime env value. The secret env files are written into a
                copy of the fixture under tmp_path, with random values.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.client
import io
import json
import re
import secrets
import shutil
import socket
import struct
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests

from cli.errors import EXIT_DEPLOY_FAILED
from tests.integration.conftest import FIXTURES, REPO, Daemon, _remove_labelled, launch_daemon

pytestmark = pytest.mark.integration

API = "/lifecycle/api/v1"
AUTH_PROBE = FIXTURES / "auth-probe"
PUBLIC_PROBE = FIXTURES / "public-probe"
SECRET_PROBE = FIXTURES / "secret-probe"
CHAIN = FIXTURES / "chain"
ADDER = REPO / "samples" / "adder"
PROBE_V1 = "/pub/job/auth-probe/0.0.1"
PROBE_V2 = "/pub/job/auth-probe/0.0.2"
PUBLIC = "/pub/job/public-probe/0.0.1"
SECRET_JOB = "/pub/job/secret-probe/0.0.1"
ERROR_FIELDS = {"error", "type", "job_name", "job_version", "request_id"}
REDACTED = "***"
WHEEL_PACKAGE = "rtd_secret_probe_dep"
WHEEL_VALUE = "from the private index"
FAILURE_LIMIT = 5


# --- helpers ------------------------------------------------------------------------------------


def send(daemon: Daemon, method: str, path: str, token: str | None, **kwargs: Any) -> requests.Response:
    """One request with `token` (None: no token at all), on a connection closed after the answer."""
    headers = {"Connection": "close", **kwargs.pop("headers", {})}
    if token is not None:
        headers["X-Racetrack-Auth"] = token
    return requests.request(method, daemon.url + path, headers=headers, timeout=60, **kwargs)


def admin(daemon: Daemon, method: str, path: str, **kwargs: Any) -> requests.Response:
    return send(daemon, method, path, daemon.token, **kwargs)


def created(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 201, f"{response.status_code}: {response.text}"
    return dict(response.json())


def wait_for(check: Callable[[], Any], timeout: float = 10, interval: float = 0.2) -> Any:
    """Poll until `check()` returns something truthy; return it (or the last falsy value)."""
    deadline = time.monotonic() + timeout
    result = check()
    while not result and time.monotonic() < deadline:
        time.sleep(interval)
        result = check()
    return result


def api_error(response: requests.Response, status: int, kind: str) -> dict[str, Any]:
    """A control-plane error: the status, JSON {error, type}."""
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text[:500]}"
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
    body = dict(response.json())
    assert body.get("type") == kind and body.get("error"), body
    return body


def gateway_error(response: requests.Response, status: int, kind: str) -> dict[str, Any]:
    """A gateway error: the status, JSON with the documented fields, request_id = the tracing header."""
    body = api_error(response, status, kind)
    assert ERROR_FIELDS <= body.keys(), f"the error lacks {ERROR_FIELDS - body.keys()}: {body}"
    assert body["request_id"] == response.headers.get("X-Request-Tracing-Id"), (body, response.headers)
    return body


def raw_status(daemon: Daemon, method: str, target: str, token: str | None) -> tuple[int, bytes]:
    """A request whose target goes out byte for byte (requests would resolve dot segments first)."""
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        headers = {"Content-Type": "application/json", "Connection": "close"}
        if token is not None:
            headers["X-Racetrack-Auth"] = token
        conn.request(method, target, body=b"{}" if method == "POST" else None, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def job_container(daemon: Daemon, name: str) -> Any:
    return next(c for c in daemon.containers() if c.labels.get("job-name") == name and "retiring" not in c.name)


def container_env(container: Any) -> dict[str, str]:
    container.reload()
    return dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])


def wait_until_served(daemon: Daemon, path: str, payload: Any = None, timeout: float = 20) -> None:
    """A 200 from the gateway for the admin: right after `rtd submit` returns, an HTTP worker may answer
    503 "starting" until its routing table notices the change."""
    payload = {} if payload is None else payload
    assert wait_for(
        lambda: admin(daemon, "POST", path, json=payload).status_code == 200, timeout=timeout, interval=0.1
    ), f"the gateway never served {path}: {admin(daemon, 'POST', path, json=payload).text}"


@dataclasses.dataclass
class Held:
    """Every token and secret value this module made: none may show up where the sweep looks."""

    values: dict[str, str] = dataclasses.field(default_factory=dict)

    def add(self, label: str, value: str) -> str:
        self.values[label] = value
        return value


def new_esc(daemon: Daemon, held: Held, name: str) -> tuple[str, str]:
    """An ESC and a token of it: (id, token)."""
    esc_id = created(admin(daemon, "POST", f"{API}/escs", json={"name": f"{name}-{uuid.uuid4().hex[:6]}"}))["id"]
    token = created(admin(daemon, "POST", f"{API}/escs/{esc_id}/auth_token", json={}))["token"]
    return esc_id, held.add(f"ESC {name} token", token)


def grant(daemon: Daemon, subject: str, **rule: str) -> None:
    created(admin(daemon, "POST", f"{API}/auth/grants", json={"subject": subject, "scope": "call_job", **rule}))


def perform_status(daemon: Daemon, prefix: str, token: str | None) -> int:
    return send(daemon, "POST", f"{prefix}/api/v1/perform", token, json={}).status_code


# --- the private index: a find-links page whose URL carries the secret ----------------------------


def build_wheel() -> tuple[str, bytes]:
    """A minimal pure-Python wheel of rtd-secret-probe-dep 0.1.0, made by hand."""
    dist_info = f"{WHEEL_PACKAGE}-0.1.0.dist-info"
    files = {
        f"{WHEEL_PACKAGE}/__init__.py": f"VALUE = {WHEEL_VALUE!r}\n".encode(),
        f"{dist_info}/METADATA": b"Metadata-Version: 2.1\nName: rtd-secret-probe-dep\nVersion: 0.1.0\n",
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: racetrackd-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = (
        "".join(
            f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
            for path, data in files.items()
        )
        + f"{dist_info}/RECORD,,\n"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in {**files, f"{dist_info}/RECORD": record.encode()}.items():
            wheel.writestr(path, data)
    return f"{WHEEL_PACKAGE}-0.1.0-py3-none-any.whl", buffer.getvalue()


class PrivateIndex:
    """An HTTP server answering only below a secret path, on `host`: the host's address on the build
    network (builds do not reach the host's loopback)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.secret = secrets.token_hex(16)
        self.wheel_name, self.wheel = build_wheel()
        self.paths: list[str] = []
        self.gate: threading.Event | None = None  # set: the find-links page waits for it (at most 20 s)
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(send_body=True)

            def do_HEAD(self) -> None:
                self._answer(send_body=False)

            def _answer(self, send_body: bool) -> None:
                index.paths.append(self.path)
                gate = index.gate
                if gate is not None and self.path == f"/{index.secret}/":
                    gate.wait(timeout=20)
                if self.path == f"/{index.secret}/":
                    body, kind = (
                        f'<html><body><a href="{index.wheel_name}">{index.wheel_name}</a></body></html>'.encode(),
                        "text/html",
                    )
                elif self.path == f"/{index.secret}/{index.wheel_name}":
                    body, kind = index.wheel, "application/octet-stream"
                else:
                    body, kind = b"not here", "text/plain"
                    self.send_response(404)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if send_body:
                        self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="private-index")
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.server.server_address[1]}/{self.secret}/"

    def downloads(self) -> int:
        return self.paths.count(f"/{self.secret}/{self.wheel_name}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- which HTTP worker serves a connection (the failed-auth limit) --------------------------------


def _proc_address(ip: str, port: int) -> str:
    """An IPv4 address as /proc/net/tcp writes it (the 32-bit value in host byte order, then the port)."""
    return f"{struct.unpack('<I', socket.inet_aton(ip))[0]:08X}:{port:04X}"


def serving_pid(conn: http.client.HTTPConnection, daemon_port: int) -> int | None:
    """The pid of the daemon process holding the server side of `conn` (Linux /proc; the daemon runs here)."""
    client_ip, client_port = conn.sock.getsockname()
    local, remote = _proc_address("127.0.0.1", daemon_port), _proc_address(client_ip, client_port)
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            inode = fields[9]
    if inode is None:
        return None
    wanted = f"socket:[{inode}]"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if fd.readlink().as_posix() == wanted:
                    return int(proc.name)
        except OSError:  # gone, or not ours to read
            continue
    return None


def get_on(conn: http.client.HTTPConnection, path: str, token: str) -> tuple[int, dict[str, str], bytes]:
    """GET on a kept-alive connection (so on one HTTP worker): status, headers, body."""
    conn.request("GET", path, headers={"X-Racetrack-Auth": token})
    response = conn.getresponse()
    body = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


# --- daemons and deployments ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def held() -> Held:
    return Held()


@pytest.fixture(scope="module")
def private(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, base_image: str, held: Held
) -> Iterator[Daemon]:
    handle = launch_daemon(tmp_path_factory.mktemp("auth-private"), docker_client, base_image)
    held.add("admin token", handle.token)
    try:
        yield handle
    finally:
        handle.stop()
        _remove_labelled(docker_client, handle.instance)


@pytest.fixture(scope="module")
def probes(private: Daemon) -> Daemon:
    """auth-probe 0.0.1 and 0.0.2."""
    private.rtd("submit", str(AUTH_PROBE), check=True)
    private.rtd("submit", str(AUTH_PROBE), "-e", "version=0.0.2", check=True)
    wait_until_served(private, f"{PROBE_V1}/api/v1/perform")
    wait_until_served(private, f"{PROBE_V2}/api/v1/perform")
    return private


@pytest.fixture(scope="module")
def public_probe(private: Daemon) -> Daemon:
    private.rtd("submit", str(PUBLIC_PROBE), check=True)
    wait_until_served(private, f"{PUBLIC}/api/v1/perform")
    return private


@pytest.fixture(scope="module")
def chain_jobs(private: Daemon) -> Daemon:
    private.rtd("submit", str(ADDER), check=True)
    private.rtd("submit", str(CHAIN), check=True)
    wait_until_served(private, "/pub/job/adder/latest/api/v1/perform", {"a": 1, "b": 2})
    return private


@pytest.fixture(scope="module")
def index(private: Daemon, docker_client: docker.DockerClient) -> Iterator[PrivateIndex]:
    build_network = docker_client.networks.get(private.env.get("RACETRACK_NETWORK", "racetrack") + "-build")
    server = PrivateIndex(build_network.attrs["IPAM"]["Config"][0]["Gateway"])
    try:
        yield server
    finally:
        server.close()


@dataclasses.dataclass
class SecretJob:
    daemon: Daemon
    index: PrivateIndex
    runtime_secret: str
    submit_output: str

    @property
    def values(self) -> dict[str, str]:
        """Each secret value, and the secret part of the build one on its own."""
        return {
            "runtime secret": self.runtime_secret,
            "build secret (PIP_FIND_LINKS)": self.index.url,
            "secret path of the private index": self.index.secret,
        }

    def expected(self) -> dict[str, Any]:
        return {
            "runtime_secret_sha256": hashlib.sha256(self.runtime_secret.encode()).hexdigest(),
            "dependency": WHEEL_VALUE,
            "build_secret_at_runtime": False,
        }

    def perform(self) -> requests.Response:
        return admin(self.daemon, "POST", f"{SECRET_JOB}/api/v1/perform", json={})


@pytest.fixture(scope="module")
def secret_job(private: Daemon, index: PrivateIndex, tmp_path_factory: pytest.TempPathFactory, held: Held) -> SecretJob:
    """secret-probe deployed from a copy of its fixture with both secret env files written in."""
    source = tmp_path_factory.mktemp("secret-probe") / "secret-probe"
    shutil.copytree(SECRET_PROBE, source)
    runtime_secret = secrets.token_hex(24)
    # pip trusts plain http on localhost only: builds reach the index at the build network's gateway
    (source / "secret-build.env").write_text(
        f"# the private index\nPIP_FIND_LINKS={index.url}\nPIP_TRUSTED_HOST={index.host}\n"
    )
    (source / "secret-runtime.env").write_text(f'export RUNTIME_SECRET="{runtime_secret}"\n')
    job = SecretJob(private, index, runtime_secret, "")
    for label, value in job.values.items():
        held.add(label, value)
    result = private.rtd("submit", str(source), check=True)
    job.submit_output = result.stdout + result.stderr
    wait_until_served(private, f"{SECRET_JOB}/api/v1/perform")
    return job


# --- 1. no token, a wrong token -------------------------------------------------------------------


def test_no_token_or_a_wrong_one_is_401_json_on_the_api_and_the_gateway(probes: Daemon) -> None:
    wrong = f"rtd_{secrets.token_urlsafe(32)}"

    api_none = send(probes, "GET", f"{API}/job", None)
    api_wrong = send(probes, "GET", f"{API}/job", wrong)
    api_wrong_cookie = requests.get(f"{probes.url}{API}/job", cookies={"X-Racetrack-Auth": wrong}, timeout=30)
    pub_none = send(probes, "POST", f"{PROBE_V1}/api/v1/perform", None, json={})
    pub_wrong = send(probes, "POST", f"{PROBE_V1}/api/v1/perform", wrong, json={})
    pub_legacy = send(
        probes, "POST", f"{PROBE_V1}/api/v1/perform", None, json={}, headers={"X-Racetrack-Esc-Auth": wrong}
    )
    pub_docs = send(probes, "GET", f"{PROBE_V1}/docs", None)

    assert "missing" in api_error(api_none, 401, "unauthorized")["error"]
    assert "invalid" in api_error(api_wrong, 401, "unauthorized")["error"]
    api_error(api_wrong_cookie, 401, "unauthorized")
    for response in (pub_none, pub_wrong, pub_legacy, pub_docs):
        body = gateway_error(response, 401, "unauthorized")
        assert (body["job_name"], body["job_version"]) == ("auth-probe", "0.0.1"), body
    assert wrong not in api_wrong.text + pub_wrong.text, "an error must not echo the token it refused"
    # The job's probes stay open (orchestrators call them without tokens); the admin gets through.
    assert send(probes, "GET", f"{PROBE_V1}/health", None).status_code == 200
    assert admin(probes, "GET", f"{API}/job").status_code == 200
    assert admin(probes, "POST", f"{PROBE_V1}/api/v1/perform", json={}).json()["caller"] == "admin"


# --- 2, 3. grants -----------------------------------------------------------------------------------


def test_a_token_without_call_job_gets_403_naming_the_scope(probes: Daemon, held: Held) -> None:
    esc_id, token = new_esc(probes, held, "no-grants")

    response = send(probes, "POST", f"{PROBE_V1}/api/v1/perform", token, json={})

    body = gateway_error(response, 403, "forbidden")
    assert "call_job" in body["error"], body
    assert esc_id in body["error"] + body.get("hint", ""), f"the 403 should name the caller: {body}"
    assert (body["job_name"], body["job_version"]) == ("auth-probe", "0.0.1")


def test_a_family_grant_covers_every_version_of_that_family_only(
    probes: Daemon, public_probe: Daemon, held: Held
) -> None:
    esc_id, token = new_esc(probes, held, "family")
    grant(probes, f"esc:{esc_id}", job_name="auth-probe")

    v1 = send(probes, "POST", f"{PROBE_V1}/api/v1/perform", token, json={})
    v2 = send(probes, "POST", f"{PROBE_V2}/api/v1/perform", token, json={})
    latest = send(probes, "POST", "/pub/job/auth-probe/latest/api/v1/perform", token, json={})
    other_endpoint = send(probes, "POST", f"{PROBE_V1}/api/v1/other", token, json={})
    other_family = send(probes, "GET", f"{PUBLIC}/api/v1/private", token)

    assert v1.status_code == 200 and v1.json()["version"] == "0.0.1", v1.text
    assert v2.status_code == 200 and v2.json()["version"] == "0.0.2", v2.text
    assert latest.status_code == 200, latest.text
    assert v1.json()["caller"] == f"ESC {esc_id}", "the job should learn which ESC called"
    assert other_endpoint.status_code == 200, other_endpoint.text
    assert "call_job" in gateway_error(other_family, 403, "forbidden")["error"]


def test_a_version_grant_covers_that_version_only(probes: Daemon, held: Held) -> None:
    esc_id, token = new_esc(probes, held, "version")
    grant(probes, f"esc:{esc_id}", job_name="auth-probe", job_version="0.0.1")

    v1 = send(probes, "POST", f"{PROBE_V1}/api/v1/perform", token, json={})
    v2 = send(probes, "POST", f"{PROBE_V2}/api/v1/perform", token, json={})
    latest = send(probes, "POST", "/pub/job/auth-probe/latest/api/v1/perform", token, json={})  # resolves to 0.0.2

    assert v1.status_code == 200 and v1.json()["version"] == "0.0.1", v1.text
    assert "call_job" in gateway_error(v2, 403, "forbidden")["error"]
    assert "auth-probe 0.0.2" in gateway_error(latest, 403, "forbidden")["error"], "the 403 names the resolved version"


def test_an_endpoint_grant_covers_that_endpoint_only(probes: Daemon, held: Held) -> None:
    esc_id, token = new_esc(probes, held, "endpoint")
    grant(probes, f"esc:{esc_id}", job_name="auth-probe", endpoint="/api/v1/perform")

    allowed = [send(probes, "POST", f"{prefix}/api/v1/perform", token, json={}) for prefix in (PROBE_V1, PROBE_V2)]
    others = {
        "/api/v1/other": send(probes, "POST", f"{PROBE_V1}/api/v1/other", token, json={}),
        "/api/v1/parameters": send(probes, "GET", f"{PROBE_V1}/api/v1/parameters", token),
        "/docs": send(probes, "GET", f"{PROBE_V1}/docs", token),
        "/api/v1/performx": send(probes, "POST", f"{PROBE_V1}/api/v1/performx", token, json={}),
    }
    dotted, dotted_body = raw_status(probes, "POST", f"{PROBE_V1}/api/v1/perform/%2e%2e/other", token)
    dotted_plain, dotted_plain_body = raw_status(probes, "POST", f"{PROBE_V1}/api/v1/perform/../other", token)

    assert [r.status_code for r in allowed] == [200, 200], [r.text for r in allowed]
    for endpoint, response in others.items():
        assert response.status_code == 403, f"{endpoint}: {response.status_code} {response.text[:300]}"
        assert "call_job" in gateway_error(response, 403, "forbidden")["error"]
    assert dotted == 400, f"a dot segment must not carry the grant to /api/v1/other: {dotted} {dotted_body[:300]!r}"
    assert dotted_plain == 400, f"{dotted_plain} {dotted_plain_body[:300]!r}"


# --- 4. public endpoints ------------------------------------------------------------------------------


def test_a_public_endpoint_opens_only_once_approved_and_only_itself(public_probe: Daemon) -> None:
    daemon = public_probe
    before = send(daemon, "POST", f"{PUBLIC}/api/v1/perform", None, json={})
    pending = admin(daemon, "GET", f"{API}/auth/public-endpoints", params={"pending": "true"})
    listed_for_job = admin(daemon, "GET", f"{API}/job/public-probe/0.0.1/public-endpoints")

    gateway_error(before, 401, "unauthorized")
    assert pending.status_code == 200, pending.text
    requests_for_job = [row for row in pending.json() if row["job_name"] == "public-probe"]
    assert [(r["job_version"], r["endpoint"], r["active"]) for r in requests_for_job] == [
        ("0.0.1", "/api/v1/perform", False)
    ], pending.json()
    assert listed_for_job.json() == [], "an endpoint waiting for approval is not public yet"

    approved = admin(daemon, "PUT", f"{API}/auth/public-endpoints/{requests_for_job[0]['id']}", json={"active": True})
    assert approved.status_code == 200 and approved.json()["active"] is True, approved.text

    # Each HTTP worker's routing table notices the approval within a quarter of a second.
    def anonymous() -> list[requests.Response]:  # four calls: both HTTP workers answer some
        return [send(daemon, "POST", f"{PUBLIC}/api/v1/perform", None, json={}) for _ in range(4)]

    opened = wait_for(lambda: all(r.status_code == 200 for r in anonymous()), timeout=5, interval=0.1)
    assert opened, [r.text for r in anonymous()]
    assert [(r.status_code, r.json()) for r in anonymous()] == [(200, "public answer")] * 4
    with_a_wrong_token = send(daemon, "POST", f"{PUBLIC}/api/v1/perform", "rtd_wrong", json={})
    assert with_a_wrong_token.status_code == 200, "an open endpoint needs no token, good or bad"
    for path in ("/api/v1/private", "/api/v1/parameters", "/docs", "/api/v1/performance"):
        gateway_error(send(daemon, "GET", f"{PUBLIC}{path}", None), 401, "unauthorized")
    dotted, _ = raw_status(daemon, "POST", f"{PUBLIC}/api/v1/perform/%2e%2e/private", None)
    assert dotted == 400, "a dot segment must not carry the public endpoint over to another one"
    still_pending = admin(daemon, "GET", f"{API}/auth/public-endpoints", params={"pending": "true"}).json()
    assert not [row for row in still_pending if row["job_name"] == "public-probe"], still_pending
    assert [r["endpoint"] for r in admin(daemon, "GET", f"{API}/job/public-probe/0.0.1/public-endpoints").json()] == [
        "/api/v1/perform"
    ]

    closed = admin(daemon, "PUT", f"{API}/auth/public-endpoints/{requests_for_job[0]['id']}", json={"active": False})
    assert closed.status_code == 200, closed.text
    assert wait_for(lambda: all(r.status_code == 401 for r in anonymous()), timeout=5, interval=0.1), (
        "closing a public endpoint again should need a token again"
    )


# --- 5. users, revoked and expired tokens -------------------------------------------------------------


def test_a_users_token_works_until_revoked_and_not_one_call_longer(probes: Daemon, held: Held) -> None:
    username = f"revoked-{uuid.uuid4().hex[:6]}"
    created(admin(probes, "POST", f"{API}/users", json={"username": username}))
    issued = created(admin(probes, "POST", f"{API}/users/{username}/tokens", json={"description": "to revoke"}))
    token = held.add("user token (revoked)", issued["token"])

    # Several calls each: both HTTP workers know (and cache) the token before it is revoked.
    before = [send(probes, "GET", f"{API}/job", token).status_code for _ in range(4)]
    called = [send(probes, "POST", f"{PROBE_V1}/api/v1/perform", token, json={}) for _ in range(4)]
    listed = admin(probes, "GET", f"{API}/users/{username}/tokens").json()
    revoked = admin(probes, "DELETE", f"{API}/auth/tokens/{issued['id']}")
    api_after = [send(probes, "GET", f"{API}/job", token) for _ in range(4)]
    pub_after = [send(probes, "POST", f"{PROBE_V1}/api/v1/perform", token, json={}) for _ in range(4)]

    assert before == [200] * 4
    assert [r.status_code for r in called] == [200] * 4
    assert called[0].json()["caller"] == username
    assert [row["id"] for row in listed] == [issued["id"]] and "token" not in listed[0], listed
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True, revoked.text
    for response in api_after:
        api_error(response, 401, "unauthorized")
    for response in pub_after:
        gateway_error(response, 401, "unauthorized")


def test_a_token_that_expires_stops_working_when_it_expires(probes: Daemon, held: Held) -> None:
    username = f"expiring-{uuid.uuid4().hex[:6]}"
    created(admin(probes, "POST", f"{API}/users", json={"username": username}))
    issued = created(admin(probes, "POST", f"{API}/users/{username}/tokens", json={"expires_in": 2}))
    token = held.add("user token (expiring)", issued["token"])

    api_before = send(probes, "GET", f"{API}/job", token)
    pub_before = send(probes, "POST", f"{PROBE_V1}/api/v1/perform", token, json={})
    wait = issued["expiry_time"] + 1 - time.time()
    assert wait < 3, "the token should expire about 2 s after it was made"
    time.sleep(max(0.0, wait))
    api_after = send(probes, "GET", f"{API}/job", token)
    pub_after = send(probes, "POST", f"{PROBE_V1}/api/v1/perform", token, json={})

    assert api_before.status_code == 200, api_before.text
    assert pub_before.status_code == 200, pub_before.text
    api_error(api_after, 401, "unauthorized")
    gateway_error(pub_after, 401, "unauthorized")
    listed = admin(probes, "GET", f"{API}/users/{username}/tokens").json()
    assert [(row["expired"], row["active"]) for row in listed] == [(True, False)], listed


def test_a_password_login_gives_a_token_and_a_cookie_that_stop_at_logout(probes: Daemon, held: Held) -> None:
    username = f"carol-{uuid.uuid4().hex[:6]}"
    password = held.add("user password", secrets.token_urlsafe(18))
    created(admin(probes, "POST", f"{API}/users", json={"username": username, "password": password}))

    wrong = requests.post(
        f"{probes.url}{API}/users/login", json={"username": username, "password": "not-" + password}, timeout=30
    )
    with requests.Session() as session:
        session.headers["Connection"] = "close"  # no kept-alive connection to hold up a daemon being stopped
        login = session.post(
            f"{probes.url}{API}/users/login", json={"username": username, "password": password}, timeout=30
        )
        assert login.status_code == 200, login.text
        token = held.add("login token", login.json()["token"])
        by_cookie = session.post(f"{probes.url}{PROBE_V1}/api/v1/perform", json={}, timeout=30)
        by_header = send(probes, "GET", f"{API}/job", token)
        logout = session.post(f"{probes.url}{API}/users/logout", timeout=30)
        after = send(probes, "GET", f"{API}/job", token)
        cookie_after = session.cookies.get("X-Racetrack-Auth")

    api_error(wrong, 401, "unauthorized")
    assert password not in wrong.text
    assert cookie_after is None, "logout should clear the cookie"
    assert by_cookie.status_code == 200 and by_cookie.json()["caller"] == username, by_cookie.text
    assert by_header.status_code == 200, by_header.text
    assert logout.status_code == 200, logout.text
    api_error(after, 401, "unauthorized")


# --- 6. chain calls -------------------------------------------------------------------------------------


def test_a_chain_call_needs_a_grant_from_family_to_family(chain_jobs: Daemon) -> None:
    daemon = chain_jobs
    denied = admin(daemon, "POST", "/pub/job/chain/latest/api/v1/perform", json={"a": 40, "b": 2})

    assert denied.status_code == 500, denied.text  # the job's own error: its call_job raised
    error = denied.json()["error"]
    assert "403" in error and "call_job" in error and "chain" in error, error

    granted = admin(daemon, "POST", f"{API}/auth/allow/job_family/chain/job/adder/scope/call_job")
    assert granted.status_code == 201, granted.text
    allowed = admin(daemon, "POST", "/pub/job/chain/latest/api/v1/perform", json={"a": 40, "b": 2})

    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["answer"] == 42
    family_token = container_env(job_container(daemon, "chain"))["AUTH_TOKEN"]
    assert family_token and family_token != daemon.token
    # The family's token is for calling jobs, not for managing the daemon.
    api_error(send(daemon, "POST", f"{API}/escs", family_token, json={"name": "from-a-job"}), 403, "forbidden")


# --- 8. secrets: the build has them, the image does not ---------------------------------------------------


def test_a_first_deploy_without_its_secret_files_is_refused_by_name(private: Daemon, tmp_path: Path) -> None:
    source = tmp_path / "secret-probe"
    shutil.copytree(SECRET_PROBE, source)

    result = private.rtd("submit", str(source), "-e", "version=0.9.0")

    assert result.returncode != 0, result.stdout
    assert "secret_build_env_file" in result.stderr and "not found" in result.stderr, result.stderr
    assert "no earlier deployment" in result.stderr, result.stderr
    assert admin(private, "GET", f"{API}/job/secret-probe/0.9.0").status_code == 404


def test_without_the_right_build_secret_the_build_fails(
    private: Daemon, index: PrivateIndex, tmp_path: Path, held: Held
) -> None:
    """The fixture's one requirement is only below the index's secret path: a wrong one fails the build."""
    source = tmp_path / "secret-probe"
    shutil.copytree(SECRET_PROBE, source)
    wrong = held.add("wrong build secret", secrets.token_hex(16))
    port = index.server.server_address[1]
    (source / "secret-build.env").write_text(
        f"PIP_FIND_LINKS=http://{index.host}:{port}/{wrong}/\nPIP_TRUSTED_HOST={index.host}\n"
    )
    (source / "secret-runtime.env").write_text(
        f"RUNTIME_SECRET={held.add('unused runtime secret', secrets.token_hex(16))}\n"
    )
    downloads = index.downloads()

    result = private.rtd("submit", str(source), "-e", "version=0.9.1")

    output = result.stdout + result.stderr
    assert result.returncode == EXIT_DEPLOY_FAILED, output
    assert "No matching distribution found for rtd-secret-probe-dep" in output, output[-3000:]
    assert f"/{wrong}/" in index.paths, "the build should have looked where its (wrong) secret pointed"
    assert index.downloads() == downloads
    assert wrong not in output, "rtd showed the build output with the secret in it"
    assert admin(private, "GET", f"{API}/job/secret-probe/0.9.1").status_code == 404


def test_a_build_secret_reaches_the_build_but_not_the_image(secret_job: SecretJob) -> None:
    daemon, index = secret_job.daemon, secret_job.index
    answer = secret_job.perform()
    record = admin(daemon, "GET", f"{API}/job/secret-probe/0.0.1").json()
    image = daemon.docker.images.get(record["image_tag"])
    history = "\n".join(str(layer.get("CreatedBy", "")) for layer in image.history())
    container = job_container(daemon, "secret-probe")

    # The build had the secret: pip found the package at the secret URL, and only there.
    assert index.downloads() >= 1, f"the build never fetched the wheel from the secret path: {index.paths}"
    assert answer.status_code == 200, answer.text
    assert answer.json() == secret_job.expected()
    # ...and the image does not: not in its history, its config, its files.
    for label, value in secret_job.values.items():
        assert value not in history, f"the {label} is in docker history:\n{history}"
        assert value not in json.dumps(image.attrs), f"the {label} is in the image's config"
    assert "with-build-secrets.py" in history, history
    url = re.search(r"http://\S+/lifecycle/api/v1/build-secrets/\S+", history)
    assert url, f"the requirements step should fetch its secrets from the daemon:\n{history}"
    late = requests.get(url.group(0), timeout=10)
    assert late.status_code == 404, f"the URL in the history must be worth nothing after the build: {late.text}"
    assert index.secret not in late.text
    listing = container.exec_run(["ls", "-a", "/src/job"], user="root").output.decode()
    assert "entrypoint.py" in listing, listing
    assert "secret-build.env" not in listing and "secret-runtime.env" not in listing, listing
    found = container.exec_run(
        [
            "grep",
            "-rlF",
            "--exclude-dir=proc",
            "--exclude-dir=sys",
            "--exclude-dir=dev",
            "-e",
            index.secret,
            "-e",
            secret_job.runtime_secret,
            "/",
        ],
        user="root",
    )
    assert found.exit_code == 1 and not found.output.strip(), (
        f"secret values in the job's file system (grep exit {found.exit_code}): {found.output.decode()[:500]}"
    )
    # rtd showed the build output, with the secret masked.
    for label, value in secret_job.values.items():
        assert value not in secret_job.submit_output, f"rtd submit printed the {label}"


def test_the_build_and_job_logs_the_api_shows_have_secrets_masked(secret_job: SecretJob) -> None:
    daemon = secret_job.daemon
    announced = admin(daemon, "POST", f"{SECRET_JOB}/api/v1/announce", json={})
    assert announced.status_code == 200, announced.text
    container = job_container(daemon, "secret-probe")
    assert wait_for(lambda: secret_job.runtime_secret.encode() in container.logs(), timeout=5), (
        "the job should have printed its secret (the raw container log is what is masked below)"
    )

    build_logs = admin(daemon, "GET", f"{API}/job/secret-probe/0.0.1/build-logs").json()["logs"]
    job_logs = admin(daemon, "GET", f"{API}/job/secret-probe/0.0.1/logs", params={"tail": 200}).json()["logs"]
    job_logs_plain = admin(daemon, "GET", f"{API}/job/secret-probe/0.0.1/logs/plain", params={"tail": 200}).text

    assert "rtd-secret-probe-dep" in build_logs.replace("_", "-"), build_logs[-2000:]
    assert f"Looking in links: {REDACTED}" in build_logs, "pip's line naming the secret URL should be masked"
    assert f"the runtime secret is {REDACTED}" in job_logs, job_logs[-2000:]
    assert f"the runtime secret is {REDACTED}" in job_logs_plain
    for label, value in secret_job.values.items():
        for name, text in (("build log", build_logs), ("job log", job_logs), ("plain job log", job_logs_plain)):
            assert value not in text, f"the {label} is in the {name} the API returns"


# --- 9. secrets are kept: restart, redeploy without them, a recreated container ------------------------------


def test_secrets_survive_a_restart_a_redeploy_without_them_and_a_lost_container(
    secret_job: SecretJob, tmp_path: Path
) -> None:
    daemon, index = secret_job.daemon, secret_job.index
    expected = secret_job.expected()
    first = job_container(daemon, "secret-probe")

    # A restart, with the job's container gone meanwhile: the start-up reconcile brings it back from
    # its image, with the secrets the daemon keeps sealed.
    daemon.stop()
    first.remove(force=True)
    daemon.start()
    came_back = wait_for(lambda: secret_job.perform().status_code == 200, timeout=90, interval=0.5)
    assert came_back, secret_job.perform().text
    assert secret_job.perform().json() == expected
    assert job_container(daemon, "secret-probe").id != first.id

    # A redeploy from a directory without the secret files: rtd warns and sends none; the daemon
    # reuses those of the version's last deployment. A changed requirements file makes the step
    # that needs the build secret run again.
    source = tmp_path / "secret-probe"
    shutil.copytree(SECRET_PROBE, source)
    with (source / "requirements.txt").open("a") as requirements:
        requirements.write(f"# redeployed {uuid.uuid4().hex}\n")
    downloads = index.downloads()
    result = daemon.rtd("submit", "--force", str(source), check=True)

    assert "sending no secrets" in result.stderr, result.stderr
    assert index.downloads() > downloads, "the rebuilt requirements step should have used the kept build secret"
    wait_until_served(daemon, f"{SECRET_JOB}/api/v1/perform")
    assert secret_job.perform().json() == expected

    # The container lost while the daemon runs: the supervisor starts a new one, secrets and all.
    second = job_container(daemon, "secret-probe")
    second.remove(force=True)

    def recreated() -> bool:
        try:
            return job_container(daemon, "secret-probe").id != second.id and secret_job.perform().status_code == 200
        except StopIteration:
            return False

    assert wait_for(recreated, timeout=90, interval=0.5), secret_job.perform().text
    assert secret_job.perform().json() == expected


def test_a_reader_of_the_build_log_cannot_fetch_the_build_secrets_during_a_rebuild(
    secret_job: SecretJob, tmp_path: Path, held: Held
) -> None:
    daemon, index = secret_job.daemon, secret_job.index
    # A user with the default grants (read_job, call_job, deploy...), who never had the secrets.
    username = f"reader-{uuid.uuid4().hex[:6]}"
    created(admin(daemon, "POST", f"{API}/users", json={"username": username}))
    reader = held.add(
        "user token (reader)", created(admin(daemon, "POST", f"{API}/users/{username}/tokens", json={}))["token"]
    )
    # (Preconditions fail the test with pytest.fail: only an AssertionError counts as the expected failure.)
    build_log = send(daemon, "GET", f"{API}/job/secret-probe/0.0.1/build-logs", reader)
    if build_log.status_code != 200:
        pytest.fail(f"a reader should see the build log: {build_log.text}")
    url = re.search(r"http://\S+/lifecycle/api/v1/build-secrets/\S+", build_log.json()["logs"])
    if not url:
        pytest.fail("the RUN line in the build log should name the URL the build fetches its secrets from")
    if requests.get(url.group(0), timeout=10).status_code != 404:
        pytest.fail("no build is running: the URL should give nothing")

    # The admin rebuilds the version with the same secrets (from a directory with the secret files, and a
    # changed requirements file so the step that uses them runs); the private index holds pip back a moment.
    source = tmp_path / "secret-probe"
    shutil.copytree(SECRET_PROBE, source)
    (source / "secret-build.env").write_text(f"PIP_FIND_LINKS={index.url}\nPIP_TRUSTED_HOST={index.host}\n")
    (source / "secret-runtime.env").write_text(f"RUNTIME_SECRET={secret_job.runtime_secret}\n")
    with (source / "requirements.txt").open("a") as requirements:
        requirements.write(f"# rebuilt {uuid.uuid4().hex}\n")
    asked = len(index.paths)
    results: list[Any] = []
    index.gate = threading.Event()
    rebuild = threading.Thread(target=lambda: results.append(daemon.rtd("submit", "--force", str(source))))
    rebuild.start()
    try:
        in_step = wait_for(lambda: f"/{index.secret}/" in index.paths[asked:], timeout=120, interval=0.1)
        fetched = requests.get(url.group(0), timeout=10) if in_step else None
    finally:
        index.gate.set()
        rebuild.join(timeout=300)
        index.gate = None
    if not in_step or fetched is None:
        pytest.fail(f"the rebuild never reached its requirements step: {results}")
    if not (results and results[0].returncode == 0):
        pytest.fail(f"the rebuild failed: {results}")
    wait_until_served(daemon, f"{SECRET_JOB}/api/v1/perform")

    assert fetched.status_code in (401, 403, 404) and index.secret not in fetched.text, (
        f"anyone who read the build log got the secret build env: {fetched.status_code} {fetched.text[:40]}..."
    )


# --- 7. no token or secret in plain text anywhere the daemon writes or answers ---------------------------


def test_no_token_or_secret_in_the_registry_logs_or_api_answers(
    private: Daemon, probes: Daemon, chain_jobs: Daemon, secret_job: SecretJob, held: Held
) -> None:
    daemon = private
    # One more of each kind of token, used once, so that each has passed through every layer.
    username = f"sweep-{uuid.uuid4().hex[:6]}"
    created(admin(daemon, "POST", f"{API}/users", json={"username": username}))
    user_token = held.add(
        "user token", created(admin(daemon, "POST", f"{API}/users/{username}/tokens", json={}))["token"]
    )
    assert send(daemon, "POST", f"{PROBE_V1}/api/v1/perform", user_token, json={}).status_code == 200
    _, esc_token = new_esc(daemon, held, "sweep")
    assert send(daemon, "POST", f"{PROBE_V1}/api/v1/perform", esc_token, json={}).status_code == 403
    family_tokens = {}
    for container in daemon.containers():
        token = container_env(container).get("AUTH_TOKEN")
        if token:
            family_tokens[f"job family token of {container.labels.get('job-name')}"] = token
    assert {"job family token of secret-probe", "job family token of chain"} <= family_tokens.keys(), family_tokens
    wanted = {**held.values, **family_tokens}

    # What the daemon wrote: the registry (with its WAL), its log, everything else in DATA_DIR but its key.
    files = [path for path in daemon.data_dir.rglob("*") if path.is_file() and path.name != "secret-key"]
    assert {"registry.sqlite3", "daemon.log"} <= {path.name for path in files}, files
    # What the API answers about jobs, deployments and subjects.
    pages = [
        f"{API}/job",
        f"{API}/deploy?limit=100",
        f"{API}/audit/activity",
        f"{API}/auth/tokens?all=true",
        f"{API}/auth/grants",
        f"{API}/users",
        f"{API}/escs",
        f"{API}/auth/public-endpoints",
    ]
    for job in admin(daemon, "GET", f"{API}/job").json():
        base = f"{API}/job/{job['name']}/{job['version']}"
        pages += [
            base,
            f"{base}/build-logs",
            f"{base}/build-logs/plain",
            f"{base}/logs?tail=1000",
            f"{base}/logs/plain?tail=1000",
        ]
    for deployment in admin(daemon, "GET", f"{API}/deploy?limit=100").json():
        pages += [f"{API}/deploy/{deployment['id']}", f"{API}/deploy/{deployment['id']}/build-logs"]
    answers = {}
    for page in pages:
        response = admin(daemon, "GET", page)
        assert response.status_code == 200, f"{page}: {response.status_code} {response.text[:300]}"
        answers[f"GET {page}"] = response.content

    leaks = []
    for path in files:
        data = path.read_bytes()
        leaks += [
            f"{label} in {path.relative_to(daemon.data_dir)}"
            for label, value in wanted.items()
            if value.encode() in data
        ]
    for where, data in answers.items():
        leaks += [f"{label} in {where}" for label, value in wanted.items() if value.encode() in data]
    assert not leaks, "\n".join(leaks)


# --- 10. the failed-auth limit --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, base_image: str
) -> Iterator[Daemon]:
    """A daemon that allows 5 failed auth attempts per client address and minute."""
    handle = launch_daemon(
        tmp_path_factory.mktemp("auth-limited"),
        docker_client,
        base_image,
        RACETRACK_AUTH_FAILURE_LIMIT=str(FAILURE_LIMIT),
    )
    try:
        # /ready answers once one HTTP worker serves; the tests want both serving (each prints this line).
        listening = f"ASGI server listening on {handle.url}"
        assert wait_for(lambda: handle.log_path.read_text().count(listening) >= 2, timeout=30), (
            handle.log_path.read_text()
        )
        yield handle
    finally:
        handle.stop()
        _remove_labelled(docker_client, handle.instance)


def _connection(daemon: Daemon, source: str) -> http.client.HTTPConnection:
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30, source_address=(source, 0))
    conn.connect()
    return conn


def test_past_the_failure_limit_an_address_gets_429_but_valid_tokens_still_work(limited: Daemon) -> None:
    """All on one kept-alive connection (one HTTP worker), from an address of its own (127.0.0.2)."""
    conn = _connection(limited, "127.0.0.2")
    unused_token = created(admin(limited, "POST", f"{API}/users/admin/tokens", json={}))["token"]
    try:
        known = get_on(conn, f"{API}/job", limited.token)
        failures = [get_on(conn, f"{API}/job", f"rtd_wrong_{index}") for index in range(FAILURE_LIMIT)]
        locked = get_on(conn, f"{API}/job", "rtd_wrong_again")
        locked_gateway = get_on(conn, f"/pub/async/task/{uuid.uuid4()}/status", "rtd_wrong_gateway")
        still_known = get_on(conn, f"{API}/job", limited.token)
        not_known_yet = get_on(conn, f"{API}/job", unused_token)
    finally:
        conn.close()
    elsewhere = send(limited, "GET", f"{API}/job", "rtd_wrong_elsewhere")  # from 127.0.0.1

    assert known[0] == 200
    assert [status for status, _, _ in failures] == [401] * FAILURE_LIMIT, failures
    status, headers, body = locked
    assert status == 429, (status, body)
    assert json.loads(body)["type"] == "too-many-auth-failures"
    assert 1 <= int(headers["retry-after"]) <= 61, headers
    status, headers, body = locked_gateway
    assert status == 429, (status, body)
    assert json.loads(body)["type"] == "too-many-auth-failures" and "retry-after" in headers, (headers, body)
    assert still_known[0] == 200, f"a token used before the lockout should keep working: {still_known}"
    assert not_known_yet[0] == 200, "a valid token is never refused, even one not seen before the lockout"
    api_error(elsewhere, 401, "unauthorized")  # another address is not locked out


def test_a_known_token_keeps_working_through_a_lockout_when_an_admin_changes_something(limited: Daemon) -> None:
    """One kept-alive connection from 127.0.0.4: the admin's token is known, then the address is locked
    out; meanwhile an admin (elsewhere) creates a user. The known token must keep working."""
    conn = _connection(limited, "127.0.0.4")
    try:
        known = get_on(conn, f"{API}/job", limited.token)[0]
        failures = [get_on(conn, f"{API}/job", f"rtd_wrong_c{index}")[0] for index in range(FAILURE_LIMIT)]
        locked = get_on(conn, f"{API}/job", "rtd_wrong_c_next")[0]
        before_change = get_on(conn, f"{API}/job", limited.token)[0]
        created(admin(limited, "POST", f"{API}/users", json={"username": f"new-{uuid.uuid4().hex[:6]}"}))
        after_change = get_on(conn, f"{API}/job", limited.token)
    finally:
        conn.close()

    assert (known, failures, locked, before_change) == (200, [401] * FAILURE_LIMIT, 429, 200)
    assert after_change[0] == 200, f"the known token was locked out after an unrelated change: {after_change}"


def test_the_failure_limit_counts_every_attempt_of_an_address_whichever_worker_serves_it(limited: Daemon) -> None:
    """RACETRACK_AUTH_FAILURE_LIMIT is "failed auth attempts one client address may make per window"
    (README, the setting's help). One kept-alive connection on each
    HTTP worker (found through /proc), from an address of its own (127.0.0.3): the limit's attempts are
    spread over both, then the next attempt on either must be 429."""
    port = int(limited.url.rsplit(":", 1)[1])
    by_worker: dict[int, http.client.HTTPConnection] = {}
    spare: list[http.client.HTTPConnection] = []
    try:
        for _ in range(60):
            if len(by_worker) == 2:
                break
            conn = _connection(limited, "127.0.0.3")
            if get_on(conn, f"{API}/job", limited.token)[0] != 200:
                pytest.fail("the admin's token should work")
            pid = serving_pid(conn, port)
            if pid is None:
                pytest.skip("cannot tell which daemon process serves a connection (no /proc/net/tcp entry)")
            if pid in by_worker:
                spare.append(conn)  # kept open: the kernel then hands new connections to the other worker
            else:
                by_worker[pid] = conn
        if len(by_worker) != 2:
            pytest.skip(f"60 connections all reached the same HTTP worker: {list(by_worker)}")
        first, second = by_worker.values()

        failures = [get_on(first, f"{API}/job", f"rtd_wrong_a{index}")[0] for index in range(3)]
        failures += [get_on(second, f"{API}/job", f"rtd_wrong_b{index}")[0] for index in range(FAILURE_LIMIT - 3)]
        next_on_second = get_on(second, f"{API}/job", "rtd_wrong_b_next")[0]
        next_on_first = get_on(first, f"{API}/job", "rtd_wrong_a_next")[0]
    finally:
        for conn in [*by_worker.values(), *spare]:
            conn.close()

    assert failures == [401] * FAILURE_LIMIT
    assert (next_on_second, next_on_first) == (429, 429), (
        f"attempt {FAILURE_LIMIT + 1} and on of one address should be 429 on every worker: {next_on_second}, {next_on_first}"
    )
