"""The rust job type end to end: samples/rust-adder (perform returning Result, docs_input_example)
and tests/fixtures/jobs/rust-conventions (a dependency of its own, system_dependencies, env,
call_timeout) built offline by the real daemon (`rtd submit`) in racetrackd/rust-base:bookworm,
then called through the gateway (/pub/job/<name>/<version>/...).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import FIXTURES, REPO, Daemon
from tests.integration.test_python_job import job_container, job_image, log_lines, wait_for

pytestmark = pytest.mark.integration

RUST_ADDER = REPO / "samples" / "rust-adder"
ADDER = "/pub/job/rust-adder/latest"
CONVENTIONS = "/pub/job/rust-conventions/latest"


@pytest.fixture(scope="module")
def rust_adder(daemon: Daemon) -> Daemon:
    daemon.rtd("submit", "--force", str(RUST_ADDER), check=True)
    return daemon


@pytest.fixture(scope="module")
def rust_conventions(daemon: Daemon) -> Daemon:
    daemon.rtd("submit", "--force", str(FIXTURES / "rust-conventions"), check=True)
    return daemon


def perform(daemon: Daemon, base: str, payload: object, **kwargs: object) -> tuple[int, object]:
    response = daemon.api("POST", f"{base}/api/v1/perform", json=payload, **kwargs)
    return response.status_code, response.json()


# --- calling perform -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["latest", "0.0.1", "0.x"])
def test_rust_adder_answers_42(rust_adder: Daemon, version: str) -> None:
    assert perform(rust_adder, f"/pub/job/rust-adder/{version}", {"a": 40, "b": 2}) == (200, 42)


def test_rtd_call_reaches_the_rust_job(rust_adder: Daemon) -> None:
    result = rust_adder.rtd("call", "rust-adder", "--data", '{"a": 40, "b": 2}', check=True)

    assert result.stdout.strip() == "42"


def test_an_err_is_500_with_its_message_and_the_job_keeps_serving(rust_adder: Daemon) -> None:
    assert perform(rust_adder, ADDER, {"a": "forty", "b": 2}) == (500, {"error": 'a must be a number, not "forty"'})
    assert perform(rust_adder, ADDER, {"a": 1.5, "b": 2}) == (200, 3.5)


def test_a_panic_is_500_and_the_same_process_keeps_serving(rust_conventions: Daemon) -> None:
    container = job_container(rust_conventions, "rust-conventions")

    assert perform(rust_conventions, CONVENTIONS, {"action": "panic"}) == (500, {"error": "panic: told to panic"})
    assert perform(rust_conventions, CONVENTIONS, {"n": 1}) == (200, {"got": {"n": 1}})
    container.reload()
    assert container.status == "running" and container.attrs["RestartCount"] == 0


def test_bad_json_is_400_naming_the_problem(rust_adder: Daemon) -> None:
    response = rust_adder.api(
        "POST", f"{ADDER}/api/v1/perform", data="{not json", headers={"Content-Type": "application/json"}
    )
    array = rust_adder.api("POST", f"{ADDER}/api/v1/perform", json=[40, 2])

    assert response.status_code == 400 and response.json()["error"].startswith("request body is not valid JSON")
    assert (array.status_code, array.json()) == (400, {"error": "request body must be a JSON object"})


def test_a_call_past_the_call_timeout_is_504_and_the_job_keeps_serving(rust_conventions: Daemon) -> None:
    slow = rust_conventions.api("POST", f"{CONVENTIONS}/api/v1/perform", json={"action": "sleep", "seconds": 10})

    assert slow.status_code == 504, slow.text
    assert "call_timeout" in slow.json()["error"]
    assert perform(rust_conventions, CONVENTIONS, {"n": 1}) == (200, {"got": {"n": 1}})


# --- the endpoints every job has -------------------------------------------------------------------


def test_live_ready_and_health_answer_with_racetracks_fields(rust_adder: Daemon) -> None:
    live = rust_adder.api("GET", f"{ADDER}/live")
    ready = rust_adder.api("GET", f"{ADDER}/ready")
    health = rust_adder.api("GET", f"{ADDER}/health").json()

    assert live.status_code == 200 and live.json()["live"] is True
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    assert health["service"] == "job" and health["status"] == "pass"
    assert health["job_name"] == "rust-adder" and health["job_version"] == "0.0.1"
    assert health["job_type_version"] == "rust:1.0.0"
    assert health["deployment_timestamp"] == live.json()["deployment_timestamp"] > 0


def test_metrics_count_calls_errors_and_durations(rust_adder: Daemon) -> None:
    perform(rust_adder, ADDER, {"a": 1, "b": 2})
    perform(rust_adder, ADDER, {"a": "x", "b": 2})

    text = rust_adder.api("GET", f"{ADDER}/metrics").text

    assert 'endpoint_requests_started{endpoint="/api/v1/perform"}' in text
    assert 'request_internal_errors{endpoint="/api/v1/perform"}' in text
    assert 'request_duration_count{endpoint="/api/v1/perform"}' in text
    assert "# TYPE last_call_timestamp gauge" in text


def test_docs_openapi_and_parameters_show_the_example(rust_adder: Daemon) -> None:
    root = rust_adder.api("GET", f"{ADDER}/", allow_redirects=False)
    page = rust_adder.api("GET", f"{ADDER}/docs")
    openapi = rust_adder.api("GET", f"{ADDER}/openapi.json").json()
    parameters = rust_adder.api("GET", f"{ADDER}/api/v1/parameters").json()

    assert root.status_code == 307 and root.headers["Location"].endswith("/pub/job/rust-adder/latest/docs")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert '"/pub/job/rust-adder/latest/api/v1/perform"' in page.text
    example = openapi["paths"]["/api/v1/perform"]["post"]["requestBody"]["content"]["application/json"]["example"]
    assert example == {"a": 40, "b": 2}
    assert parameters == [{"name": "a", "type": "number"}, {"name": "b", "type": "number"}]


def test_logs_show_errors_and_one_access_line_per_call(rust_conventions: Daemon) -> None:
    marker = f"marker-{uuid.uuid4().hex[:12]}"
    tracing_id = f"rust-{uuid.uuid4().hex[:12]}"
    perform(
        rust_conventions,
        CONVENTIONS,
        {"action": "fail", "message": marker},
        headers={"X-Request-Tracing-Id": tracing_id},
    )

    def logged() -> str:
        return rust_conventions.rtd("logs", "rust-conventions", "--tail", "200", check=True).stdout

    assert wait_for(lambda: tracing_id in logged() and marker in logged())
    lines = [line for line in logged().splitlines() if tracing_id in line]
    assert any(f"ERROR perform failed: told to fail: {marker}" in line for line in lines), lines
    assert any("INFO POST /api/v1/perform 500, duration_ms=" in line for line in lines), lines


def test_every_response_carries_the_callers_tracing_id(rust_adder: Daemon) -> None:
    for method, path in (("POST", "/api/v1/perform"), ("GET", "/api/v1/nothing-here"), ("GET", "/live")):
        response = rust_adder.api(
            method, f"{ADDER}{path}", json={"a": 1, "b": 1}, headers={"X-Request-Tracing-Id": "echo-me"}
        )
        assert response.headers["X-Request-Tracing-Id"] == "echo-me", (method, path)


# --- the image and its environment -----------------------------------------------------------------


def test_environment_system_dependencies_own_crate_and_user(rust_conventions: Daemon) -> None:
    status, env = perform(rust_conventions, CONVENTIONS, {"action": "environment"})

    assert status == 200, env
    assert isinstance(env, dict)
    assert env["jq_output"] == "42"  # jq came from system_dependencies
    assert env["GREETING"] == "Hello"
    image = rust_conventions.docker.images.get(job_image(rust_conventions, "rust-conventions", "0.1.0"))
    assert "BUILD_FLAG=baked-into-image" in image.attrs["Config"]["Env"]  # build_env: in the build and the image
    assert env["JOB_NAME"] == "rust-conventions" and env["JOB_VERSION"] == "0.1.0"
    assert env["PUB_URL"].endswith("/pub") and env["has_auth_token"] is True
    assert env["JOB_CALL_TIMEOUT"] == "3"
    assert env["uid"] == 1000 and env["workdir"] == "/src/job"
    assert perform(rust_conventions, CONVENTIONS, {"action": "format"}) == (200, "42")  # itoa, from its Cargo.toml


def test_the_job_image_runs_the_binary_without_the_rust_toolchain(rust_adder: Daemon) -> None:
    image = rust_adder.docker.images.get(job_image(rust_adder, "rust-adder", "0.0.1"))
    probe = rust_adder.docker.containers.run(
        image.id,
        ["sh", "-c", "command -v cargo || command -v rustc || echo no-rust; ls /src/job /usr/share/cargo 2>&1; true"],
        remove=True,
        user="job",
        labels={"racetrackd.instance": rust_adder.instance},
    ).decode()

    assert image.attrs["Config"]["User"] == "job"
    assert image.attrs["Config"]["Cmd"] == ["/opt/racetrack/job-server"]
    assert image.labels["racetrack-component"] == "job"
    assert "no-rust" in probe and "mod.rs" in probe and "cannot access '/usr/share/cargo'" in probe


def test_the_job_stops_on_sigterm_without_being_killed(rust_adder: Daemon) -> None:
    image = rust_adder.docker.images.get(job_image(rust_adder, "rust-adder", "0.0.1"))
    container = rust_adder.docker.containers.run(
        image.id, detach=True, labels={"racetrackd.instance": rust_adder.instance}
    )
    try:
        assert wait_for(lambda: any("is ready" in line for line in log_lines(container)))
        container.stop(timeout=30)
        container.reload()
        assert container.attrs["State"]["ExitCode"] == 0  # 137 would mean SIGKILL after the timeout
    finally:
        container.remove(force=True)


def test_the_build_stage_image_carries_the_daemons_label(rust_adder: Daemon) -> None:
    stages = rust_adder.docker.images.list(
        filters={"label": [f"racetrackd.instance={rust_adder.instance}", "racetrackd.build-stage=rust-adder"]}
    )

    assert stages, "the build stage's image is not labelled for clean-up"


def test_a_perform_of_another_shape_fails_the_build_with_the_compilers_message(daemon: Daemon, tmp_path: Path) -> None:
    job = tmp_path / "wrong-signature"
    job.mkdir()
    (job / "job.yaml").write_text(
        "name: rust-wrong\nowner_email: t@example.com\nversion: 0.0.1\njobtype: rust:latest\n"
    )
    (job / "mod.rs").write_text("pub fn perform(x: i64) -> i64 { x }\n")

    result = daemon.rtd("submit", str(job))
    output = result.stdout + result.stderr

    assert result.returncode != 0
    assert "found signature of `fn(i64) -> _`" in output, output
    assert "// perform: -> Value or Result<Value, E: Display>" in output


def test_the_job_container_logs_start_up(rust_adder: Daemon) -> None:
    container = job_container(rust_adder, "rust-adder")

    assert wait_for(lambda: any("job rust-adder 0.0.1 is ready" in line for line in log_lines(container)))


def test_the_secret_build_env_reaches_cargo_build_but_not_the_images_history_or_env(
    daemon: Daemon, tmp_path: Path
) -> None:
    """The job reads a variable of the secret build env at compile time (option_env!): proof that
    `cargo build` ran with it; a real secret, a registry token say, leaves no trace in the binary."""
    marker = f"from-the-secret-build-env-{uuid.uuid4().hex[:8]}"
    job = tmp_path / "rust-secrets"
    job.mkdir()
    (job / "job.yaml").write_text(
        "name: rust-secrets\nowner_email: t@example.com\nversion: 0.0.1\n"
        "jobtype: rust:latest\nsecret_build_env_file: build.env\n"
    )
    (job / "build.env").write_text(f"RT_MARKER={marker}\n")
    (job / "mod.rs").write_text(
        "use serde_json::Value;\nuse std::collections::HashMap;\n\n"
        "pub fn perform(_input: HashMap<String, Value>) -> Value {\n"
        '    Value::from(option_env!("RT_MARKER").unwrap_or("unset"))\n}\n'
    )

    daemon.rtd("submit", str(job), check=True)

    assert perform(daemon, "/pub/job/rust-secrets/0.0.1", {}) == (200, marker)
    image = daemon.docker.images.get(job_image(daemon, "rust-secrets", "0.0.1"))
    history = " ".join(str(layer.get("CreatedBy", "")) for layer in image.history())
    assert marker not in history and "RT_MARKER" not in " ".join(image.attrs["Config"]["Env"] or [])
