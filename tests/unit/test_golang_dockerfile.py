"""The golang job type's Dockerfile (jobtype_plugins/golang), rendered strictly and checked against golden files.

To update a golden file after an intended template change, render it with `render_golang(...)` below,
read the result, and check it in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builders.dockerfile import render_dockerfile
from racetrackd.plugins.jobtypes import ExtraField, discover, resolve
from racetrackd.settings import BUILTIN_PLUGINS_DIR
from tests.unit.fakes import dockerfile_variables, sample_manifest

GOLDEN = Path(__file__).parent / "golden"
SECRETS_URL = "http://172.18.0.1:7102/lifecycle/api/v1/build-secrets/go-adder/1.0.0/0123abcd"


def golang_variables(
    manifest_overrides: dict[str, Any], *, ca_bundle: bool = False, goproxy: str | None = None, secrets_url: str = ""
) -> dict[str, Any]:
    """The variables `racetrackd.deploy.building.ImageBuilder.build` passes, with fixed values."""
    manifest = sample_manifest(
        **{"name": "go-adder", "jobtype": "golang:latest", "jobtype_extra": None, **manifest_overrides}
    )
    return dockerfile_variables(
        manifest,
        job_type_version="golang:1.0.0",
        base_image="golang:1.21-bookworm",
        build={"ca_bundle": ca_bundle, "pip_index_url": None, "goproxy": goproxy, "secrets_url": secrets_url},
        runtime_image="debian:bookworm-slim",
        build_stage_labels={"racetrackd.instance": "main", "racetrackd.build-stage": "go-adder"},
    )


def render_golang(variables: dict[str, Any]) -> str:
    job_type = resolve("golang:latest", discover([BUILTIN_PLUGINS_DIR]))
    return render_dockerfile(job_type.plugin_dir, job_type.dockerfile_template, variables)


def stages(dockerfile: str) -> tuple[str, str]:
    """The build stage and the runtime stage."""
    build, _, runtime = dockerfile.partition("\nFROM ")
    return build, "FROM " + runtime


def test_golang_is_a_builtin_job_type_with_a_toolchain_and_a_runtime_image() -> None:
    job_type = resolve("golang:latest", discover([BUILTIN_PLUGINS_DIR]))

    assert job_type.full_name == "golang:1.0.0"
    assert job_type.base_image_setting == "golang_base_image"
    assert job_type.runtime_image_setting == "golang_runtime_image"
    assert job_type.extra_fields == (ExtraField("gomod", "path"),)


def test_golang_dockerfile_with_build_env_ca_bundle_and_goproxy_matches_golden() -> None:
    variables = golang_variables(
        {"build_env": {"GREETING": 'say "hi" to $USER'}}, ca_bundle=True, goproxy="https://goproxy.example.com,direct"
    )

    assert render_golang(variables) == (GOLDEN / "golang.Dockerfile").read_text()


def test_golang_dockerfile_with_a_gomod_path_dependencies_and_build_secrets_matches_golden() -> None:
    variables = golang_variables(
        {"jobtype_extra": {"gomod": "build/go.racetrack.mod"}, "system_dependencies": ["jq", "libvips42"]},
        secrets_url=SECRETS_URL,
    )

    rendered = render_golang(variables)

    assert rendered == (GOLDEN / "golang-gomod-secrets.Dockerfile").read_text()
    helper_runs = [line for line in rendered.splitlines() if "with-build-secrets http" in line]
    assert len(helper_runs) == 1 and "go build" in helper_runs[0]


def test_build_settings_stay_in_the_build_stage_as_arguments() -> None:
    build, runtime = stages(render_golang(golang_variables({}, ca_bundle=True, goproxy="https://goproxy.example.com")))

    assert 'ARG GOPROXY="https://goproxy.example.com"' in build
    assert "ARG SSL_CERT_FILE=/etc/racetrack/build-ca-bundle.crt" in build
    assert "GOPROXY" not in runtime and "build-ca-bundle" not in runtime


def test_the_job_runs_as_a_non_root_user_from_the_runtime_image() -> None:
    build, runtime = stages(render_golang(golang_variables({})))

    assert build.startswith("FROM golang:1.21-bookworm AS build\n")
    assert 'LABEL racetrackd.instance="main" racetrackd.build-stage="go-adder"' in build
    assert runtime.startswith("FROM debian:bookworm-slim\n")
    assert any(line.startswith("LABEL ") and '"racetrack-component"="job"' in line for line in runtime.splitlines())
    for line in ("USER job", "EXPOSE 7000", 'CMD ["/opt/racetrack/job-server"]'):
        assert line in runtime.splitlines()


def test_a_job_without_gomod_gets_one_named_after_it() -> None:
    rendered = render_golang(golang_variables({}))

    assert "go mod init racetrackd-job/go-adder;" in rendered
    assert "go.racetrack.mod" not in rendered
