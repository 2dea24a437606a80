"""The rust job type's Dockerfile (jobtype_plugins/rust), rendered strictly and checked against golden files.

To update a golden file after an intended template change, render it with `render_rust(...)` below,
read the result, and check it in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from builders.dockerfile import render_dockerfile
from jobmanifest.schema import validate_manifest
from racetrackd.plugins.jobtypes import ExtraField, discover, resolve
from racetrackd.settings import BUILTIN_PLUGINS_DIR
from tests.unit.fakes import dockerfile_variables, sample_manifest

GOLDEN = Path(__file__).parent / "golden"
SECRETS_URL = "http://172.18.0.1:7102/lifecycle/api/v1/build-secrets/rust-adder/1.0.0/0123abcd"


def rust_variables(
    manifest_overrides: dict[str, Any],
    *,
    ca_bundle: bool = False,
    cargo_registry: str | None = None,
    secrets_url: str = "",
) -> dict[str, Any]:
    """The variables `racetrackd.deploy.building.ImageBuilder.build` passes, with fixed values."""
    manifest = sample_manifest(
        **{"name": "rust-adder", "jobtype": "rust:latest", "jobtype_extra": None, **manifest_overrides}
    )
    return dockerfile_variables(
        manifest,
        job_type_version="rust:1.0.0",
        base_image="racetrackd/rust-base:bookworm",
        build={
            "ca_bundle": ca_bundle,
            "pip_index_url": None,
            "goproxy": None,
            "cargo_registry": cargo_registry,
            "secrets_url": secrets_url,
        },
        runtime_image="debian:bookworm-slim",
        build_stage_labels={"racetrackd.instance": "main", "racetrackd.build-stage": "rust-adder"},
    )


def render_rust(variables: dict[str, Any]) -> str:
    job_type = resolve("rust:latest", discover([BUILTIN_PLUGINS_DIR]))
    return render_dockerfile(job_type.plugin_dir, job_type.dockerfile_template, variables)


def stages(dockerfile: str) -> tuple[str, str]:
    """The build stage and the runtime stage."""
    build, _, runtime = dockerfile.partition("\nFROM ")
    return build, "FROM " + runtime


def test_rust_is_a_builtin_job_type_with_a_toolchain_and_a_runtime_image() -> None:
    job_type = resolve("rust:latest", discover([BUILTIN_PLUGINS_DIR]))

    assert job_type.full_name == "rust:1.0.0"
    assert job_type.base_image_setting == "rust_base_image"
    assert job_type.runtime_image_setting == "rust_runtime_image"
    assert job_type.extra_fields == (ExtraField("module", "path"), ExtraField("cargo_toml", "path"))
    assert dict(job_type.declared_settings)["rust_base_image"] == "racetrackd/rust-base:bookworm"


def test_racetracks_old_lang_key_names_the_rust_job_type() -> None:
    manifest = validate_manifest(
        {"name": "rust-adder", "owner_email": "o@example.com", "version": "0.0.1", "lang": "rust:latest"}
    )

    assert resolve(manifest.jobtype, discover([BUILTIN_PLUGINS_DIR])).full_name == "rust:1.0.0"


def test_offline_rust_dockerfile_with_build_env_and_ca_bundle_matches_golden() -> None:
    variables = rust_variables({"build_env": {"GREETING": 'say "hi" to $USER'}}, ca_bundle=True)

    assert render_rust(variables) == (GOLDEN / "rust.Dockerfile").read_text()


def test_rust_dockerfile_with_a_module_dependencies_registry_and_build_secrets_matches_golden() -> None:
    variables = rust_variables(
        {
            "jobtype_extra": {"module": "src/adder.rs", "cargo_toml": "deps/Cargo.toml"},
            "system_dependencies": ["jq", "libvips42"],
        },
        cargo_registry="https://crates.example.com/index",
        secrets_url=SECRETS_URL,
    )

    rendered = render_rust(variables)

    assert rendered == (GOLDEN / "rust-module-registry-secrets.Dockerfile").read_text()
    helper_runs = [line for line in rendered.splitlines() if "with-build-secrets http" in line]
    assert len(helper_runs) == 1 and "cargo build --release --bin job-server" in helper_runs[0]


def test_without_a_registry_crates_come_from_debians_packages_offline() -> None:
    build, runtime = stages(render_rust(rust_variables({})))

    assert "'replace-with = \"debian-packages\"'" in build
    assert "'directory = \"/usr/share/cargo/registry\"'" in build and "'offline = true'" in build
    assert "cargo" not in runtime.replace("CARGO", "")


@pytest.mark.parametrize("index", ["crates.io", "https://github.com/rust-lang/crates.io-index"])
def test_the_public_index_as_registry_replaces_nothing(index: str) -> None:
    build, _ = stages(render_rust(rust_variables({}, cargo_registry=index)))

    assert "replace-with" not in build and "offline" not in build


def test_build_settings_stay_in_the_build_stage() -> None:
    build, runtime = stages(
        render_rust(rust_variables({}, ca_bundle=True, cargo_registry="https://crates.example.com/index"))
    )

    assert "ARG CARGO_HTTP_CAINFO=/etc/racetrack/build-ca-bundle.crt" in build
    assert "'registry = \"https://crates.example.com/index\"'" in build
    assert "crates.example.com" not in runtime and "build-ca-bundle" not in runtime


def test_the_job_runs_as_a_non_root_user_from_the_runtime_image_without_the_toolchain() -> None:
    build, runtime = stages(render_rust(rust_variables({})))

    assert build.startswith("FROM racetrackd/rust-base:bookworm AS build\n")
    assert 'LABEL racetrackd.instance="main" racetrackd.build-stage="rust-adder"' in build
    assert runtime.startswith("FROM debian:bookworm-slim\n")
    assert any(line.startswith("LABEL ") and '"racetrack-component"="job"' in line for line in runtime.splitlines())
    for line in ("USER job", "EXPOSE 7000", 'CMD ["/opt/racetrack/job-server"]'):
        assert line in runtime.splitlines()
    assert "COPY --from=build /opt/racetrack/job-server /opt/racetrack/job-server" in runtime


def test_the_wrapper_is_compiled_and_tested_in_a_layer_above_the_jobs_code() -> None:
    rendered = render_rust(rust_variables({}))

    warmup = rendered.index("cargo test --release")
    job_code = rendered.index("COPY job/ /src/job/")
    assert warmup < rendered.index("cargo build --release --bin job-server") < job_code  # the stand-in job
    assert job_code < rendered.rindex("cargo build --release --bin job-server")
    assert (
        "RUN sh /opt/racetrack/tools/link-job /src/job mod.rs Cargo.toml" in rendered
    )  # sh: an installed wheel keeps no +x
