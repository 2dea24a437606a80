"""Job types: found in plugin directories, resolved from a manifest's `jobtype: name:version`.

A job-type plugin is a directory holding `plugin-manifest.yaml` (name, version, category
`job-type`, and the Dockerfile template of each job type it provides) plus the files its
template copies into images (its wrapper). Built-in plugins in `jobtype_plugins/` load through
this same door. Pure data: nothing here touches Docker.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from racetrackd.errors import ManifestError

log = logging.getLogger(__name__)

PLUGIN_MANIFEST = "plugin-manifest.yaml"


@dataclasses.dataclass(frozen=True)
class JobType:
    name: str
    version: str
    plugin_dir: Path  # its files go into the build context as `jobtype/`
    dockerfile_template: str  # path relative to plugin_dir
    base_image_setting: str | None  # Settings field naming the default base image, if any
    required_extra: tuple[str, ...] = ()  # jobtype_extra keys a manifest must set
    path_extra: tuple[str, ...] = ()  # jobtype_extra keys naming files in the job's directory

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
            except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError, ValueError) as exc:
                log.error("skipping broken job-type plugin %s: %s", plugin_dir, exc)
    return found


def _load_plugin(plugin_dir: Path) -> list[JobType]:
    manifest: dict[str, Any] = yaml.safe_load((plugin_dir / PLUGIN_MANIFEST).read_text())
    if manifest.get("category") != "job-type":
        return []
    version = str(manifest["version"])
    job_types = []
    for name, spec in manifest["job_types"].items():
        template = str(spec["dockerfile_template"])
        if not (plugin_dir / template).is_file():
            raise ValueError(f"template {template} missing")
        job_types.append(JobType(
            name=str(name),
            version=version,
            plugin_dir=plugin_dir,
            dockerfile_template=template,
            base_image_setting=spec.get("base_image_setting"),
            required_extra=tuple(spec.get("required_extra", ())),
            path_extra=tuple(spec.get("path_extra", ())),
        ))
    return job_types


def resolve(requested: str, installed: list[JobType]) -> JobType:
    """Pick the job type for `name:version`, `name:latest` or a wildcard like `name:1.*`."""
    name, _, version = requested.partition(":")
    candidates = [jt for jt in installed if jt.name == name]
    if version == "latest":
        matching = [jt for jt in candidates if not _is_prerelease(jt.version)]
    elif "*" in version:
        matching = [jt for jt in candidates if fnmatch.fnmatchcase(jt.version, version)]
    else:
        matching = [jt for jt in candidates if jt.version == version]
    if not matching:
        available = ", ".join(sorted(jt.full_name for jt in installed)) or "none"
        raise ManifestError(f"jobtype: {requested!r} is not installed (installed: {available})")
    return max(matching, key=lambda jt: _version_key(jt.version))


def _is_prerelease(version: str) -> bool:
    return "-" in version


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("-")[0]))


def check_extra(job_type: JobType, jobtype_extra: dict[str, Any], job_dir: Path | None = None) -> None:
    """Check the manifest's jobtype_extra against what the job type needs (files only when job_dir is given)."""
    errors = [
        f"jobtype_extra.{key}: required by job type {job_type.name}"
        for key in job_type.required_extra if not jobtype_extra.get(key)
    ]
    for key in job_type.path_extra:
        value = jobtype_extra.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or value.startswith("/") or ".." in Path(value).parts:
            errors.append(f"jobtype_extra.{key}: must be a relative path inside the job directory")
        elif job_dir is not None and not (job_dir / value).is_file():
            errors.append(f"jobtype_extra.{key}: file {value} not found in the job's directory")
    if errors:
        raise ManifestError("; ".join(errors))
