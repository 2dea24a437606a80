"""The job-type plugin package format, shared by the daemon and `rtd`: the manifest, ZIP safety, bundling.

A plugin is a directory (or a ZIP of one, files at its root) holding `plugin-manifest.yaml`, the
Dockerfile template of each job type it provides, the files those templates copy into images, and
optionally `plugin.py` with hooks. Pure: no Flask, no Docker, nothing from `racetrackd`, so the CLI
checks a bundle exactly as the daemon checks an upload (the daemon also renders templates and
imports hooks, which need its own modules).
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import re
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2
import yaml

from jobmanifest.versions import SemanticVersion

PLUGIN_MANIFEST = "plugin-manifest.yaml"
HOOKS_FILE = "plugin.py"
IGNORE_FILE = ".racetrackignore"
JOB_TYPE_CATEGORY = "job-type"
MAX_ARCHIVE_BYTES = 64 * 1024**2
MAX_UNPACKED_BYTES = 256 * 1024**2  # a ZIP bomb stops here, however well it compresses
MAX_FILES = 5000
MANIFEST_KEYS = ("name", "version", "category", "build_date", "url", "priority", "components", "job_types", "settings")
# A daemon setting a plugin declares: read from RACETRACK_<NAME upper-cased>, like the daemon's own.
SETTING_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
SETTING_KEYS = ("default", "help")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
# Never bundled: version control, caches, earlier bundles.
ALWAYS_IGNORED = (".git", "__pycache__", ".mypy_cache", ".pytest_cache", ".venv")


class PluginInvalid(ValueError):
    """A plugin that cannot be installed; the message names the file or key at fault."""


@dataclasses.dataclass(frozen=True)
class PluginManifest:
    """`plugin-manifest.yaml`: Racetrack's keys plus `job_types` (what each job type builds from)."""

    name: str
    version: str
    category: str | None = None
    build_date: str | None = None
    url: str | None = None
    priority: int = 0
    components: tuple[str, ...] = ()
    job_types: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # Daemon settings the plugin declares: name -> {default, help} (e.g. its job types' base images)
    settings: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Racetrack's PluginManifest shape (without job_types, which `GET /plugin` lists by name)."""
        return {
            "name": self.name,
            "version": self.version,
            "build_date": self.build_date,
            "url": self.url,
            "priority": self.priority,
            "category": self.category,
            "components": list(self.components),
        }


def parse_manifest(text: str) -> PluginManifest:
    """Read `plugin-manifest.yaml`; PluginInvalid naming the first bad key."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PluginInvalid(f"{PLUGIN_MANIFEST}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise PluginInvalid(f"{PLUGIN_MANIFEST}: must be a mapping of keys (name, version, category, ...)")
    unknown = [str(key) for key in data if key not in MANIFEST_KEYS]
    if unknown:
        raise PluginInvalid(f"{PLUGIN_MANIFEST}: unknown key {unknown[0]!r} (known: {', '.join(MANIFEST_KEYS)})")
    name = data.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise PluginInvalid(
            f"{PLUGIN_MANIFEST}: name: must be lower-case letters, digits, '.', '_' or '-' (got {name!r})"
        )
    version = data.get("version")
    if isinstance(version, (int, float)) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str):
        raise PluginInvalid(f"{PLUGIN_MANIFEST}: version: required, a semantic version like 1.2.0")
    try:
        SemanticVersion.parse(version)
    except ValueError as exc:
        raise PluginInvalid(f"{PLUGIN_MANIFEST}: version: {version!r} is not a semantic version like 1.2.0") from exc
    priority = data.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise PluginInvalid(f"{PLUGIN_MANIFEST}: priority: must be a whole number")
    components = data.get("components") or []
    if not isinstance(components, list) or not all(isinstance(c, str) for c in components):
        raise PluginInvalid(f"{PLUGIN_MANIFEST}: components: must be a list of names")
    job_types = data.get("job_types") or {}
    if not isinstance(job_types, dict):
        raise PluginInvalid(f"{PLUGIN_MANIFEST}: job_types: must map job type names to their settings")
    for job_type, spec in job_types.items():
        where = f"{PLUGIN_MANIFEST}: job_types.{job_type}"
        if not isinstance(job_type, str) or not NAME_PATTERN.match(job_type):
            raise PluginInvalid(f"{where}: a job type name is lower-case letters, digits, '.', '_' or '-'")
        if not isinstance(spec, dict):
            raise PluginInvalid(f"{where}: must map settings (dockerfile_template, ...) to values")
        if "dockerfile_from_job" in spec:  # the job's own Dockerfile is the template (docker-proxy, dockerfile)
            if not isinstance(spec["dockerfile_from_job"], dict):
                raise PluginInvalid(f"{where}.dockerfile_from_job: must be {{path_field, default, render}}")
        elif "image_from_manifest" in spec:  # nothing is built: the job runs an image it names (docker-image)
            if not isinstance(spec["image_from_manifest"], dict) or not isinstance(
                spec["image_from_manifest"].get("field"), str
            ):
                raise PluginInvalid(f"{where}.image_from_manifest: must be {{field: <jobtype_extra key>}}")
        elif not isinstance(spec.get("dockerfile_template"), str):
            raise PluginInvalid(
                f"{where}.dockerfile_template: required, the template's path in the plugin "
                f"(or dockerfile_from_job, to build the job's own Dockerfile, or image_from_manifest, "
                f"to run an image the manifest names)"
            )
    return PluginManifest(
        name=name,
        version=version,
        category=_optional_str(data, "category"),
        build_date=_optional_str(data, "build_date"),
        url=_optional_str(data, "url"),
        priority=priority,
        components=tuple(components),
        job_types={str(k): dict(v) for k, v in job_types.items()},
        settings=_settings(data.get("settings")),
    )


def _settings(data: Any) -> dict[str, dict[str, str]]:
    """The `settings:` section: {name: {default: ..., help: ...}}; PluginInvalid naming the bad key."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PluginInvalid(f"{PLUGIN_MANIFEST}: settings: must map setting names to {{default, help}}")
    settings = {}
    for name, spec in data.items():
        where = f"{PLUGIN_MANIFEST}: settings.{name}"
        if not isinstance(name, str) or not SETTING_NAME_PATTERN.match(name):
            raise PluginInvalid(
                f"{where}: a setting name is lower-case letters, digits and '_', starting with "
                f"a letter (its variable is RACETRACK_ and the name in upper case)"
            )
        if not isinstance(spec, dict) or set(spec) - set(SETTING_KEYS):
            raise PluginInvalid(f"{where}: must be {{default: value, help: text}}")
        default, help_text = spec.get("default", ""), spec.get("help")
        if not isinstance(default, str) or not isinstance(help_text, str) or not help_text:
            raise PluginInvalid(f"{where}: default must be a string, and help a sentence saying what it sets")
        settings[name] = {"default": default, "help": help_text}
    return settings


def _optional_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, (str, int, float, datetime.date)):
        raise PluginInvalid(f"{PLUGIN_MANIFEST}: {key}: must be text")
    return str(value)


def check_directory(plugin_dir: Path) -> PluginManifest:
    """The manifest of the plugin in `plugin_dir`, after checking each template exists inside it and parses."""
    manifest_path = plugin_dir / PLUGIN_MANIFEST
    if not manifest_path.is_file():
        raise PluginInvalid(f"{PLUGIN_MANIFEST} not found at the plugin's top level")
    manifest = parse_manifest(manifest_path.read_text(encoding="utf-8", errors="replace"))
    for job_type, spec in manifest.job_types.items():
        if "dockerfile_from_job" in spec or "image_from_manifest" in spec:
            continue  # no template of its own: each job brings its Dockerfile, or its image
        template = str(spec["dockerfile_template"])
        path = (plugin_dir / template).resolve()
        where = f"{PLUGIN_MANIFEST}: job_types.{job_type}.dockerfile_template"
        if not path.is_relative_to(plugin_dir.resolve()):
            raise PluginInvalid(f"{where}: {template!r} is outside the plugin")
        if not path.is_file():
            raise PluginInvalid(f"{where}: file {template} not found in the plugin")
        try:
            jinja2.Environment(autoescape=False).parse(path.read_text(encoding="utf-8"))  # a Dockerfile
        except jinja2.TemplateSyntaxError as exc:
            raise PluginInvalid(f"{template} line {exc.lineno}: template syntax error: {exc.message}") from exc
        except UnicodeDecodeError as exc:
            raise PluginInvalid(f"{template}: not UTF-8 text") from exc
    return manifest


def _safe_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The archive's entries, refusing any that could land outside the plugin directory or overflow the disk."""
    members = archive.infolist()
    if len(members) > MAX_FILES:
        raise PluginInvalid(f"ZIP holds {len(members)} entries (at most {MAX_FILES})")
    total = 0
    for member in members:
        path = PurePosixPath(member.filename.replace("\\", "/"))
        if (
            member.filename.startswith(("/", "\\"))
            or path.is_absolute()
            or ".." in path.parts
            or re.match(r"^[A-Za-z]:", member.filename)
        ):
            raise PluginInvalid(f"ZIP entry {member.filename!r} points outside the plugin directory")
        mode = member.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise PluginInvalid(f"ZIP entry {member.filename!r} is a symbolic link (not allowed in plugins)")
        total += member.file_size
        if total > MAX_UNPACKED_BYTES:
            raise PluginInvalid(f"ZIP unpacks to more than {MAX_UNPACKED_BYTES // 1024**2} MiB")
    return members


def unpack(data: bytes, destination: Path) -> PluginManifest:
    """Unpack a plugin ZIP into the empty directory `destination`, checking it first; returns its manifest."""
    if len(data) > MAX_ARCHIVE_BYTES:
        raise PluginInvalid(f"ZIP is larger than {MAX_ARCHIVE_BYTES // 1024**2} MiB")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = _safe_members(archive)
            if PLUGIN_MANIFEST not in {m.filename for m in members}:
                raise PluginInvalid(f"{PLUGIN_MANIFEST} not found at the ZIP's top level")
            written = 0
            for member in members:
                target = destination / member.filename
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, target.open("wb") as sink:
                    while chunk := source.read(1024 * 1024):
                        written += len(chunk)  # file_size in the header may lie
                        if written > MAX_UNPACKED_BYTES:
                            raise PluginInvalid(f"ZIP unpacks to more than {MAX_UNPACKED_BYTES // 1024**2} MiB")
                        sink.write(chunk)
                if (member.external_attr >> 16) & 0o111:
                    target.chmod(0o755)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
        raise PluginInvalid(f"not a readable ZIP file: {exc}") from exc
    return check_directory(destination)


def bundle(plugin_dir: Path, version: str | None = None) -> tuple[str, bytes]:
    """ZIP the plugin in `plugin_dir` (honouring `.racetrackignore`), stamped with a build date.

    Returns the file name `{name}-{version}.zip` and the archive. `version` overrides the manifest's.
    """
    manifest = check_directory(plugin_dir)
    raw: dict[str, Any] = yaml.safe_load((plugin_dir / PLUGIN_MANIFEST).read_text(encoding="utf-8"))
    if version is not None:
        raw["version"] = version
    raw["build_date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    stamped = yaml.safe_dump(raw, sort_keys=False)
    manifest = parse_manifest(stamped)
    ignored = _ignore_patterns(plugin_dir)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(plugin_dir.rglob("*")):
            relative = path.relative_to(plugin_dir)
            if path.is_symlink() or not path.is_file() or relative.as_posix() == PLUGIN_MANIFEST:
                continue
            if (
                any(part in ALWAYS_IGNORED for part in relative.parts)
                or relative.suffix == ".zip"
                or _ignored(relative, ignored)
            ):
                continue
            archive.write(path, relative.as_posix())
        archive.writestr(PLUGIN_MANIFEST, stamped)
    return f"{manifest.name}-{manifest.version}.zip", buffer.getvalue()


def _ignore_patterns(plugin_dir: Path) -> list[str]:
    path = plugin_dir / IGNORE_FILE
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def _ignored(relative: Path, patterns: list[str]) -> bool:
    """gitignore-like: a pattern matches the path or any of its parents; `!pattern` (or Racetrack's `-pattern`)
    includes again what an earlier pattern excluded."""
    ignored = False
    for pattern in patterns:
        negate = pattern[0] in "!-"
        glob = pattern[1:] if negate else pattern
        glob = glob.strip("/")
        candidates = [relative, *relative.parents][:-1]  # the path and its parent directories, not "."
        if any(candidate.match(glob) or candidate.as_posix() == glob for candidate in candidates):
            ignored = not negate
    return ignored
