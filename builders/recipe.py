"""The image recipe: everything that decides what image a deployment builds, as one frozen value.

`image_recipe` turns plain inputs (the job's manifest and directory, the job type's files and
base images, the daemon's build options) into an `ImageRecipe`: the Dockerfile text, the build
args, the labels, the tag and what goes into the build context. Pure of Docker and of the
registry (it reads the job's own Dockerfile, nothing else), so it is tested without either; the
daemon's image builder (racetrackd.deploy.building) carries it out.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol

from builders import labels as image_labels
from builders.context import resolve_inside
from builders.dockerfile import (
    job_dockerfile_variables,
    label_pairs,
    render_dockerfile,
    render_job_dockerfile,
    with_label_instruction,
)
from jobmanifest import Manifest
from racetrackd.errors import ValidationError


class NamedJobType(Protocol):
    """What the template variables need of a job type: its `name:version`."""

    @property
    def full_name(self) -> str: ...


@dataclasses.dataclass(frozen=True)
class OwnDockerfile:
    """The job's own Dockerfile, for a job type that builds it (`dockerfile_from_job`)."""

    path: str  # relative to the job's directory
    field: str  # the manifest field that names it, for errors: jobtype_extra.dockerfile_path
    render: bool  # a Jinja template (rendered in the sandbox), or used as it is


@dataclasses.dataclass(frozen=True)
class JobTypeFiles:
    """What the recipe needs of a job type: its files, its template and the images it builds from."""

    full_name: str  # name:version
    plugin_dir: Path
    dockerfile_template: str  # relative to plugin_dir; "" when the job brings its own Dockerfile
    own_dockerfile: OwnDockerfile | None = None
    base_image: str = ""  # the value of the job type's base image setting ("" when it has none)
    runtime_image: str = ""  # the image a multi-stage template runs the job in ("" when it has none)


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """The daemon's side of a build: package indexes, CA bundle, where RUN steps fetch secret build env."""

    ca_bundle: Path | None = None
    pip_index_url: str | None = None
    pip_extra_index_url: str | None = None
    pip_trusted_host: str | None = None
    goproxy: str | None = None
    cargo_registry: str | None = None
    secrets_url: str = ""  # "" when the job has no secret build env
    secret_names: tuple[str, ...] = ()

    def as_template_variable(self) -> dict[str, Any]:
        """The `build` template variable (docs/plugins.md)."""
        return {
            "ca_bundle": self.ca_bundle is not None,
            "pip_index_url": self.pip_index_url,
            "pip_extra_index_url": self.pip_extra_index_url,
            "pip_trusted_host": self.pip_trusted_host,
            "goproxy": self.goproxy,
            "cargo_registry": self.cargo_registry,
            "secrets_url": self.secrets_url,
            "secret_names": sorted(self.secret_names),
        }


@dataclasses.dataclass(frozen=True)
class ImageRecipe:
    """What to build, and how: everything the Docker runtime needs besides the engine itself."""

    tag: str
    dockerfile: str
    build_args: dict[str, str]
    labels: dict[str, str]
    job_dir: Path  # the job's files
    jobtype_dir: Path | None  # the job type's files (`jobtype/` in the context); None: the job's Dockerfile
    ca_bundle: Path | None
    with_secrets_helper: bool  # racetrack-build/with-build-secrets.py goes into the context

    def build_input(self) -> tuple[str, dict[str, str]]:
        """(the Dockerfile to build, the labels to pass to the build API). A job type's template sets
        the labels itself, above the job's code (no step of their own on a code-only redeploy); else
        they are one LABEL instruction at the Dockerfile's end (one build step rather than one per
        label), unless the Dockerfile cannot take it safely; then through the API."""
        if f"LABEL {label_pairs(self.labels)}\n" in self.dockerfile:
            return self.dockerfile, {}
        labelled = with_label_instruction(self.dockerfile, self.labels)
        return (self.dockerfile, dict(self.labels)) if labelled is None else (labelled, {})


def image_recipe(
    *,
    manifest: Manifest,
    job_type: JobTypeFiles,
    job_dir: Path,
    options: BuildOptions,
    instance: str,
    deployment_id: str,
    git_commit: str,
    racetrackd_version: str,
) -> ImageRecipe:
    """The recipe of one deployment's image. ValidationError when the job's own Dockerfile cannot be
    read or rendered, JobTypeError when the job type's template fails."""
    labels = image_labels.image_labels(instance, manifest.name, manifest.version, job_type.full_name)
    variables = template_variables(
        manifest=manifest,
        job_type=job_type,
        final_image_labels=labels,
        base_image=job_type.base_image,
        runtime_image=job_type.runtime_image,
        build_stage_labels=image_labels.build_stage_labels(instance, manifest.name),
        build=options.as_template_variable(),
        git_version=git_commit,
        racetrackd_version=racetrackd_version,
    )
    dockerfile, build_args = _dockerfile(job_type, job_dir, manifest, variables)
    return ImageRecipe(
        tag=f"{image_labels.image_repository(instance, manifest.name)}:"
        f"{image_labels.image_tag(manifest.version, deployment_id)}",
        dockerfile=dockerfile,
        build_args=build_args,
        labels=labels,
        job_dir=job_dir,
        jobtype_dir=None if job_type.own_dockerfile else job_type.plugin_dir,
        ca_bundle=options.ca_bundle,
        with_secrets_helper=bool(options.secret_names),
    )


def template_variables(
    *,
    manifest: Manifest,
    job_type: NamedJobType,
    base_image: str,
    build: dict[str, Any],
    git_version: str,
    racetrackd_version: str,
    runtime_image: str = "",
    build_stage_labels: dict[str, str] | None = None,
    final_image_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """What a job type's Dockerfile template receives (docs/plugins.md lists them)."""
    return {
        "base_image": base_image,
        "runtime_image": runtime_image,
        # For the build stages of a multi-stage template: their images are left untagged, and these
        # labels are how they are found and removed with the daemon's other images.
        "build_stage_labels": build_stage_labels or {},
        # The final image's labels, for a template to set with `LABEL {{ image_labels | label_pairs }}`
        # above the job's code (cached); a template that does not gets them in a step at its end.
        "image_labels": final_image_labels or {image_labels.LABEL_COMPONENT: "job"},
        "build": build,
        "manifest": manifest.raw,
        "jobtype_extra": manifest.jobtype_extra,
        "system_dependencies": list(manifest.system_dependencies),
        "build_env": manifest.build_env,
        "job_name": manifest.name,
        "job_version": manifest.version,
        "job_type_version": job_type.full_name,
        "git_version": git_version,
        "racetrackd_version": racetrackd_version,
    }


def _dockerfile(
    job_type: JobTypeFiles, job_dir: Path, manifest: Manifest, variables: dict[str, Any]
) -> tuple[str, dict[str, str]]:
    """The Dockerfile to build and the build args to build it with.

    A plugin template gets everything as template variables. The job's own Dockerfile (a
    `dockerfile_from_job` job type) is rendered in the sandbox with the documented variables only
    when the job type says so, else used as it is; either way it also gets build args, which a
    plain Dockerfile declares with `ARG`: every `build_env` variable, `BASE_IMAGE` (the operator's base image for the job type, so
    `ARG BASE_IMAGE=python:3.11-slim` + `FROM $BASE_IMAGE` builds on an air-gapped host too) and,
    when the job has secret build env, `RACETRACK_BUILD_SECRETS_URL` for
    racetrack-build/with-build-secrets.py. Build args are not kept in the image's environment.
    """
    source = job_type.own_dockerfile
    if source is None:
        return render_dockerfile(job_type.plugin_dir, job_type.dockerfile_template, variables), {}
    try:
        text = resolve_inside(job_dir, source.path, source.field).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{source.field}: cannot read {source.path}: {exc}") from exc
    # The job's own file is user input: rendered (when the job type says so) only in the sandbox.
    dockerfile = (
        render_job_dockerfile(text, source.path, job_dockerfile_variables(variables), source.field)
        if source.render
        else text
    )
    build_args = dict(manifest.build_env)
    if variables["base_image"]:
        build_args["BASE_IMAGE"] = variables["base_image"]
    if variables["build"]["secrets_url"]:
        build_args["RACETRACK_BUILD_SECRETS_URL"] = variables["build"]["secrets_url"]
    return dockerfile, build_args
