"""What the benchmarks share: the report file and where to find a base image."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import docker
import docker.errors

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nRatios against a baseline measured in the same run; re-run to refresh a section.\n\n"
BASE_IMAGES = ("python:3.11-slim", "racetrackd/python3-base:bookworm")


def write_section(marker: str, section: str) -> None:
    """Put `section` (which starts with `marker`, a `## ` heading) into docs/benchmarks.md, replacing
    the section of the same heading and keeping the others."""
    text = REPORT.read_text() if REPORT.exists() else HEADER
    if marker in text:
        before, _, rest = text.partition(marker)
        after = rest.split("\n## ", 1)
        text = before + section + ("\n## " + after[1] if len(after) > 1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    REPORT.write_text(text)


def base_image(client: docker.DockerClient) -> str:
    """The python3 base image jobs are built on here (what the daemon would use)."""
    for name in BASE_IMAGES:
        if client.images.list(name=name):
            return name
    raise SystemExit("no python3 base image: run `racetrackd base-images build` first")


def remove_labelled(client: docker.DockerClient, instance: str) -> None:
    """Remove every container and image a benchmark's daemon created (they carry its instance label)."""
    label = {"label": f"racetrackd.instance={instance}"}
    for container in client.containers.list(all=True, filters=label):
        container.remove(force=True)
    for image in client.images.list(filters=label):
        try:
            client.images.remove(image.id, force=True)
        except docker.errors.APIError:
            pass  # shared with another tag; the engine prunes it later


def export_ref(ref: str, into: Path) -> Path:
    """The tree of git `ref` as plain files (no worktree: git's shared state stays untouched)."""
    archive = subprocess.run(["git", "archive", "--format=tar", ref], cwd=REPO, capture_output=True, check=True)
    into.mkdir(parents=True)
    tar_path = into.parent / f"{into.name}.tar"
    tar_path.write_bytes(archive.stdout)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into, filter="data")
    tar_path.unlink()
    return into
