"""The gateway's path and cookie handling against the real daemon and a real python3 job.

One fixture job, tests/fixtures/jobs/cookie-probe: /api/v1/perform is its public endpoint (approved
here), and its web view answers with Set-Cookie headers for the daemon's own cookies.
Item 2: an encoded slash in the version segment must not carry an anonymous call past the public
endpoint to the job's /metrics. Item 9: the browser never receives the job's daemon cookies.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator

import pytest
import requests

from tests.integration.conftest import FIXTURES, Daemon

pytestmark = [pytest.mark.integration, pytest.mark.security]

API = "/lifecycle/api/v1"
JOB = "/pub/job/cookie-probe/0.0.1"


def raw_get(
    daemon: Daemon, target: str, token: str | None = None, method: str = "GET"
) -> tuple[int, dict[str, list[str]], bytes]:
    """`target` byte for byte (no client-side quoting or dot resolution): status, headers, body."""
    host, port = daemon.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        headers = {
            "Connection": "close",
            "Content-Type": "application/json",
            **({"X-Racetrack-Auth": token} if token else {}),
        }
        connection.request(method, target, body=b"{}" if method == "POST" else None, headers=headers)
        response = connection.getresponse()
        received: dict[str, list[str]] = {}
        for name, value in response.getheaders():
            received.setdefault(name.lower(), []).append(value)
        return response.status, received, response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def cookie_probe(daemon: Daemon) -> Iterator[Daemon]:
    """The session daemon with cookie-probe deployed and its public endpoint approved."""
    daemon.rtd("submit", str(FIXTURES / "cookie-probe"), check=True)
    admin = {"X-Racetrack-Auth": daemon.token, "Connection": "close"}
    pending = requests.get(
        f"{daemon.url}{API}/auth/public-endpoints", params={"pending": "true"}, headers=admin, timeout=30
    ).json()
    [row] = [row for row in pending if row["job_name"] == "cookie-probe"]
    approved = requests.put(
        f"{daemon.url}{API}/auth/public-endpoints/{row['id']}", json={"active": True}, headers=admin, timeout=30
    )
    assert approved.status_code == 200, approved.text
    deadline = time.monotonic() + 10  # every HTTP worker's routing table picks the approval up
    while any(raw_get(daemon, f"{JOB}/api/v1/perform", method="POST")[0] != 200 for _ in range(4)):
        assert time.monotonic() < deadline, raw_get(daemon, f"{JOB}/api/v1/perform", method="POST")
        time.sleep(0.2)
    yield daemon
    requests.delete(f"{daemon.url}{API}/job/cookie-probe/0.0.1", headers=admin, timeout=60)


def test_encoded_slashes_do_not_reach_a_jobs_metrics_through_its_public_endpoint(cookie_probe: Daemon) -> None:
    metrics_status, _, metrics_body = raw_get(cookie_probe, f"{JOB}/metrics")
    status, _, body = raw_get(cookie_probe, f"{JOB}%2Fapi%2Fv1%2Fperform/metrics")
    lower, _, _ = raw_get(cookie_probe, f"{JOB}%2fapi%2fv1%2fperform/metrics")
    dotted, _, _ = raw_get(cookie_probe, f"{JOB}/api/v1/perform/%2E%2E/%2E%2E/%2E%2E/metrics")

    assert metrics_status == 401, metrics_body[:300]  # the job's metrics are not public
    assert status == 400, body[:500]
    assert b"ambiguous-path" in body and b"%2F" in body and b"# TYPE" not in body
    assert (lower, dotted) == (400, 400)


def test_a_jobs_set_cookie_for_the_daemons_cookies_never_reaches_the_browser(cookie_probe: Daemon) -> None:
    status, headers, body = raw_get(cookie_probe, f"{JOB}/api/v1/webview/", cookie_probe.token)

    assert status == 200, body[:500]
    assert body == b"cookies set"
    assert headers.get("set-cookie") == ["cookie_probe_theme=dark; Path=/pub/job/cookie-probe"]
