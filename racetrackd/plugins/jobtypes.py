"""Job types: read from plugin directories, resolved from a manifest's `jobtype: name:version`.

A job-type plugin is a directory holding `plugin-manifest.yaml` (name, version, category
`job-type`, and the Dockerfile template of each job type it provides) plus the files its
template copies into images (its wrapper); the package format is `pluginbundle`. Built-in
plugins in `jobtype_plugins/` and uploaded ones (racetrackd.plugins.store) load through this same
door. Pure data: nothing here touches Docker.

Two optional sections of a job type (both added for Dockerfile-based job types):
    dockerfile_from_job   the template is the job's own Dockerfile, not a plugin file:
                          {path_field: dockerfile_path, default: Dockerfile, render: true|false}
    image_from_manifest   nothing is built: the job runs the image a jobtype_extra key names
                          ({field: image, pull_policy_field: pull_policy}; the docker-image job
                          type); see `ImageFromManifest`.
    serving               how the job's server is reached, when it does not follow the wrapper
                          contract (port 7000, paths under /pub/job/<name>/<version>, /live and
                          /ready of its own), or what proves it ready when it may not:
                          {port, port_field, path_mode, path_mode_field, probes,
                          probe_path, probe_path_field}; see `Serving`.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jobmanifest.schema import image_reference_problem, relative_path_problem
from jobmanifest.versions import select
from pluginbundle import JOB_TYPE_CATEGORY, PLUGIN_MANIFEST, PluginInvalid, PluginManifest, check_directory
from racetrackd.errors import ManifestError
from racetrackd.naming import JOB_PORT
from racetrackd.serving import (  # re-exported: the job type's side of it
    CONTRACT,
    FORWARD,
    PATH_MODES,
    PROBE_KINDS,
    REWRITE,
    WRAPPER,
    Serving,
)

log = logging.getLogger(__name__)


CAPABILITY = re.compile(r"^(CAP_)?[A-Za-z_]+$")
EXTRA_TYPES = {"string": str, "path": str, "boolean": bool, "integer": int}
# When a job that runs an image built elsewhere pulls it: on every deployment, only when the engine
# lacks it, or never (the engine must have it). Default: see racetrackd.deploy.imagejobs.resolve.
PULL_POLICIES = ("always", "missing", "never")


@dataclasses.dataclass(frozen=True)
class ExtraField:
    """One `jobtype_extra` key a job type understands."""

    name: str
    type: str
    required: bool = False
    supported: bool = True


@dataclasses.dataclass(frozen=True)
class ServingRule:
    """A job type's `serving:` section: defaults, and the jobtype_extra keys that override them."""

    port: int = JOB_PORT
    port_field: str | None = None
    path_mode: str = WRAPPER
    path_mode_field: str | None = None
    probe_path: str | None = None  # None: any HTTP answer to GET / means ready
    probe_path_field: str | None = None  # a jobtype_extra key naming a probe path (then < 500 there)
    probes: str = CONTRACT  # wrapper path mode only: contract | server | detect (`racetrackd.serving`)


@dataclasses.dataclass(frozen=True)
class JobDockerfile:
    """A job type whose Dockerfile is the job's own (`dockerfile_from_job:`).

    The job's directory is then the root of the build context (as for `docker build .`).
    """

    path_field: str = "dockerfile_path"  # the jobtype_extra key naming it
    default: str = "Dockerfile"
    render: bool = True  # a Jinja template with the variables of plugin templates, or used as it is

    def path(self, jobtype_extra: dict[str, Any]) -> str:
        return str(jobtype_extra.get(self.path_field) or self.default)


@dataclasses.dataclass(frozen=True)
class ImageFromManifest:
    """A job type whose jobs run an image built elsewhere (`image_from_manifest:`): the deployment
    resolves (or pulls) the image the jobtype_extra key `field` names; no source, no build. The key
    `pull_policy_field`, if any, says when to pull (PULL_POLICIES)."""

    field: str = "image"
    pull_policy_field: str | None = None

    def reference(self, jobtype_extra: dict[str, Any]) -> str:
        return str(jobtype_extra.get(self.field) or "")

    def pull_policy(self, jobtype_extra: dict[str, Any]) -> str | None:
        """The job's pull policy; None: the default (see racetrackd.deploy.imagejobs.resolve)."""
        value = jobtype_extra.get(self.pull_policy_field) if self.pull_policy_field else None
        return str(value) if value else None


@dataclasses.dataclass(frozen=True)
class Confinement:
    """A job type's `hardening:` section: how far its containers can be locked down beyond what
    every job gets (no capabilities, no privilege gain, a pids limit)."""

    read_only_root: bool = False  # its jobs write only under /tmp (then a tmpfs)
    capabilities: tuple[str, ...] = ()  # Linux capabilities its jobs need back, e.g. NET_BIND_SERVICE


@dataclasses.dataclass(frozen=True)
class JobType:
    name: str
    version: str
    plugin_dir: Path  # its files go into the build context as `jobtype/`
    dockerfile_template: str  # path relative to plugin_dir ("" when the job brings its Dockerfile)
    base_image_setting: str | None  # the setting naming the default base image, if any (declared by a plugin)
    extra_fields: tuple[ExtraField, ...] = ()
    # The setting naming the image a multi-stage template runs the job in (`runtime_image`), if any
    runtime_image_setting: str | None = None
    job_dockerfile: JobDockerfile | None = None
    image_from_manifest: ImageFromManifest | None = None  # set: nothing is built
    serving: ServingRule = ServingRule()
    confinement: Confinement = Confinement()
    # The settings its plugin declares, with their defaults (a plugin uploaded after the daemon
    # started is not in Settings.plugin_settings until a restart: its images are these defaults)
    declared_settings: tuple[tuple[str, str], ...] = ()

    @property
    def full_name(self) -> str:
        return f"{self.name}:{self.version}"

    def serving_for(self, jobtype_extra: dict[str, Any]) -> Serving:
        """Where and how a job of this type with this `jobtype_extra` serves (checked by check_extra)."""
        rule = self.serving
        port = jobtype_extra.get(rule.port_field) if rule.port_field else None
        mode = jobtype_extra.get(rule.path_mode_field) if rule.path_mode_field else None
        named = jobtype_extra.get(rule.probe_path_field) if rule.probe_path_field else None
        return Serving(
            port=int(port or rule.port),
            path_mode=str(mode or rule.path_mode),
            probe_path=str(named) if named else rule.probe_path,
            probes=rule.probes,  # read for the wrapper path mode only (Serving.contract)
        )


def discover(plugin_dirs: Iterable[Path]) -> list[JobType]:
    """Every job type provided by plugins under `plugin_dirs`; a broken plugin is logged and skipped."""
    found: list[JobType] = []
    for root in plugin_dirs:
        if not root.is_dir():
            continue
        for plugin_dir in plugin_directories(root):
            try:
                found.extend(load_job_types(plugin_dir, check_directory(plugin_dir)))
            except (OSError, PluginInvalid) as exc:
                log.error("skipping broken job-type plugin %s: %s", plugin_dir, exc)
    return found


def plugin_directories(root: Path) -> list[Path]:
    """The plugin directories directly under `root` (those holding a plugin manifest), in name order."""
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / PLUGIN_MANIFEST).is_file())


def load_job_types(plugin_dir: Path, manifest: PluginManifest) -> list[JobType]:
    """The job types a checked plugin provides (none unless its category is `job-type`); PluginInvalid
    naming the key when an extra field is malformed."""
    if manifest.category != JOB_TYPE_CATEGORY:
        return []
    job_types = []
    for name, spec in manifest.job_types.items():
        job_dockerfile = _job_dockerfile(spec.get("dockerfile_from_job"))
        image_from_manifest = (
            ImageFromManifest(
                field=str(spec["image_from_manifest"]["field"]),
                pull_policy_field=spec["image_from_manifest"].get("pull_policy_field"),
            )
            if "image_from_manifest" in spec and job_dockerfile is None
            else None
        )
        fields = []
        extra = spec.get("extra_fields") or {}
        if not isinstance(extra, dict):
            raise PluginInvalid(f"job_types.{name}.extra_fields: must map field names to {{type, required}}")
        for field_name, field_spec in extra.items():
            field_spec = field_spec or {}
            if not isinstance(field_spec, dict) or field_spec.get("type", "string") not in EXTRA_TYPES:
                raise PluginInvalid(
                    f"job_types.{name}.extra_fields.{field_name}: type must be one of {', '.join(EXTRA_TYPES)}"
                )
            fields.append(
                ExtraField(
                    name=str(field_name),
                    type=field_spec.get("type", "string"),
                    required=bool(field_spec.get("required", False)),
                    supported=bool(field_spec.get("supported", True)),
                )
            )
        base_image_setting = spec.get("base_image_setting")
        if base_image_setting is not None and not isinstance(base_image_setting, str):
            raise PluginInvalid(f"job_types.{name}.base_image_setting: must be the name of a setting")
        runtime_image_setting = spec.get("runtime_image_setting")
        if runtime_image_setting is not None and not isinstance(runtime_image_setting, str):
            raise PluginInvalid(f"job_types.{name}.runtime_image_setting: must be the name of a setting")
        if image_from_manifest is not None and not any(
            f.name == image_from_manifest.field and f.type == "string" and f.required for f in fields
        ):
            raise PluginInvalid(
                f"job_types.{name}.image_from_manifest.field: {image_from_manifest.field!r} must be one of the "
                f"job type's extra_fields, of type string and required"
            )
        if image_from_manifest is not None and image_from_manifest.pull_policy_field not in (
            None,
            *(f.name for f in fields if f.type == "string"),
        ):
            raise PluginInvalid(
                f"job_types.{name}.image_from_manifest.pull_policy_field: "
                f"{image_from_manifest.pull_policy_field!r} must be one of the job type's string extra_fields"
            )
        job_types.append(
            JobType(
                name=name,
                version=manifest.version,
                plugin_dir=plugin_dir,
                dockerfile_template="" if job_dockerfile or image_from_manifest else str(spec["dockerfile_template"]),
                base_image_setting=base_image_setting,
                extra_fields=tuple(fields),
                runtime_image_setting=runtime_image_setting,
                job_dockerfile=job_dockerfile,
                image_from_manifest=image_from_manifest,
                serving=_serving_rule(name, spec.get("serving"), {field.name for field in fields}),
                confinement=_confinement(name, spec.get("hardening")),
                declared_settings=tuple(
                    (setting, declared["default"]) for setting, declared in manifest.settings.items()
                ),
            )
        )
    return job_types


SAMPLE_EXTRA_VALUES: dict[str, Any] = {"string": "sample", "path": "sample.txt", "boolean": True, "integer": 1}


# Racetrack's keys that the manifest schema holds to a pattern: a sample that passes it.
SAMPLE_KNOWN_VALUES: dict[str, Any] = {
    "python_version": "3.11",
    "debian_version": "slim-bookworm",
    "entrypoint_class": "Sample",
}


def sample_jobtype_extra(job_type: JobType) -> dict[str, Any]:
    """A value for every extra field, so that rendering a template once at install time reaches its branches."""
    return {
        field.name: SAMPLE_KNOWN_VALUES.get(field.name, SAMPLE_EXTRA_VALUES[field.type])
        if field.type == "string"
        else SAMPLE_EXTRA_VALUES[field.type]
        for field in job_type.extra_fields
    }


def _job_dockerfile(spec: dict[str, Any] | None) -> JobDockerfile | None:
    if spec is None:
        return None
    return JobDockerfile(
        path_field=str(spec.get("path_field", "dockerfile_path")),
        default=str(spec.get("default", "Dockerfile")),
        render=bool(spec.get("render", True)),
    )


def _confinement(job_type: str, spec: Any) -> Confinement:
    """A job type's `hardening: {read_only_root, capabilities}`; absent: a writable root, no capabilities."""
    if spec is None:
        return Confinement()
    where = f"job_types.{job_type}.hardening"
    if not isinstance(spec, dict) or set(spec) - {"read_only_root", "capabilities"}:
        raise PluginInvalid(f"{where}: must be {{read_only_root: true|false, capabilities: [NAME, ...]}}")
    read_only_root = spec.get("read_only_root", False)
    if not isinstance(read_only_root, bool):
        raise PluginInvalid(f"{where}.read_only_root: must be true or false")
    capabilities = spec.get("capabilities") or []
    if not isinstance(capabilities, list) or not all(isinstance(c, str) and CAPABILITY.match(c) for c in capabilities):
        raise PluginInvalid(f"{where}.capabilities: must be a list of Linux capability names like NET_BIND_SERVICE")
    return Confinement(
        read_only_root=read_only_root, capabilities=tuple(c.upper().removeprefix("CAP_") for c in capabilities)
    )


def _serving_rule(job_type: str, spec: dict[str, Any] | None, extra_fields: set[str]) -> ServingRule:
    """A plugin's `serving:` section; a mistake in it makes the plugin broken (PluginInvalid naming the key)."""
    if spec is None:
        return ServingRule()
    rule = ServingRule(
        port=int(spec.get("port", JOB_PORT)),
        port_field=spec.get("port_field"),
        path_mode=str(spec.get("path_mode", WRAPPER)),
        path_mode_field=spec.get("path_mode_field"),
        probe_path=None if spec.get("probe_path") is None else str(spec["probe_path"]),
        probe_path_field=spec.get("probe_path_field"),
        probes=str(spec.get("probes", CONTRACT)),
    )
    where = f"job_types.{job_type}.serving"
    if rule.path_mode not in PATH_MODES:
        raise PluginInvalid(f"{where}.path_mode: {rule.path_mode!r} is not one of {', '.join(PATH_MODES)}")
    if rule.probes not in PROBE_KINDS:
        raise PluginInvalid(f"{where}.probes: {rule.probes!r} is not one of {', '.join(PROBE_KINDS)}")
    if not 0 < rule.port < 65536:
        raise PluginInvalid(f"{where}.port: {rule.port} is not a TCP port")
    if rule.probe_path is not None and not rule.probe_path.startswith("/"):
        raise PluginInvalid(f"{where}.probe_path: {rule.probe_path!r} must start with /")
    for key in ("port_field", "path_mode_field", "probe_path_field"):
        field = getattr(rule, key)
        if field is not None and field not in extra_fields:
            raise PluginInvalid(f"{where}.{key}: {field!r} is not one of the job type's extra_fields")
    return rule


def resolve(requested: str, installed: list[JobType]) -> JobType:
    """Pick the job type for `name:version`, `name:latest` or a wildcard like `name:1.*`."""
    name, _, version = requested.partition(":")
    chosen = select(version, [jt for jt in installed if jt.name == name], lambda jt: jt.version)
    if chosen is None:
        available = ", ".join(sorted(jt.full_name for jt in installed)) or "none"
        raise ManifestError(
            f"jobtype: {requested!r} is not installed (installed: {available})",
            errors=[("jobtype", f"{requested!r} is not installed (installed: {available})")],
        )
    return chosen


def check_extra(job_type: JobType, jobtype_extra: dict[str, Any], job_dir: Path | None = None) -> list[str]:
    """Check jobtype_extra against the job type (files only when job_dir is given); returns warnings."""
    errors: list[tuple[str, str]] = []
    warnings: list[str] = []
    fields = {field.name: field for field in job_type.extra_fields}
    for key in jobtype_extra:
        if key not in fields:
            guess = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.7)
            hint = f" (did you mean {guess[0]!r}?)" if guess else ""
            errors.append((f"jobtype_extra.{key}", f"not a setting of job type {job_type.name}{hint}"))
    for field in job_type.extra_fields:
        path = f"jobtype_extra.{field.name}"
        value = jobtype_extra.get(field.name)
        if value is None:
            if field.required:
                errors.append((path, f"required by job type {job_type.name}"))
            continue
        expected = EXTRA_TYPES[field.type]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            errors.append((path, f"must be a {field.type}, not {type(value).__name__} {value!r}"))
            continue
        if field.type == "path" and isinstance(value, str):
            # A job type's template writes its path fields into the Dockerfile: the schema's rule for
            # Racetrack's own path keys holds for every job type's.
            problem = relative_path_problem(value)
            if problem:
                errors.append((path, problem))
            elif job_dir is not None:
                problem = _file_problem(job_dir, value)
                if problem:
                    errors.append((path, problem))
        if not field.supported:
            warnings.append(f"{path} is accepted for Racetrack compatibility but not acted on yet")
    errors += _check_serving(job_type, jobtype_extra)
    if job_type.image_from_manifest is not None:
        reference = jobtype_extra.get(job_type.image_from_manifest.field)
        problem = image_reference_problem(reference) if isinstance(reference, str) else None
        if problem:
            errors.append((f"jobtype_extra.{job_type.image_from_manifest.field}", problem))
        policy_field = job_type.image_from_manifest.pull_policy_field
        policy = jobtype_extra.get(policy_field) if policy_field else None
        if isinstance(policy, str) and policy not in PULL_POLICIES:
            errors.append((f"jobtype_extra.{policy_field}", f"{policy!r} is not one of {', '.join(PULL_POLICIES)}"))
    if (
        job_type.job_dockerfile is not None
        and job_dir is not None
        and not any(p.startswith(f"jobtype_extra.{job_type.job_dockerfile.path_field}") for p, _ in errors)
    ):
        dockerfile = job_type.job_dockerfile.path(jobtype_extra)
        problem = _file_problem(job_dir, dockerfile)
        if problem:
            errors.append(
                (
                    f"jobtype_extra.{job_type.job_dockerfile.path_field}",
                    f"{problem} (job type {job_type.name} builds the job's own Dockerfile)",
                )
            )
    if errors:
        raise ManifestError("; ".join(f"{p}: {m}" for p, m in errors), errors=errors)
    return warnings


def _file_problem(job_dir: Path, relative: str) -> str | None:
    """Why `relative` is not a file of the job's directory: missing, or a link out of it (a clone keeps links)."""
    resolved = (job_dir / relative).resolve()
    if not resolved.is_relative_to(job_dir.resolve()):
        return f"{relative} is a link to outside the job's directory"
    if not resolved.is_file():
        return f"file {relative} not found in the job's directory"
    return None


def _check_serving(job_type: JobType, jobtype_extra: dict[str, Any]) -> list[tuple[str, str]]:
    rule = job_type.serving
    errors = []
    port = jobtype_extra.get(rule.port_field) if rule.port_field else None
    if isinstance(port, int) and not isinstance(port, bool) and not 0 < port < 65536:
        errors.append((f"jobtype_extra.{rule.port_field}", f"{port} is not a TCP port (1-65535)"))
    mode = jobtype_extra.get(rule.path_mode_field) if rule.path_mode_field else None
    if isinstance(mode, str) and mode not in (FORWARD, REWRITE):
        errors.append((f"jobtype_extra.{rule.path_mode_field}", f"{mode!r} is not one of {FORWARD}, {REWRITE}"))
    probe_path = jobtype_extra.get(rule.probe_path_field) if rule.probe_path_field else None
    if isinstance(probe_path, str) and not (probe_path.startswith("/") and probe_path.isprintable()):
        errors.append((f"jobtype_extra.{rule.probe_path_field}", f"{probe_path!r} must be a path starting with /"))
    return errors
