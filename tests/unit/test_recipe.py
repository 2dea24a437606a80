"""builders.recipe: the image recipe of a deployment, computed from plain values (no Docker, no registry),
and the results the image builder reports (racetrackd.deploy.building)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from builders import labels
from builders.recipe import BuildOptions, ImageRecipe, JobTypeFiles, OwnDockerfile, image_recipe
from jobmanifest import Manifest, validate_manifest
from racetrackd.auth.vault import Vault
from racetrackd.deploy import jobsecrets
from racetrackd.deploy.building import ImageBuilder
from racetrackd.errors import BuildError, ValidationError
from racetrackd.plugins.jobtypes import discover, resolve
from racetrackd.settings import BUILTIN_PLUGINS_DIR, Settings
from tests.unit.fakes import FakeRuntime, sample_manifest, write_job

GOLDEN = Path(__file__).parent / "golden"
SECRETS_URL = "http://172.18.0.1:7102/lifecycle/api/v1/build-secrets/go-adder/1.0.0/0123abcd"


def builtin_files(
    name: str, base_image: str = "", runtime_image: str = "", own: OwnDockerfile | None = None
) -> JobTypeFiles:
    job_type = resolve(f"{name}:latest", discover([BUILTIN_PLUGINS_DIR]))
    return JobTypeFiles(
        full_name=job_type.full_name,
        plugin_dir=job_type.plugin_dir,
        dockerfile_template=job_type.dockerfile_template,
        own_dockerfile=own,
        base_image=base_image,
        runtime_image=runtime_image,
    )


def recipe_of(
    manifest: Manifest,
    job_type: JobTypeFiles,
    job_dir: Path,
    *,
    options: BuildOptions | None = None,
    instance: str = "main",
    deployment_id: str = "d-1",
    git_commit: str = "",
) -> ImageRecipe:
    """The recipe with this file's usual deployment values; a test names only what it is about."""
    return image_recipe(
        manifest=manifest,
        job_type=job_type,
        job_dir=job_dir,
        options=options or BuildOptions(),
        instance=instance,
        deployment_id=deployment_id,
        git_commit=git_commit,
        racetrackd_version="0.1.0",
    )


def test_the_python3_recipe_renders_the_golden_dockerfile_with_the_deployments_tag_and_labels(tmp_path: Path) -> None:
    manifest = validate_manifest(
        sample_manifest(
            jobtype_extra={
                "entrypoint_path": "entrypoint.py",
                "requirements_path": "requirements.txt",
                "entrypoint_class": "AdderEntrypoint",
            },
            build_env={"GREETING": 'say "hi" to $USER \\o/'},
        )
    )
    job_type = builtin_files("python3", base_image="python:3.11-slim")

    recipe = recipe_of(
        manifest, job_type, tmp_path, options=BuildOptions(ca_bundle=tmp_path / "ca.pem"), deployment_id="1a2b3c4d5e6f"
    )

    assert recipe.dockerfile == (GOLDEN / "python3.Dockerfile").read_text()
    assert recipe.tag == "racetrackd/job-adder:0.0.1-1a2b3c4d"
    assert recipe.labels == {
        labels.LABEL_COMPONENT: "job",
        labels.LABEL_INSTANCE: "main",
        labels.LABEL_JOB_NAME: "adder",
        labels.LABEL_JOB_VERSION: "0.0.1",
        labels.LABEL_JOB_TYPE: "python3:1.0.0",
    }  # the same for each deployment of the version (the deployment is in the tag): cached above the code
    assert recipe.build_args == {}  # a plugin template gets everything as template variables
    assert recipe.jobtype_dir == job_type.plugin_dir and recipe.job_dir == tmp_path
    assert recipe.ca_bundle == tmp_path / "ca.pem" and not recipe.with_secrets_helper


def test_the_golang_recipe_labels_its_build_stage_and_fetches_secrets_through_the_helper(tmp_path: Path) -> None:
    manifest = validate_manifest(
        sample_manifest(
            name="go-adder",
            jobtype="golang:latest",
            jobtype_extra={"gomod": "build/go.racetrack.mod"},
            system_dependencies=["jq", "libvips42"],
        )
    )

    recipe = recipe_of(
        manifest,
        builtin_files("golang", "golang:1.21-bookworm", "debian:bookworm-slim"),
        tmp_path,
        options=BuildOptions(secrets_url=SECRETS_URL, secret_names=("TOKEN",)),
        deployment_id="d" * 32,
    )

    assert recipe.dockerfile == (GOLDEN / "golang-gomod-secrets.Dockerfile").read_text()
    assert 'racetrackd.instance="main" racetrackd.build-stage="go-adder"' in recipe.dockerfile
    assert recipe.tag == "racetrackd/job-go-adder:0.0.1-dddddddd"
    assert recipe.with_secrets_helper


def test_another_instance_names_its_images_apart(tmp_path: Path) -> None:
    manifest = validate_manifest(sample_manifest(name="go-adder", jobtype="golang:latest", jobtype_extra=None))

    recipe = recipe_of(
        manifest,
        builtin_files("golang", "golang:1.21-bookworm", "debian:12"),
        tmp_path,
        instance="test-1",
        deployment_id="d" * 32,
        git_commit="abc123",
    )

    assert recipe.tag == "racetrackd-test-1/job-go-adder:0.0.1-dddddddd"
    assert 'GIT_VERSION="abc123"' in recipe.dockerfile
    assert recipe.labels[labels.LABEL_INSTANCE] == "test-1"
    assert 'racetrackd.instance="test-1" racetrackd.build-stage="go-adder"' in recipe.dockerfile


def test_a_recipe_from_the_jobs_own_dockerfile_passes_base_image_build_env_and_secrets_url_as_build_args(
    tmp_path: Path,
) -> None:
    job_dir = write_job(tmp_path / "job", {"build/Dockerfile": "FROM {{ base_image }}\nRUN echo {{ job_name }}\n"})
    manifest = validate_manifest(
        sample_manifest(
            name="web",
            jobtype="dockerfile:latest",
            jobtype_extra={"dockerfile_path": "build/Dockerfile"},
            build_env={"MODE": "fast"},
        )
    )
    own = OwnDockerfile(path="build/Dockerfile", field="jobtype_extra.dockerfile_path", render=True)

    recipe = recipe_of(
        manifest,
        builtin_files("dockerfile", "python:3.11-slim", own=own),
        job_dir,
        options=BuildOptions(secrets_url=SECRETS_URL, secret_names=("TOKEN",)),
    )

    assert recipe.dockerfile == "FROM python:3.11-slim\nRUN echo web\n"
    assert recipe.build_args == {
        "MODE": "fast",
        "BASE_IMAGE": "python:3.11-slim",
        "RACETRACK_BUILD_SECRETS_URL": SECRETS_URL,
    }
    assert recipe.jobtype_dir is None  # the job's directory is the context root


def test_a_jobs_own_dockerfile_is_used_as_it_is_when_the_job_type_does_not_render_it(tmp_path: Path) -> None:
    job_dir = write_job(tmp_path / "job", {"Dockerfile": "FROM scratch\nLABEL x={{ not_a_variable }}\n"})
    manifest = validate_manifest(sample_manifest(name="web", jobtype="docker-proxy:latest", jobtype_extra=None))
    own = OwnDockerfile(path="Dockerfile", field="jobtype_extra.dockerfile_path", render=False)

    recipe = recipe_of(manifest, builtin_files("docker-proxy", own=own), job_dir)

    assert recipe.dockerfile == "FROM scratch\nLABEL x={{ not_a_variable }}\n"
    assert recipe.build_args == {}  # no base image, build env nor secrets


def instructions(dockerfile: str) -> list[str]:
    """The Dockerfile's instructions, one string each (continuation lines joined, comments dropped)."""
    joined = dockerfile.replace("\\\n", " ")
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize(
    ("jobtype", "files", "code_copies"),
    [
        ("python3", builtin_files("python3", "python:3.11-slim"), 1),
        ("golang", builtin_files("golang", "golang:1.21-bookworm", "debian:bookworm-slim"), 2),  # binary + files
    ],
)
def test_a_code_only_change_builds_only_the_code_layers(
    tmp_path: Path, jobtype: str, files: JobTypeFiles, code_copies: int
) -> None:
    # The classic builder runs every instruction after a changed COPY again, each LABEL or ENV as a
    # container of its own, and turns each label given through the build API into one more: so the
    # code comes last, and the daemon's labels, the same for each deployment of a version, are set
    # by the template above it, in a step the cache keeps.
    manifest = validate_manifest(sample_manifest(jobtype=f"{jobtype}:latest", jobtype_extra=None))
    if jobtype == "python3":
        manifest = validate_manifest(sample_manifest())

    first = recipe_of(manifest, files, tmp_path, deployment_id="1a2b3c4d5e6f").build_input()
    second = recipe_of(manifest, files, tmp_path, deployment_id="9f8e7d6c5b4a").build_input()
    dockerfile, api_labels = first

    assert second == first  # every step above the code is the cache's
    assert api_labels == {}
    steps = instructions(dockerfile)
    before_code, copies = steps[-(code_copies + 1)], steps[-code_copies:]
    assert before_code == 'ENV GIT_VERSION=""'  # the commit changes with a git source's code: just above it
    assert all(line.startswith("COPY ") for line in copies) and copies[-1].endswith(" job/ /src/job/")
    [label_step] = [line for line in steps if line.startswith("LABEL ") and "racetrack-component" in line]
    assert steps.index(label_step) < steps.index(before_code)
    recipe = recipe_of(manifest, files, tmp_path)
    for key, value in recipe.labels.items():
        assert f'"{key}"="{value}"' in label_step


def test_a_dockerfile_that_changes_the_escape_character_gets_its_labels_through_the_build_api(tmp_path: Path) -> None:
    text = "# escape=`\nFROM scratch\nCOPY . /app\n"
    job_dir = write_job(tmp_path / "job", {"Dockerfile": text})
    manifest = validate_manifest(sample_manifest(name="web", jobtype="docker-proxy:latest", jobtype_extra=None))
    own = OwnDockerfile(path="Dockerfile", field="jobtype_extra.dockerfile_path", render=False)

    recipe = recipe_of(manifest, builtin_files("docker-proxy", own=own), job_dir)

    assert recipe.build_input() == (text, recipe.labels)


def test_a_missing_own_dockerfile_is_a_validation_error_naming_the_field(tmp_path: Path) -> None:
    manifest = validate_manifest(sample_manifest(name="web", jobtype="dockerfile:latest", jobtype_extra=None))
    own = OwnDockerfile(path="Dockerfile", field="jobtype_extra.dockerfile_path", render=True)

    with pytest.raises(ValidationError, match=r"^jobtype_extra.dockerfile_path: cannot read Dockerfile"):
        recipe_of(manifest, builtin_files("dockerfile", own=own), tmp_path)


# --- what the image builder reports ----------------------------------------------------------------


class RecordedReport:
    """A BuildReport in memory: what the builder said, with no registry behind it."""

    def __init__(self) -> None:
        self.logs: list[str] = []
        self.commits: list[str] = []

    def log(self, text: str) -> None:
        self.logs.append(text)

    def source_fetched(self, git_commit: str) -> None:
        self.commits.append(git_commit)


def test_the_builder_returns_its_result_and_reports_the_log_without_touching_the_registry(
    make_settings: object, runtime: FakeRuntime, tmp_path: Path
) -> None:
    settings: Settings = make_settings(python_base_image="python:3.11-slim")  # type: ignore[operator]
    builder = ImageBuilder(settings, runtime, Vault(b"k" * 32), "http://172.18.0.1:7102")
    job_dir = write_job(tmp_path / "job", {"entrypoint.py": "class J:\n    def perform(self):\n        return 1\n"})
    manifest = validate_manifest(sample_manifest())
    job_type = resolve("python3:latest", discover([BUILTIN_PLUGINS_DIR]))
    report = RecordedReport()

    # No database is open here: a write to a deployment row would fail.
    result = builder.build(manifest, job_type, job_dir, jobsecrets.NONE, deployment_id="1a2b3c4d5e", report=report)

    assert result.image == "racetrackd/job-adder:0.0.1-1a2b3c4d" and result.image in runtime.images
    assert result.image_id.startswith("sha256:")
    assert result.duration >= 0
    assert "".join(report.logs) == f"built {result.image}\n" and result.log_tail == f"built {result.image}"
    assert runtime.images[result.image][labels.LABEL_JOB_TYPE] == "python3:1.0.0"
    assert report.commits == []


def test_a_failed_build_quotes_the_tail_of_what_it_reported(
    make_settings: object, runtime: FakeRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings: Settings = make_settings()  # type: ignore[operator]
    builder = ImageBuilder(settings, runtime, Vault(b"k" * 32), "http://172.18.0.1:7102")
    job_dir = write_job(tmp_path / "job", {"entrypoint.py": ""})
    report = RecordedReport()

    def failing_build(*args: object, **kwargs: object) -> str:
        on_log = args[4]
        assert callable(on_log)
        for step in range(30):
            on_log(f"Step {step}\n")
        raise BuildError("pip install failed")

    monkeypatch.setattr(runtime, "build_image", failing_build)
    with pytest.raises(BuildError) as caught:
        builder.build(
            validate_manifest(sample_manifest()),
            resolve("python3:latest", discover([BUILTIN_PLUGINS_DIR])),
            job_dir,
            jobsecrets.NONE,
            deployment_id="d-1",
            report=report,
        )

    assert caught.value.message.startswith("image build failed: pip install failed\n--- last build output ---\n")
    assert caught.value.message.endswith("\n".join(f"Step {step}" for step in range(10, 30)))
    assert "".join(report.logs) == "".join(f"Step {step}\n" for step in range(30))


def test_the_builder_takes_a_job_types_images_from_the_plugin_declared_settings(
    make_settings: object, runtime: FakeRuntime
) -> None:
    settings: Settings = make_settings(python_base_image="racetrackd/python3-base:bookworm")  # type: ignore[operator]
    builder = ImageBuilder(settings, runtime, Vault(b"k" * 32), "http://172.18.0.1:7102")
    installed = discover([BUILTIN_PLUGINS_DIR])
    manifest = validate_manifest(sample_manifest())
    # A plugin uploaded after the daemon started: its setting is not read yet, so its default holds.
    uploaded = dataclasses.replace(
        resolve("python3:latest", installed),
        base_image_setting="shell_base_image",
        declared_settings=(("shell_base_image", "debian:bookworm-slim"),),
    )

    python3 = builder.job_type_files(resolve("python3:latest", installed), manifest)
    golang = builder.job_type_files(resolve("golang:latest", installed), manifest)

    assert python3.base_image == "racetrackd/python3-base:bookworm"  # RACETRACK_PYTHON_BASE_IMAGE
    assert (golang.base_image, golang.runtime_image) == ("golang:1.21-bookworm", "debian:bookworm-slim")
    assert builder.job_type_files(uploaded, manifest).base_image == "debian:bookworm-slim"


def test_a_bad_requirement_pin_fails_with_pips_own_words_not_the_docker_command(
    make_settings: object, runtime: FakeRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings: Settings = make_settings()  # type: ignore[operator]
    builder = ImageBuilder(settings, runtime, Vault(b"k" * 32), "http://172.18.0.1:7102")
    job_dir = write_job(tmp_path / "job", {"entrypoint.py": ""})

    def failing_build(*args: object, **kwargs: object) -> str:
        on_log = args[4]
        assert callable(on_log)
        on_log("Step 7/9 : RUN pip install -r requirements.txt\n")
        # Docker marks the step's stderr red, as it streams it
        on_log(
            "\x1b[91mERROR: Could not find a version that satisfies the requirement flask==99.0 (from versions: 3.0.0)\n"
        )
        on_log("ERROR: No matching distribution found for flask==99.0\n\x1b[0m")
        raise BuildError("The command '/bin/sh -c pip install -r requirements.txt' returned a non-zero code: 1")

    monkeypatch.setattr(runtime, "build_image", failing_build)
    with pytest.raises(BuildError) as caught:
        builder.build(
            validate_manifest(sample_manifest()),
            resolve("python3:latest", discover([BUILTIN_PLUGINS_DIR])),
            job_dir,
            jobsecrets.NONE,
            deployment_id="d-1",
            report=RecordedReport(),
        )

    first_line = caught.value.message.splitlines()[0]
    assert first_line == (
        "image build failed: ERROR: Could not find a version that satisfies the requirement flask==99.0 "
        "(from versions: 3.0.0); ERROR: No matching distribution found for flask==99.0"
    )
    assert "/bin/sh -c" not in first_line
