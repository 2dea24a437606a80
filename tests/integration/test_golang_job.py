"""The golang job type end to end: samples/go-adder (Perform with args and kwargs) and
tests/fixtures/jobs/go-conventions (Perform with an input map) built and deployed by the real
daemon (`rtd submit`), then called through the gateway (/pub/job/<name>/<version>/...).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import FIXTURES, REPO, Daemon
from tests.integration.test_python_job import job_container, job_image, log_lines, wait_for

pytestmark = pytest.mark.integration

GO_ADDER = REPO / "samples" / "go-adder"
ADDER = "/pub/job/go-adder/latest"
CONVENTIONS = "/pub/job/go-conventions/latest"


@pytest.fixture(scope="module")
def go_adder(daemon: Daemon) -> Daemon:
    daemon.rtd("submit", "--force", str(GO_ADDER), check=True)
    return daemon


@pytest.fixture(scope="module")
def go_conventions(daemon: Daemon) -> Daemon:
    daemon.rtd("submit", "--force", str(FIXTURES / "go-conventions"), check=True)
    return daemon


def perform(daemon: Daemon, base: str, payload: object, **kwargs: object) -> tuple[int, object]:
    response = daemon.api("POST", f"{base}/api/v1/perform", json=payload, **kwargs)
    return response.status_code, response.json()


# --- calling Perform -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["latest", "0.0.1", "0.x"])
def test_go_adder_adds_keyword_and_positional_arguments(go_adder: Daemon, version: str) -> None:
    base = f"/pub/job/go-adder/{version}"

    assert perform(go_adder, base, {"a": 40, "b": 2}) == (200, 42)
    assert perform(go_adder, base, [40, 2]) == (200, 42)


def test_rtd_call_reaches_the_go_job(go_adder: Daemon) -> None:
    result = go_adder.rtd("call", "go-adder", "--data", '{"a": 40, "b": 2}', check=True)

    assert result.stdout.strip() == "42"


def test_perform_with_an_input_map_gets_the_json_object(go_conventions: Daemon) -> None:
    payload = {"name": "Ada", "times": 2, "tags": ["x"], "nested": {"ok": True}}

    assert perform(go_conventions, CONVENTIONS, payload) == (200, {"got": payload})


def test_an_error_is_500_with_its_message_and_the_job_keeps_serving(go_conventions: Daemon) -> None:
    assert perform(go_conventions, CONVENTIONS, {"action": "fail", "message": "boom"}) == (
        500,
        {"error": "told to fail: boom"},
    )
    assert perform(go_conventions, CONVENTIONS, {"action": "panic"}) == (500, {"error": "panic: told to panic"})
    assert perform(go_conventions, CONVENTIONS, {"after": "the failures"}) == (200, {"got": {"after": "the failures"}})


def test_a_go_error_message_is_returned_by_the_sample(go_adder: Daemon) -> None:
    assert perform(go_adder, ADDER, {"a": "forty", "b": 2}) == (500, {"error": "a must be a number, not forty"})


def test_bad_json_is_400_naming_the_problem(go_conventions: Daemon, go_adder: Daemon) -> None:
    broken = go_conventions.api(
        "POST", f"{CONVENTIONS}/api/v1/perform", data=b'{"a": 4', headers={"Content-Type": "application/json"}
    )
    array = go_conventions.api("POST", f"{CONVENTIONS}/api/v1/perform", json=[1, 2])
    text = go_adder.api("POST", f"{ADDER}/api/v1/perform", json="forty-two")

    assert broken.status_code == 400 and broken.json()["error"].startswith("request body is not valid JSON")
    assert array.status_code == 400 and "must be a JSON object" in array.json()["error"]
    assert text.status_code == 400 and "array of positional arguments" in text.json()["error"]


def test_a_call_past_the_call_timeout_is_504_and_the_job_keeps_serving(go_conventions: Daemon) -> None:
    slow = go_conventions.api("POST", f"{CONVENTIONS}/api/v1/perform", json={"action": "sleep", "seconds": 10})

    assert slow.status_code == 504, slow.text
    assert "call_timeout" in slow.json()["error"]
    assert perform(go_conventions, CONVENTIONS, {"n": 1}) == (200, {"got": {"n": 1}})


# --- the endpoints every job has -------------------------------------------------------------------


def test_live_ready_and_health_answer_with_racetracks_fields(go_adder: Daemon) -> None:
    live = go_adder.api("GET", f"{ADDER}/live")
    ready = go_adder.api("GET", f"{ADDER}/ready")
    health = go_adder.api("GET", f"{ADDER}/health").json()

    assert live.status_code == 200 and live.json()["live"] is True
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    assert health["service"] == "job" and health["status"] == "pass"
    assert health["job_name"] == "go-adder" and health["job_version"] == "0.0.1"
    assert health["job_type_version"] == "golang:1.0.0"
    assert health["deployment_timestamp"] == live.json()["deployment_timestamp"] > 0


def test_metrics_count_calls_errors_and_durations(go_adder: Daemon) -> None:
    perform(go_adder, ADDER, {"a": 1, "b": 2})
    perform(go_adder, ADDER, {"a": "x", "b": 2})

    text = go_adder.api("GET", f"{ADDER}/metrics").text

    assert 'endpoint_requests_started{endpoint="/api/v1/perform"}' in text
    assert 'request_internal_errors{endpoint="/api/v1/perform"}' in text
    assert 'request_duration_count{endpoint="/api/v1/perform"}' in text
    assert "# TYPE last_call_timestamp gauge" in text


def test_docs_openapi_and_parameters_show_the_example(go_adder: Daemon) -> None:
    root = go_adder.api("GET", f"{ADDER}/", allow_redirects=False)
    page = go_adder.api("GET", f"{ADDER}/docs")
    openapi = go_adder.api("GET", f"{ADDER}/openapi.json").json()
    parameters = go_adder.api("GET", f"{ADDER}/api/v1/parameters").json()

    assert root.status_code == 307 and root.headers["Location"].endswith("/pub/job/go-adder/latest/docs")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert '"/pub/job/go-adder/latest/api/v1/perform"' in page.text
    example = openapi["paths"]["/api/v1/perform"]["post"]["requestBody"]["content"]["application/json"]["example"]
    assert example == {"a": 40, "b": 2}
    assert parameters == [{"name": "a", "type": "number"}, {"name": "b", "type": "number"}]


def test_logs_show_errors_and_one_access_line_per_call(go_conventions: Daemon) -> None:
    marker = f"marker-{uuid.uuid4().hex[:12]}"
    tracing_id = f"go-{uuid.uuid4().hex[:12]}"
    perform(
        go_conventions, CONVENTIONS, {"action": "fail", "message": marker}, headers={"X-Request-Tracing-Id": tracing_id}
    )

    def logged() -> str:
        return go_conventions.rtd("logs", "go-conventions", "--tail", "200", check=True).stdout

    assert wait_for(lambda: tracing_id in logged() and marker in logged())
    lines = [line for line in logged().splitlines() if tracing_id in line]
    assert any(f"ERROR Perform failed: told to fail: {marker}" in line for line in lines), lines
    assert any("INFO POST /api/v1/perform 500, duration_ms=" in line for line in lines), lines


def test_every_response_carries_the_callers_tracing_id(go_adder: Daemon) -> None:
    for method, path in (("POST", "/api/v1/perform"), ("GET", "/api/v1/nothing-here"), ("GET", "/live")):
        response = go_adder.api(
            method, f"{ADDER}{path}", json={"a": 1, "b": 1}, headers={"X-Request-Tracing-Id": "echo-me"}
        )
        assert response.headers["X-Request-Tracing-Id"] == "echo-me", (method, path)


# --- the image and its environment -----------------------------------------------------------------


def test_environment_system_dependencies_and_user(go_conventions: Daemon) -> None:
    status, env = perform(go_conventions, CONVENTIONS, {"action": "environment"})

    assert status == 200, env
    assert isinstance(env, dict)
    assert env["jq_output"] == "42"  # jq came from system_dependencies
    assert env["GREETING"] == "Hello"
    image = go_conventions.docker.images.get(job_image(go_conventions, "go-conventions", "0.1.0"))
    assert "BUILD_FLAG=baked-into-image" in image.attrs["Config"]["Env"]  # build_env: in the build and the image
    assert env["JOB_NAME"] == "go-conventions" and env["JOB_VERSION"] == "0.1.0"
    assert env["PUB_URL"].endswith("/pub") and env["has_auth_token"] is True
    assert env["JOB_CALL_TIMEOUT"] == "3"
    assert env["uid"] == 1000 and env["workdir"] == "/src/job"


def test_the_job_image_runs_the_binary_without_the_go_toolchain(go_adder: Daemon) -> None:
    image = go_adder.docker.images.get(job_image(go_adder, "go-adder", "0.0.1"))
    probe = go_adder.docker.containers.run(
        image.id,
        ["sh", "-c", "command -v go || echo no-go; ls /src/job"],
        remove=True,
        user="job",
        labels={"racetrackd.instance": go_adder.instance},
    ).decode()

    assert image.attrs["Config"]["User"] == "job"
    assert image.attrs["Config"]["Cmd"] == ["/opt/racetrack/job-server"]
    assert image.labels["racetrack-component"] == "job"
    assert "no-go" in probe and "adder.go" in probe


def test_the_build_stage_image_carries_the_daemons_label(go_adder: Daemon) -> None:
    stages = go_adder.docker.images.list(
        filters={"label": [f"racetrackd.instance={go_adder.instance}", "racetrackd.build-stage=go-adder"]}
    )

    assert stages, "the build stage's image is not labelled for clean-up"


def test_a_perform_with_another_signature_fails_the_build_saying_what_is_expected(
    daemon: Daemon, tmp_path: Path
) -> None:
    job = tmp_path / "wrong-signature"
    job.mkdir()
    (job / "job.yaml").write_text(
        "name: go-wrong\nowner_email: t@example.com\nversion: 0.0.1\njobtype: golang:latest\n"
    )
    (job / "wrong.go").write_text("package wrong\n\nfunc Perform(x int) (int, error) { return x, nil }\n")

    result = daemon.rtd("submit", str(job))
    output = result.stdout + result.stderr

    assert result.returncode != 0
    assert "func Perform has an unsupported signature" in output, output
    assert "func Perform(input map[string]interface{}) (interface{}, error)" in output
    leftovers = daemon.docker.images.list(
        filters={"label": [f"racetrackd.instance={daemon.instance}", "racetrackd.build-stage=go-wrong"]}
    )
    assert leftovers, "the failed build's untagged image is not labelled for clean-up"


def test_a_job_in_package_main_with_its_own_main_builds_and_answers(daemon: Daemon) -> None:
    submitted = daemon.rtd("submit", "--force", str(FIXTURES / "go-main"))
    output = submitted.stdout + submitted.stderr

    assert submitted.returncode == 0, output
    assert perform(daemon, "/pub/job/go-main/latest", {"a": 40, "b": 2}) == (200, 42)


def test_the_job_container_logs_start_up(go_adder: Daemon) -> None:
    container = job_container(go_adder, "go-adder")

    assert wait_for(lambda: any("job go-adder 0.0.1 is ready" in line for line in log_lines(container)))


def test_the_secret_build_env_reaches_go_build_but_not_the_images_history_or_env(
    daemon: Daemon, tmp_path: Path
) -> None:
    """GOFLAGS from the secret build env sets a variable at link time (proof that `go build` ran with it;
    a real secret, a module proxy token say, leaves no trace in the binary)."""
    marker = f"from-the-secret-build-env-{uuid.uuid4().hex[:8]}"
    job = tmp_path / "go-secrets"
    job.mkdir()
    (job / "job.yaml").write_text(
        "name: go-secrets\nowner_email: t@example.com\nversion: 0.0.1\n"
        "jobtype: golang:latest\nsecret_build_env_file: build.env\n"
    )
    (job / "build.env").write_text(f"GOFLAGS=-ldflags=-X=racetrackd-job/go-secrets.Marker={marker}\n")
    (job / "secrets.go").write_text(
        'package secrets\n\nvar Marker = "unset"\n\n'
        "func Perform(input map[string]interface{}) (interface{}, error) "
        "{ return Marker, nil }\n"
    )

    daemon.rtd("submit", str(job), check=True)

    assert perform(daemon, "/pub/job/go-secrets/0.0.1", {}) == (200, marker)
    image = daemon.docker.images.get(job_image(daemon, "go-secrets", "0.0.1"))
    history = " ".join(str(layer.get("CreatedBy", "")) for layer in image.history())
    assert marker not in history and "GOFLAGS" not in " ".join(image.attrs["Config"]["Env"] or [])
