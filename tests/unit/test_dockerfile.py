"""builders.dockerfile: the python3 job type's Dockerfile, rendered strictly, checked against golden files.

To update a golden file after an intended template change, render it with `render_python3(...)` below,
read the result, and check it in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from builders.dockerfile import docker_quote, render_dockerfile
from racetrackd.errors import JobTypeError
from racetrackd.plugins.jobtypes import discover, resolve
from racetrackd.settings import BUILTIN_PLUGINS_DIR
from tests.unit.fakes import dockerfile_variables, sample_manifest

GOLDEN = Path(__file__).parent / "golden"


def python3_variables(
    manifest_data: dict[str, Any], ca_bundle: bool, pip_index_url: str | None, secrets_url: str = ""
) -> dict[str, Any]:
    """The variables `racetrackd.deploy.building.ImageBuilder.build` passes, with fixed values."""
    return dockerfile_variables(
        manifest_data,
        job_type_version="python3:1.0.0",
        base_image="python:3.11-slim",
        build={"ca_bundle": ca_bundle, "pip_index_url": pip_index_url, "secrets_url": secrets_url},
    )


def render_python3(variables: dict[str, Any]) -> str:
    job_type = resolve("python3:latest", discover([BUILTIN_PLUGINS_DIR]))
    return render_dockerfile(job_type.plugin_dir, job_type.dockerfile_template, variables)


def test_python3_dockerfile_with_requirements_and_ca_bundle_matches_golden() -> None:
    variables = python3_variables(
        sample_manifest(
            jobtype_extra={
                "entrypoint_path": "entrypoint.py",
                "requirements_path": "requirements.txt",
                "entrypoint_class": "AdderEntrypoint",
            },
            build_env={"GREETING": 'say "hi" to $USER \\o/'},
        ),
        ca_bundle=True,
        pip_index_url=None,
    )

    assert render_python3(variables) == (GOLDEN / "python3.Dockerfile").read_text()


def test_python3_dockerfile_with_build_secrets_fetches_them_for_the_requirements_step_only() -> None:
    variables = python3_variables(
        sample_manifest(
            jobtype_extra={"entrypoint_path": "entrypoint.py", "requirements_path": "requirements.txt"},
        ),
        ca_bundle=False,
        pip_index_url=None,
        secrets_url="http://172.18.0.1:7102/lifecycle/api/v1/build-secrets/adder/1.0.0/0123abcd",
    )

    rendered = render_python3(variables)

    assert rendered == (GOLDEN / "python3-build-secrets.Dockerfile").read_text()
    helper_runs = [line for line in rendered.splitlines() if "with-build-secrets.py http" in line]
    assert len(helper_runs) == 1 and "pip install -r /opt/racetrack/job-requirements.txt" in helper_runs[0]


def test_python3_dockerfile_without_requirements_or_ca_bundle_matches_golden() -> None:
    variables = python3_variables(
        sample_manifest(
            system_dependencies=["libgomp1", "curl"],
        ),
        ca_bundle=False,
        pip_index_url="https://pypi.example.com/simple",
    )

    assert render_python3(variables) == (GOLDEN / "python3-no-requirements.Dockerfile").read_text()


def test_build_settings_never_become_runtime_env() -> None:
    dockerfile = render_python3(
        python3_variables(sample_manifest(), ca_bundle=True, pip_index_url="https://pypi.example.com/simple")
    )

    assert "ARG PIP_INDEX_URL=https://pypi.example.com/simple" in dockerfile
    assert "ARG PIP_CERT=/etc/racetrack/build-ca-bundle.crt" in dockerfile
    assert "ENV PIP_" not in dockerfile


@pytest.mark.parametrize("missing", ["job_name", "build", "base_image"])
def test_a_missing_variable_is_a_jobtype_error(missing: str) -> None:
    variables = python3_variables(sample_manifest(), ca_bundle=False, pip_index_url=None)
    del variables[missing]

    with pytest.raises(JobTypeError) as caught:
        render_python3(variables)

    assert "Dockerfile.j2" in caught.value.message
    assert missing in caught.value.message


def test_a_misspelt_variable_in_a_template_is_a_jobtype_error(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile.j2").write_text("FROM {{ base_imgae }}\n")

    with pytest.raises(JobTypeError, match="base_imgae"):
        render_dockerfile(tmp_path, "Dockerfile.j2", {"base_image": "python:3.11-slim"})


def test_a_template_syntax_error_is_a_jobtype_error(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile.j2").write_text("FROM {{ base_image\n")

    with pytest.raises(JobTypeError, match="Dockerfile.j2"):
        render_dockerfile(tmp_path, "Dockerfile.j2", {"base_image": "python:3.11-slim"})


def test_a_plugin_template_can_include_the_shared_package_index_fragment(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile.j2").write_text('FROM scratch\n{% include "package_index.j2" %}\n')

    rendered = render_dockerfile(tmp_path, "Dockerfile.j2", {"build": {"ca_bundle": False, "pip_index_url": None}})

    assert "ARG PIP_NO_CACHE_DIR=1" in rendered
    assert "PIP_CERT" not in rendered


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("plain", '"plain"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("C:\\path", '"C:\\\\path"'),
        ("$HOME and ${USER}", '"\\$HOME and \\${USER}"'),
        ("two\nlines", '"two\\nlines"'),
        (42, '"42"'),
        ("", '""'),
    ],
)
def test_docker_quote(value: object, quoted: str) -> None:
    assert docker_quote(value) == quoted
