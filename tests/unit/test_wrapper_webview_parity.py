"""Webviews side by side with Racetrack's runner: tests/fixtures/webview-parity is one webview job
(a Flask WSGI app routing base_url + '/postme', a redirect, ./static; and an ASGI app echoing the
paths it is given). racetrack-job-runner's answers to it are recorded in
racetrack-job-runner.json by record_racetrack_runner.py there (Racetrack's runner is also the
package `racetrack_job_wrapper`: it cannot be imported beside ours). Each recorded request is
replayed against racetrackd's wrapper in-process: status, body and Location must be the same."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.unit.asgi_client import AsgiClient

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "webview-parity"
RECORDED = json.loads((FIXTURE / "racetrack-job-runner.json").read_text())
ANSWERS: list[dict[str, Any]] = RECORDED["answers"]


@pytest.fixture
def client_for(wrapper_app: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], AsgiClient]:
    job = tmp_path / "job"
    shutil.copytree(FIXTURE, job)
    monkeypatch.chdir(job)  # ./static is served from the working directory, as in the image
    monkeypatch.setenv("JOB_NAME", "webview-parity")
    monkeypatch.setenv("JOB_VERSION", "1.0.0")
    clients: dict[str, AsgiClient] = {}

    def client_for(job_class: str) -> AsgiClient:
        if job_class not in clients:
            app = wrapper_app.JobApp("entrypoint.py", job_class, wrapper_app.WrapperOptions())
            app.load()
            assert app.init_error is None
            clients[job_class] = AsgiClient(app)
        return clients[job_class]

    return client_for


@pytest.mark.parametrize("recorded", ANSWERS, ids=[f"{a['job_class']}-{a['method']}-{a['path']}" for a in ANSWERS])
def test_a_webview_answers_as_under_racetracks_runner(
    client_for: Callable[[str], AsgiClient], recorded: dict[str, Any]
) -> None:
    headers = {"host": "testserver"}  # what the recording's client sent
    body = b""
    if recorded["json"] is not None:
        body = json.dumps(recorded["json"], separators=(",", ":")).encode()
        headers["content-type"] = "application/json"

    response = client_for(recorded["job_class"]).request(recorded["method"], recorded["path"], body, headers)

    assert (response.status_code, response.text, response.headers.get("location")) == (
        recorded["status"],
        recorded["body"],
        recorded["location"],
    )


def test_the_recording_covers_the_samples_convention() -> None:
    """The replay above proves something only while the recording holds these answers."""
    postme = next(a for a in ANSWERS if a["method"] == "POST" and a["path"].startswith("/pub/"))

    assert postme["status"] == 200
    assert json.loads(postme["body"])["path"] == "/pub/job/webview-parity/1.0.0/api/v1/webview/postme"


def test_behind_the_gateway_the_app_is_mounted_at_the_path_the_caller_used(
    client_for: Callable[[str], AsgiClient],
) -> None:
    """racetrackd's gateway (unlike Racetrack's Pub) says which path the caller used, e.g. `latest`:
    SCRIPT_NAME and root_path follow it, so links built from them stay on it."""
    headers = {"host": "testserver", "x-forwarded-prefix": "/pub/job/webview-parity/latest"}
    exact = "/pub/job/webview-parity/1.0.0/api/v1/webview"
    latest = "/pub/job/webview-parity/latest/api/v1/webview"

    wsgi = client_for("WsgiJob").request(
        "POST", f"{exact}/postme", b"{}", {**headers, "content-type": "application/json"}
    )
    asgi = client_for("AsgiJob").request("GET", f"{exact}/page/one", b"", headers)

    assert wsgi.json == {"got": {}, "path": f"{exact}/postme", "script_root": latest}
    assert asgi.json == {"base_url": exact, "path": f"{latest}/page/one", "root_path": latest}
