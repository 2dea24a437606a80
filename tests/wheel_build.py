"""racetrackd's wheel, built the way a user would (`pip wheel .`), for the tests of what it ships.

Built from a copy of the files setup.cfg packages, not in the checkout: an in-tree build leaves
build/ behind, whose stale files setuptools would put into later wheels. pip's build isolation
fetches setuptools and wheel (from the configured index or find-links) as `pipx install` would.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("setup.cfg", "pyproject.toml", "README.md")


def top_level_packages() -> list[str]:
    """The top-level packages setup.cfg puts into the wheel."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return sorted({name.split(".")[0] for name in config["options.packages.find"]["include"].split()})


def build_wheel(workdir: Path) -> Path:
    """Build the wheel under `workdir` and return its path."""
    source = workdir / "source"
    source.mkdir(parents=True)
    for name in PROJECT_FILES:
        shutil.copy(REPO / name, source / name)
    for package in top_level_packages():
        shutil.copytree(
            REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        )
    dist = workdir / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"pip wheel failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
    (wheel,) = dist.glob("racetrackd-*.whl")
    return wheel
