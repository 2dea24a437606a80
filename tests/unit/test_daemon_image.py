"""The racetrackd image (the top-level Dockerfile) holds every package the daemon imports.

A package added to setup.cfg but not copied into the image only shows when the container fails
to start; this catches it in a second, without Docker.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def top_level_packages() -> set[str]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    names = config["options.packages.find"]["include"].split()
    return {name.split(".")[0] for name in names}


def test_every_package_is_copied_into_the_image_and_let_through_dockerignore() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) /opt/racetrackd/src/\1$", dockerfile, re.M))
    allowed = {
        line.strip().lstrip("!").rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }

    packages = top_level_packages()

    assert packages - copied == set(), "packages the Dockerfile does not COPY"
    assert packages - allowed == set(), "packages .dockerignore leaves out of the build context"


def test_the_job_type_plugins_and_templates_go_in_too() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    for directory in ("jobtype_plugins", "templates"):
        assert f"COPY {directory} /opt/racetrackd/src/{directory}" in dockerfile
