"""Job types: read from plugin directories, resolved from a manifest's `jobtype: name:version`.

A job-type plugin is a directory holding `plugin-manifest.yaml` (name, version, category
`job-type`, and the Dockerfile template of each job type it provides) plus the files its
template copies into images (its wrapper); the package format is `pluginbundle`. Built-in
plugins in `jobtype_plugins/` and uploaded ones (racetrackd.plugins) load through this same
door. Pure data: nothing here touches Docker.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jobmanifest import Manifest
from jobmanifest.versions import select
from pluginbundle import JOB_TYPE_CATEGORY, PLUGIN_MANIFEST, PluginInvalid, PluginManifest, check_directory
from racetrackd.errors import ManifestError

log = logging.getLogger(__name__)


EXTRA_TYPES = {"string": str, "path": str, "boolean": bool, "integer": int}


@dataclasses.dataclass(frozen=True)
class ExtraField:
    """One `jobtype_extra` key a job type understands."""

    name: str
    type: str
    required: bool = False
    supported: bool = True


@dataclasses.dataclass(frozen=True)
class JobType:
    name: str
    version: str
    plugin_dir: Path  # its files go into the build context as `jobtype/`
    dockerfile_template: str  # path relative to plugin_dir
    base_image_setting: str | None  # Settings field naming the default base image, if any
    extra_fields: tuple[ExtraField, ...] = ()
    plugin_name: str = ""  # the plugin providing it, whose hooks apply to its jobs
    # Settings field naming the image a multi-stage template runs the job in (`runtime_image`), if any
    runtime_image_setting: str | None = None

    @property
    def full_name(self) -> str:
        return f"{self.name}:{self.version}"


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
        fields = []
        extra = spec.get("extra_fields") or {}
        if not isinstance(extra, dict):
            raise PluginInvalid(f"job_types.{name}.extra_fields: must map field names to {{type, required}}")
        for field_name, field_spec in extra.items():
            field_spec = field_spec or {}
            if not isinstance(field_spec, dict) or field_spec.get("type", "string") not in EXTRA_TYPES:
                raise PluginInvalid(f"job_types.{name}.extra_fields.{field_name}: type must be one of "
                                    f"{', '.join(EXTRA_TYPES)}")
            fields.append(ExtraField(
                name=str(field_name), type=field_spec.get("type", "string"),
                required=bool(field_spec.get("required", False)), supported=bool(field_spec.get("supported", True)),
            ))
        base_image_setting = spec.get("base_image_setting")
        if base_image_setting is not None and not isinstance(base_image_setting, str):
            raise PluginInvalid(f"job_types.{name}.base_image_setting: must be the name of a setting")
        runtime_image_setting = spec.get("runtime_image_setting")
        if runtime_image_setting is not None and not isinstance(runtime_image_setting, str):
            raise PluginInvalid(f"job_types.{name}.runtime_image_setting: must be the name of a setting")
        job_types.append(JobType(
            name=name,
            version=manifest.version,
            plugin_dir=plugin_dir,
            dockerfile_template=str(spec["dockerfile_template"]),
            base_image_setting=base_image_setting,
            extra_fields=tuple(fields),
            plugin_name=manifest.name,
            runtime_image_setting=runtime_image_setting,
        ))
    return job_types


def template_variables(*, manifest: Manifest, job_type: JobType, base_image: str, build: dict[str, Any],
                       git_version: str, racetrackd_version: str, runtime_image: str = "",
                       build_stage_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """What a job type's Dockerfile template receives (docs/plugins.md lists them)."""
    return {
        "base_image": base_image,
        "runtime_image": runtime_image,
        # For the build stages of a multi-stage template: their images are left untagged, and these
        # labels are how they are found and removed with the daemon's other images.
        "build_stage_labels": build_stage_labels or {},
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


SAMPLE_EXTRA_VALUES: dict[str, Any] = {"string": "sample", "path": "sample.txt", "boolean": True, "integer": 1}


def sample_jobtype_extra(job_type: JobType) -> dict[str, Any]:
    """A value for every extra field, so that rendering a template once at install time reaches its branches."""
    return {field.name: SAMPLE_EXTRA_VALUES[field.type] for field in job_type.extra_fields}


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
            if value.startswith("/") or ".." in Path(value).parts:
                errors.append((path, "must be a relative path inside the job directory"))
            elif job_dir is not None and not (job_dir / value).is_file():
                errors.append((path, f"file {value} not found in the job's directory"))
        if not field.supported:
            warnings.append(f"{path} is accepted for Racetrack compatibility but not acted on yet")
    if errors:
        raise ManifestError("; ".join(f"{p}: {m}" for p, m in errors), errors=errors)
    return warnings
