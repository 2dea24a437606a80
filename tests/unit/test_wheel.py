"""The wheel carries everything racetrackd reads at run time, and nothing of the tests or caches.

Without the templates and job types in it, a daemon installed from the wheel starts but answers
"jobtype 'python3:latest' is not installed (installed: none)". tests/e2e/test_wheel.py installs
the wheel and deploys a job; this checks its file list in seconds.
"""

from __future__ import annotations

import configparser
import zipfile
from pathlib import Path

import pytest

from tests.wheel_build import REPO, build_wheel

# Folders whose every file is read at run time (Go tests included: the golang build runs them).
RUNTIME_FOLDERS = ("templates", "jobtype_plugins", "racetrackd/dashboard/static", "cli/scaffolds")
ESSENTIAL = (
    "templates/dockerfile/package_index.j2",
    "templates/dashboard/base.html",
    "jobtype_plugins/python3/plugin-manifest.yaml",
    "jobtype_plugins/python3/Dockerfile.j2",
    "jobtype_plugins/python3/wrapper-requirements.txt",
    "jobtype_plugins/python3/racetrack_job_wrapper/__main__.py",
    "jobtype_plugins/golang/Dockerfile.j2",
    "jobtype_plugins/golang/go_wrapper/main.go",
    "jobtype_plugins/golang/tools/go.mod",
    "jobtype_plugins/golang/tools/warmup-job/go.mod",
    "jobtype_plugins/docker-proxy/plugin-manifest.yaml",
    "jobtype_plugins/docker-image/plugin-manifest.yaml",
    "jobtype_plugins/dockerfile/plugin-manifest.yaml",
    "racetrackd/dashboard/static/dashboard.css",
    "racetrackd/dashboard/static/dashboard.js",
    "builders/with_build_secrets.py",
    "racetrackd/resources.py",
    "cli/main.py",
    "cli/scaffolds/python3/job.yaml.tmpl",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def wheel_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def source_files(folder: str) -> set[str]:
    return {
        path.relative_to(REPO).as_posix()
        for path in (REPO / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def test_the_wheel_holds_the_templates_job_types_and_dashboard_assets(wheel_files: set[str]) -> None:
    assert set(ESSENTIAL) - wheel_files == set()


@pytest.mark.parametrize("folder", RUNTIME_FOLDERS)
def test_every_file_of_a_runtime_folder_is_shipped(wheel_files: set[str], folder: str) -> None:
    assert source_files(folder) - wheel_files == set(), "add a pattern to [options.package_data] in setup.cfg"


def test_no_tests_or_caches_are_shipped(wheel_files: set[str]) -> None:
    unwanted = {
        name
        for name in wheel_files
        if name.startswith(("tests/", "samples/", "bench/", "docs/")) or "__pycache__" in name or name.endswith(".pyc")
    }

    assert unwanted == set()


def test_the_wheel_installs_both_commands(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        name = next(name for name in archive.namelist() if name.endswith(".dist-info/entry_points.txt"))
        entry_points = configparser.ConfigParser()
        entry_points.read_string(archive.read(name).decode())

    assert dict(entry_points["console_scripts"]) == {"racetrackd": "racetrackd.commands:main", "rtd": "cli.main:main"}
