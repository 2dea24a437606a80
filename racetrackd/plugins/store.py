"""Installed job-type plugins: the built-in ones and those uploaded at run time, seen alike by every process.

Uploaded plugins live unpacked in DATA_DIR/plugins/<name>-<version>/. An upload is unpacked and
checked in a staging directory first (safe ZIP, manifest, extra fields, every template rendered
once with sample values, plugin.py imported) and only then moved into place, so a bad upload
changes nothing. Every install or removal rings a change signal in the data dir; each process
(HTTP workers, the deployment worker) reloads its list on the next look, so a change is seen at
once without a restart. A broken plugin on disk is listed with its error and provides nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import logging
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from builders.dockerfile import render_dockerfile
from builders.recipe import BuildOptions, template_variables
from jobmanifest import ManifestInvalid, validate_manifest
from jobmanifest.versions import SemanticVersion
from pluginbundle import (
    JOB_TYPE_CATEGORY,
    PLUGIN_MANIFEST,
    PluginInvalid,
    PluginManifest,
    check_directory,
    parse_manifest,
    unpack,
)
from racetrackd import audit
from racetrackd.auth.accounts import ChangeSignal
from racetrackd.db import AuditEvent
from racetrackd.errors import (
    ConflictError,
    ForbiddenError,
    ManifestError,
    NotFoundError,
    RacetrackError,
    ValidationError,
)
from racetrackd.plugins import jobtypes
from racetrackd.plugins.hooks import HOOKS, PluginHooks
from racetrackd.plugins.jobtypes import JobType
from racetrackd.settings import BUILTIN_PLUGINS_DIR, Settings

log = logging.getLogger(__name__)

CHANGE_SIGNAL_FILE = "plugins-changed"
STAGING = ".staging"
ABANDONED_AFTER_SECONDS = 3600


@dataclasses.dataclass(frozen=True)
class Plugin:
    """One plugin directory as loaded: what it provides, or why it provides nothing."""

    directory: Path
    builtin: bool
    manifest: PluginManifest | None = None
    job_types: tuple[JobType, ...] = ()
    hooks: PluginHooks | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.manifest.name if self.manifest else self.directory.name

    @property
    def version(self) -> str:
        return self.manifest.version if self.manifest else ""

    def dto(self) -> dict[str, Any]:
        """Racetrack's PluginManifest shape plus what racetrackd knows about it."""
        base = (
            self.manifest.to_dict()
            if self.manifest
            else {
                "name": self.name,
                "version": self.version,
                "build_date": None,
                "url": None,
                "priority": 0,
                "category": None,
                "components": [],
            }
        )
        return {
            **base,
            "job_types": [jt.full_name for jt in self.job_types],
            "hooks": sorted(name for name in _hook_names(self.hooks)),
            "builtin": self.builtin,
            "error": self.error,
        }


def _hook_names(hooks: PluginHooks | None) -> list[str]:
    return [name for name in HOOKS if hooks is not None and hasattr(hooks.instance, name)]


class PluginStore:
    def __init__(self, builtin_dirs: list[Path], data_dir: Path, base_image_of: dict[str, str] | None = None) -> None:
        self.builtin_dirs = builtin_dirs
        self.root = data_dir / "plugins"
        self.root.mkdir(parents=True, exist_ok=True)
        self.changes = ChangeSignal(data_dir / CHANGE_SIGNAL_FILE)
        # plugin-declared setting name -> value (Settings.plugin_settings), for rendering templates at install
        self.base_image_of = base_image_of or {}
        self._lock = threading.Lock()
        self._seen: bytes | None = None
        self._plugins: list[Plugin] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> PluginStore:
        """Built-in plugins from jobtype_plugins/, uploaded ones from DATA_DIR/plugins."""
        return cls([BUILTIN_PLUGINS_DIR], settings.data_dir, dict(settings.plugin_settings))

    # ---- reading
    def plugins(self) -> list[Plugin]:
        """Every plugin, built-in first, reloaded when any process changed the installed set."""
        with self._lock:
            current = self.changes.current()
            if current != self._seen:
                self._plugins = self._load_all()
                self._seen = current
            return list(self._plugins)

    def job_types(self) -> list[JobType]:
        return [jt for plugin in self.plugins() for jt in plugin.job_types]

    def hooks_for(self, job_type_version: str) -> PluginHooks | None:
        """The hooks of the plugin providing `name:version` (as stored on a job), if it is still installed."""
        for plugin in self.plugins():
            if any(jt.full_name == job_type_version for jt in plugin.job_types):
                return plugin.hooks
        return None

    def validate_manifest(self, job_type: JobType, manifest: dict[str, Any]) -> list[str]:
        """Run the job type's `validate_job_manifest` hook: ManifestError naming the fields it refuses;
        returns warnings (a hook that failed)."""
        hooks = self.hooks_for(job_type.full_name)
        if hooks is None:
            return []
        errors, warning = hooks.validate_job_manifest(manifest, job_type.full_name)
        if errors:
            raise ManifestError("; ".join(f"{field}: {message}" for field, message in errors), errors=errors)
        return [warning] if warning else []

    def find(self, name: str, version: str) -> Plugin:
        for plugin in self.plugins():
            if plugin.name == name and plugin.version == version:
                return plugin
        installed = ", ".join(f"{p.name} {p.version}" for p in self.plugins()) or "none"
        raise NotFoundError(f"plugin {name} {version} is not installed (installed: {installed})")

    def _load_all(self) -> list[Plugin]:
        found = [
            self._load(d, builtin=True)
            for root in self.builtin_dirs
            if root.is_dir()
            for d in jobtypes.plugin_directories(root)
        ]
        found += [
            self._load(d, builtin=False) for d in jobtypes.plugin_directories(self.root) if not d.name.startswith(".")
        ]
        seen: dict[str, Path] = {}
        checked = []
        for plugin in found:
            clash = next((jt.full_name for jt in plugin.job_types if jt.full_name in seen), None)
            if clash is not None:  # two plugins claiming one job type version: the first loaded wins
                plugin = dataclasses.replace(
                    plugin, job_types=(), hooks=None, error=f"job type {clash} is already provided by {seen[clash]}"
                )
                log.error("skipping job-type plugin %s: %s", plugin.directory, plugin.error)
            for jt in plugin.job_types:
                seen[jt.full_name] = plugin.directory
            checked.append(plugin)
        return checked

    def _load(self, directory: Path, builtin: bool) -> Plugin:
        try:
            return self.check(directory, builtin)
        except (PluginInvalid, OSError) as exc:
            log.error("skipping broken job-type plugin %s: %s", directory, exc)
            manifest = None
            with contextlib.suppress(PluginInvalid, OSError):  # its name and version, when they can be read
                manifest = parse_manifest((directory / PLUGIN_MANIFEST).read_text(encoding="utf-8", errors="replace"))
            return Plugin(directory=directory, builtin=builtin, manifest=manifest, error=str(exc))

    def check(self, directory: Path, builtin: bool = False) -> Plugin:
        """Load the plugin in `directory` completely; PluginInvalid naming what is wrong."""
        manifest = check_directory(directory)
        job_types = tuple(jobtypes.load_job_types(directory, manifest))
        for job_type in job_types:
            self._render_sample(job_type)
        hooks = PluginHooks.load(directory, f"{manifest.name} {manifest.version}")
        return Plugin(directory=directory, builtin=builtin, manifest=manifest, job_types=job_types, hooks=hooks)

    def _render_sample(self, job_type: JobType) -> None:
        """Render the template once with a sample job, so a misspelt variable fails the install, not a build."""
        # The settings of plugins installed at start, and the plugin's own (their defaults until a restart)
        image_of = {**dict(job_type.declared_settings), **self.base_image_of}
        for key, setting in (
            ("base_image_setting", job_type.base_image_setting),
            ("runtime_image_setting", job_type.runtime_image_setting),
        ):
            if setting and setting not in image_of:
                raise PluginInvalid(
                    f"job_types.{job_type.name}.{key}: no setting {setting!r} (image settings: "
                    f"{', '.join(sorted(image_of)) or 'none'})"
                )
        if job_type.job_dockerfile is not None or job_type.image_from_manifest is not None:
            return  # the template is each job's own Dockerfile, rendered (and checked) when that job builds; or none
        try:
            manifest = validate_manifest(
                {
                    "name": "plugin-check",
                    "version": "0.0.1",
                    "owner_email": "plugin-check@example.com",
                    "jobtype": job_type.full_name,
                    "jobtype_extra": jobtypes.sample_jobtype_extra(job_type),
                }
            )
        except ManifestInvalid as exc:
            raise PluginInvalid(f"job type {job_type.name}: cannot make a sample manifest: {exc}") from exc
        variables = template_variables(
            manifest=manifest,
            job_type=job_type,
            base_image=image_of.get(job_type.base_image_setting or "", "") or "sample:latest",
            runtime_image=image_of.get(job_type.runtime_image_setting or "", ""),
            build_stage_labels={"racetrackd.instance": "plugin-check"},
            build=BuildOptions().as_template_variable(),  # no CA bundle, package index nor secrets
            git_version="0000000",
            racetrackd_version="0.0.0",
        )
        try:
            render_dockerfile(job_type.plugin_dir, job_type.dockerfile_template, variables)
        except RacetrackError as exc:
            raise PluginInvalid(exc.message) from exc

    # ---- changing
    def install(self, filename: str, data: bytes, replace: bool = False) -> Plugin:
        """Check and install an uploaded plugin ZIP; the same name and version is replaced, and with
        `replace` every other uploaded version of that name is removed. ValidationError names the problem."""
        staging_root = self.root / STAGING
        staging_root.mkdir(exist_ok=True)
        _clear_abandoned(staging_root)
        staging = Path(tempfile.mkdtemp(dir=staging_root))
        try:
            try:
                manifest = unpack(data, staging)
                if manifest.category != JOB_TYPE_CATEGORY:
                    raise PluginInvalid(
                        f"category: {manifest.category!r}: racetrackd runs job-type plugins only "
                        f"(category: {JOB_TYPE_CATEGORY})"
                    )
                checked = self.check(staging)
            except PluginInvalid as exc:
                raise ValidationError(f"plugin {filename}: {exc}") from exc
            with self._exclusive():
                self._refuse_clashes(checked, replace)
                target = self.root / f"{manifest.name}-{manifest.version}"
                retired = [target] if target.exists() else []
                if replace:
                    retired += [
                        p.directory
                        for p in self._plugins_on_disk()
                        if p.name == manifest.name and p.directory != target
                    ]
                for directory in retired:
                    self._retire(directory)
                staging.rename(target)
                self.changes.ring()
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("installed plugin %s %s", manifest.name, manifest.version)
        return self.find(manifest.name, manifest.version)

    def _refuse_clashes(self, new: Plugin, replace: bool) -> None:
        for plugin in self.plugins():
            if plugin.builtin and plugin.name == new.name and plugin.version == new.version:
                raise ConflictError(
                    f"plugin {new.name} {new.version} is built in and cannot be replaced",
                    hint="upload it with a higher version: the highest version serves 'latest'",
                )
            if plugin.name == new.name and (plugin.version == new.version or replace):
                continue  # about to be replaced
            for job_type in plugin.job_types:
                if job_type.full_name in {jt.full_name for jt in new.job_types}:
                    raise ConflictError(
                        f"job type {job_type.full_name} is already provided by plugin {plugin.name} {plugin.version}"
                    )

    def remove(self, name: str, version: str) -> Plugin:
        """Remove an uploaded plugin; built-in ones cannot be removed."""
        with self._exclusive():
            plugin = next((p for p in self._plugins_on_disk() if p.name == name and p.version == version), None)
            if plugin is None:
                builtin = next(
                    (p for p in self.plugins() if p.builtin and p.name == name and p.version == version), None
                )
                if builtin is not None:
                    raise ForbiddenError(
                        f"plugin {name} {version} is built in and cannot be removed",
                        hint="install a higher version to take over 'latest'",
                    )
                self.find(name, version)  # NotFoundError listing what is installed
                raise NotFoundError(f"plugin {name} {version} is not installed")
            self._retire(plugin.directory)
            self.changes.ring()
        log.info("removed plugin %s %s", name, version)
        return plugin

    def _plugins_on_disk(self) -> list[Plugin]:
        return [p for p in self.plugins() if not p.builtin]

    def _retire(self, directory: Path) -> None:
        """Move a plugin directory out of sight at once, then delete it (a rename is atomic; rmtree is not)."""
        trash = self.root / STAGING / f"removed-{uuid.uuid4().hex}"
        directory.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One install or removal at a time across all of the daemon's processes."""
        with (self.root / ".lock").open("a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def archive(self, name: str, version: str) -> tuple[str, bytes]:
        """The plugin as a ZIP (`name-version.zip`), made from its installed files."""
        plugin = self.find(name, version)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(plugin.directory.rglob("*")):
                if path.is_file() and not path.is_symlink() and "__pycache__" not in path.parts:
                    archive.write(path, path.relative_to(plugin.directory).as_posix())
        return f"{plugin.name}-{plugin.version}.zip", buffer.getvalue()


def _clear_abandoned(staging_root: Path) -> None:
    """Remove what an install or removal interrupted by a crash left in staging (long past any install)."""
    cutoff = time.time() - ABANDONED_AFTER_SECONDS
    for leftover in staging_root.iterdir():
        with contextlib.suppress(OSError):
            if leftover.stat().st_mtime < cutoff:
                shutil.rmtree(leftover, ignore_errors=True)


def sorted_job_type_versions(job_types: list[JobType]) -> list[str]:
    """`name:version` of every job type, by name then version (newest last)."""
    ordered = sorted(job_types, key=lambda jt: (jt.name, SemanticVersion.parse(jt.version).sort_key()))
    return [jt.full_name for jt in ordered]


def after_job_delete(store: PluginStore, job: dict[str, Any], executor: str | None) -> None:
    """Run `post_job_delete` of the deleted job's type; a failure goes to the log and the audit log."""
    hooks = store.hooks_for(str(job.get("job_type_version") or ""))
    warning = hooks.notify("post_job_delete", job) if hooks else None
    if warning:
        AuditEvent.record(audit.PLUGIN_HOOK_FAILED, str(job["name"]), str(job["version"]), executor, error=warning)
