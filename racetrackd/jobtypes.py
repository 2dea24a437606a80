"""Job types: found in plugin directories, resolved from a manifest's `jobtype: name:version`.

A job-type plugin is a directory holding `plugin-manifest.yaml` (name, version, category
`job-type`, and the Dockerfile template of each job type it provides) plus the files its
template copies into images (its wrapper). Built-in plugins in `jobtype_plugins/` load through
this same door. Pure data: nothing here touches Docker.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from jobmanifest.versions import SemanticVersion, select
from racetrackd.errors import ManifestError

log = logging.getLogger(__name__)

PLUGIN_MANIFEST = "plugin-manifest.yaml"


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
        for plugin_dir in sorted(p for p in root.iterdir() if (p / PLUGIN_MANIFEST).is_file()):
            try:
                found.extend(_load_plugin(plugin_dir))
            except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as exc:
                log.error("skipping broken job-type plugin %s: %s", plugin_dir, exc)
    return found


def _load_plugin(plugin_dir: Path) -> list[JobType]:
    manifest: dict[str, Any] = yaml.safe_load((plugin_dir / PLUGIN_MANIFEST).read_text())
    if manifest.get("category") != "job-type":
        return []
    version = str(manifest["version"])
    SemanticVersion.parse(version)  # ValueError for a malformed version: the plugin is skipped
    job_types = []
    for name, spec in manifest["job_types"].items():
        template = str(spec["dockerfile_template"])
        if not (plugin_dir / template).is_file():
            raise ValueError(f"template {template} missing")
        fields = []
        for field_name, field_spec in (spec.get("extra_fields") or {}).items():
            if field_spec.get("type", "string") not in EXTRA_TYPES:
                raise ValueError(f"extra field {field_name}: unknown type {field_spec.get('type')!r}")
            fields.append(ExtraField(
                name=str(field_name), type=field_spec.get("type", "string"),
                required=bool(field_spec.get("required", False)), supported=bool(field_spec.get("supported", True)),
            ))
        job_types.append(JobType(
            name=str(name),
            version=version,
            plugin_dir=plugin_dir,
            dockerfile_template=template,
            base_image_setting=spec.get("base_image_setting"),
            extra_fields=tuple(fields),
            runtime_image_setting=spec.get("runtime_image_setting"),
        ))
    return job_types


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
