"""Reading manifests as users write them: files, `extends` overlays, `-e key.path=value` overrides."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from jobmanifest.schema import FieldError, ManifestInvalid

MANIFEST_FILES = ("job.yaml", "fatman.yaml")  # fatman.yaml: Racetrack's legacy name


def find_manifest(directory: Path) -> Path:
    for name in MANIFEST_FILES:
        if (directory / name).is_file():
            return directory / name
    raise ManifestInvalid([FieldError("manifest", f"no job.yaml in {directory}")])


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestInvalid([FieldError("manifest", f"{source} is not valid YAML: {_yaml_problem(exc)}")]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ManifestInvalid([FieldError("manifest", f"{source} must hold a mapping of fields")])
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's problem and where, in one line: `line 3, column 6: mapping values are not allowed here`
    (its own text names a `<unicode string>` rather than the file, over three lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def load_manifest_dict(text: str, source: str, base_dir: Path) -> dict[str, Any]:
    """Parse a manifest and apply its `extends` overlay (one level; the overlay wins)."""
    overlay = parse_yaml(text, source)
    extends = overlay.get("extends")
    if extends is None:
        return overlay
    if not isinstance(extends, str) or Path(extends).is_absolute():
        raise ManifestInvalid([FieldError("extends", "must be a relative path to the base manifest")])
    base_path = base_dir / extends
    if not base_path.is_file():
        raise ManifestInvalid([FieldError("extends", f"base manifest {extends} not found next to {source}")])
    base = parse_yaml(base_path.read_text(), str(base_path))
    if base.get("extends") is not None:
        raise ManifestInvalid([FieldError("extends", f"{extends} extends another manifest; only one level is allowed")])
    merged = merge(base, overlay)
    merged.pop("extends", None)
    return merged


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge mappings; the overlay wins; lists and scalars are replaced, not combined."""
    result = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.path=value` overrides (value parsed as YAML), creating mappings on the way."""
    result = copy.deepcopy(data)
    for override in overrides:
        key_path, sep, raw_value = override.partition("=")
        if not sep or not key_path:
            raise ManifestInvalid([FieldError("-e", f"{override!r} must be KEY.PATH=VALUE")])
        try:
            value = yaml.safe_load(raw_value) if raw_value else ""
        except yaml.YAMLError as exc:
            raise ManifestInvalid([FieldError(key_path, f"override value is not valid YAML: {exc}")]) from exc
        node = result
        keys = key_path.split(".")
        for index, key in enumerate(keys[:-1]):
            if node.get(key) is None:  # absent or left empty in job.yaml: becomes a mapping
                node[key] = {}
            child = node[key]
            if not isinstance(child, dict):
                raise ManifestInvalid(
                    [FieldError(".".join(keys[: index + 1]), "is not a mapping; cannot set a key inside it")]
                )
            node = child
        node[keys[-1]] = value
    return result
