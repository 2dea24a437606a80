"""The `dockerfile` and `docker-proxy` job types: their plugin manifests, checking a job's
jobtype_extra, and what ImageBuilder hands to Docker for the job's own Dockerfile (a FakeRuntime)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from builders import labels
from jobmanifest import validate_manifest
from racetrackd.auth.vault import Vault
from racetrackd.db import Deployment, open_database
from racetrackd.deploy import jobsecrets
from racetrackd.deploy.building import DeploymentRecord, ImageBuilder
from racetrackd.errors import ManifestError
from racetrackd.plugins.jobtypes import FORWARD, REWRITE, WRAPPER, JobType, Serving, check_extra, discover, resolve
from racetrackd.settings import BUILTIN_PLUGINS_DIR, Settings
from tests.unit.fakes import FakeRuntime, as_written, sample_manifest

BASE = "racetrackd/python3-base:bookworm"


def builtin(name: str) -> JobType:
    return resolve(f"{name}:latest", discover([BUILTIN_PLUGINS_DIR]))


# --- plugin manifests and jobtype_extra ------------------------------------------------------------


def test_docker_proxy_serves_on_7001_in_forward_mode_unless_the_job_says_otherwise() -> None:
    proxy = builtin("docker-proxy")

    assert proxy.serving_for({}) == Serving(port=7001, path_mode=FORWARD, probe_path=None)
    assert proxy.serving_for({"user_module_port": 8000, "proxy_mode": "rewrite", "probe_path": "/healthz"}) == Serving(
        8000, REWRITE, "/healthz"
    )


def test_the_dockerfile_job_type_keeps_wrapper_paths_and_lets_its_server_decide_the_contract() -> None:
    dockerfile = builtin("dockerfile")

    serving = dockerfile.serving_for({})
    named = dockerfile.serving_for({"probe_path": "/healthz"})

    assert (serving.port, serving.path_mode, serving.probe_path) == (7000, WRAPPER, None)
    assert serving.wrapper and serving.detecting and not serving.contract  # decided when it starts
    assert named.probe_path == "/healthz"
    assert Serving().to_json() is None  # python3 and golang: nothing stored, the contract as before
    assert Serving.from_json(None).contract


def test_serving_round_trips_through_the_jobs_record() -> None:
    serving = Serving(port=8080, path_mode=REWRITE, probe_path="/")

    assert Serving.from_json(serving.to_json()) == serving
    assert Serving.from_json(None) == Serving(path_mode=WRAPPER)


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ({"proxy_mode": "mirror"}, "jobtype_extra.proxy_mode", "'mirror' is not one of forward, rewrite"),
        ({"user_module_port": 70000}, "jobtype_extra.user_module_port", "70000 is not a TCP port"),
        ({"user_module_port": "7001"}, "jobtype_extra.user_module_port", "must be a integer"),
        ({"dockerfile_path": "../Dockerfile"}, "jobtype_extra.dockerfile_path", "relative path inside"),
        ({"proxy_settings": "x.py"}, "jobtype_extra.proxy_settings", "not a setting of job type docker-proxy"),
        ({"probe_path": "healthz"}, "jobtype_extra.probe_path", "must be a path starting with /"),
    ],
)
def test_bad_jobtype_extra_is_an_error_naming_the_field(extra: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        check_extra(builtin("docker-proxy"), extra)

    assert [f for f, _ in caught.value.errors] == [field]
    assert message in caught.value.errors[0][1]


def test_a_job_without_its_dockerfile_is_refused_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("")

    with pytest.raises(ManifestError) as default:
        check_extra(builtin("docker-proxy"), {}, tmp_path)
    with pytest.raises(ManifestError) as named:
        check_extra(builtin("dockerfile"), {"dockerfile_path": "docker/web.Dockerfile"}, tmp_path)

    assert default.value.errors[0][0] == "jobtype_extra.dockerfile_path"
    assert "file Dockerfile not found" in default.value.errors[0][1]
    assert "file docker/web.Dockerfile not found" in named.value.errors[0][1]


@pytest.mark.parametrize(
    ("section", "message"),
    [("{path_mode: sideways}", "serving.path_mode: 'sideways'"), ("{probes: maybe}", "serving.probes: 'maybe'")],
)
def test_a_plugin_with_a_broken_serving_section_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, section: str, message: str
) -> None:
    plugin = tmp_path / "odd"
    plugin.mkdir()
    (plugin / "plugin-manifest.yaml").write_text(
        "name: odd\nversion: 1.0.0\ncategory: job-type\njob_types:\n  odd:\n"
        f"    dockerfile_from_job: {{}}\n    serving: {section}\n"
    )

    assert discover([tmp_path]) == []
    assert message in caplog.text


# --- building the job's own Dockerfile -----------------------------------------------------------------


@pytest.fixture
def builder(make_settings: object, runtime: FakeRuntime) -> ImageBuilder:
    settings: Settings = make_settings(python_base_image=BASE)  # type: ignore[operator]
    open_database(settings.database_path)
    return ImageBuilder(settings, runtime, Vault(b"k" * 32), "http://172.18.0.1:7102")


def build(
    builder: ImageBuilder,
    job_dir: Path,
    jobtype: str,
    secrets: jobsecrets.JobSecrets = jobsecrets.NONE,
    **manifest: object,
) -> str:
    parsed = validate_manifest(sample_manifest(name="web", jobtype=f"{jobtype}:latest", **manifest))
    deployment = Deployment.create(job_name="web", job_version="0.0.1", manifest_yaml=parsed.yaml)
    return builder.build(
        parsed, builtin(jobtype), job_dir, secrets, deployment_id=deployment.id, report=DeploymentRecord(deployment)
    ).image


def context_files(runtime: FakeRuntime, tag: str) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(runtime.contexts[tag][1]), mode="r:") as tar:
        return {m.name: (tar.extractfile(m) or io.BytesIO()).read() for m in tar.getmembers() if m.isfile()}


@pytest.fixture
def web_dir(tmp_path: Path) -> Path:
    job = tmp_path / "web"
    (job / "static").mkdir(parents=True)
    (job / "Dockerfile").write_text(
        "ARG BASE_IMAGE=python:3.11-slim\nFROM $BASE_IMAGE\nARG GREETING\n"
        "# {{ job_name }} stays as written: docker-proxy Dockerfiles are not templates\n"
        'COPY . /app\nCMD ["python3", "-m", "http.server", "7001"]\n'
    )
    (job / "static" / "index.html").write_text("<h1>hi</h1>")
    return job


def test_a_docker_proxy_job_builds_its_dockerfile_as_written_from_its_own_directory(
    builder: ImageBuilder, runtime: FakeRuntime, web_dir: Path
) -> None:
    tag = build(builder, web_dir, "docker-proxy", jobtype_extra=None)

    files = context_files(runtime, tag)
    assert runtime.contexts[tag][0] == "Dockerfile.racetrack"
    # As written, but for one LABEL line the daemon appends: its labels in one build step.
    assert as_written(files["Dockerfile.racetrack"].decode()) == (web_dir / "Dockerfile").read_text()
    assert runtime.images[tag][labels.LABEL_JOB_NAME] == "web"
    assert files["static/index.html"] == b"<h1>hi</h1>"  # `COPY . /app` sees the job's directory
    assert not any(name.startswith(("job/", "jobtype/")) for name in files)


def test_build_env_base_image_and_the_secrets_url_are_build_args_not_image_env(
    builder: ImageBuilder, runtime: FakeRuntime, web_dir: Path
) -> None:
    secrets = jobsecrets.JobSecrets(build_env={"INDEX_TOKEN": "s3cret"})

    tag = build(builder, web_dir, "docker-proxy", secrets, jobtype_extra=None, build_env={"GREETING": "hello"})

    args = runtime.build_args[tag]
    assert args["GREETING"] == "hello"
    assert args["BASE_IMAGE"] == BASE
    assert args["RACETRACK_BUILD_SECRETS_URL"].startswith("http://172.18.0.1:7102/lifecycle/api/v1/build-secrets/web/")
    assert "s3cret" not in str(args)  # the value itself is fetched by the RUN step that needs it
    files = context_files(runtime, tag)
    assert "racetrack-build/with-build-secrets.py" in files
    assert b"ENV GREETING" not in files["Dockerfile.racetrack"]


def test_a_dockerfile_job_is_rendered_with_the_variables_of_plugin_templates(
    builder: ImageBuilder, runtime: FakeRuntime, tmp_path: Path
) -> None:
    job = tmp_path / "wrapped"
    (job / "docker").mkdir(parents=True)
    (job / "docker" / "job.Dockerfile").write_text(
        "FROM {{ base_image }}\n{{ package_index }}\n"
        "LABEL job={{ job_name | docker_quote }} version={{ job_version | docker_quote }}\n"
        "{% for key, value in build_env.items() %}ENV {{ key }}={{ value | docker_quote }}\n{% endfor %}"
        'CMD ["python3", "server.py"]\n'
    )

    tag = build(
        builder,
        job,
        "dockerfile",
        jobtype_extra={"dockerfile_path": "docker/job.Dockerfile"},
        build_env={"MODE": "fast"},
    )

    rendered = context_files(runtime, tag)["Dockerfile.racetrack"].decode()
    assert rendered.startswith(f"FROM {BASE}\n")
    assert "ARG PIP_NO_CACHE_DIR=1" in rendered
    assert 'LABEL job="web" version="0.0.1"' in rendered
    assert 'ENV MODE="fast"' in rendered
    assert runtime.build_args[tag] == {"MODE": "fast", "BASE_IMAGE": BASE}


def test_a_misspelt_variable_in_a_dockerfile_jobs_template_fails_the_build_naming_it(
    builder: ImageBuilder, tmp_path: Path
) -> None:
    from racetrackd.errors import ValidationError

    (tmp_path / "Dockerfile").write_text("FROM {{ base_imgae }}\n")

    with pytest.raises(
        ValidationError, match="jobtype_extra.dockerfile_path: Dockerfile failed to render: .*base_imgae"
    ):
        build(builder, tmp_path, "dockerfile", jobtype_extra=None)


def test_the_dockerfile_fixture_job_renders_as_the_golden_file(builder: ImageBuilder, runtime: FakeRuntime) -> None:
    # To update after an intended change: print the rendered text, read it, and check it in.
    fixture = Path(__file__).parents[1] / "fixtures" / "jobs" / "dockerfile-wrapper"

    tag = build(builder, fixture, "dockerfile", jobtype_extra=None)

    rendered = as_written(context_files(runtime, tag)["Dockerfile.racetrack"].decode())
    assert rendered == (Path(__file__).parent / "golden" / "dockerfile-wrapper.Dockerfile").read_text()
