"""racetrackd.resources: the shipped files are found through importlib.resources, as real directories."""

from __future__ import annotations

import sys
import types
import zipfile
from pathlib import Path

import pytest

from racetrackd import resources
from racetrackd.errors import RacetrackError


def test_the_shipped_folders_are_found() -> None:
    assert (resources.builtin_plugins_dir() / "python3" / "plugin-manifest.yaml").is_file()
    assert (resources.dockerfile_templates_dir() / "package_index.j2").is_file()
    assert (resources.templates_dir() / "dashboard" / "base.html").is_file()
    assert (resources.dashboard_static_dir() / "dashboard.css").is_file()
    assert b"def main(" in resources.build_secrets_helper_source()


def test_a_foreign_package_of_the_same_name_is_named_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    foreign = types.ModuleType("templates")
    foreign.__file__ = "/somewhere/site-packages/templates/__init__.py"
    monkeypatch.setitem(sys.modules, "templates", foreign)

    with pytest.raises(RacetrackError, match="'templates' package imported from /somewhere/.* is not racetrackd's"):
        resources.templates_dir()


def test_files_inside_a_zip_are_extracted_once_without_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "_extracted", {})
    archive_path = tmp_path / "packages.zip"
    with zipfile.ZipFile(archive_path, "w") as archive:
        archive.writestr("pkg/plugin/Dockerfile.j2", "FROM {{ base_image }}\n")
        archive.writestr("pkg/plugin/__pycache__/x.cpython-311.pyc", b"\0")
    inside = zipfile.Path(archive_path, "pkg/")  # what importlib.resources gives for a zip import

    directory = resources._on_disk(inside, "test-zip")

    assert (directory / "plugin" / "Dockerfile.j2").read_text() == "FROM {{ base_image }}\n"
    assert not (directory / "plugin" / "__pycache__").exists()
    assert resources._on_disk(inside, "test-zip") == directory
