"""racetrackd.docker.base_images: base images built from Debian packages when no registry answers."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from racetrackd.docker import base_images
from racetrackd.docker.base_images import (
    KINDS,
    LOCAL_GOLANG_IMAGE,
    LOCAL_PYTHON_IMAGE,
    LOCAL_RUST_IMAGE,
    build_base_image,
    ensure_base_image,
)
from racetrackd.errors import RacetrackError
from tests.unit.fakes import FakeRuntime


class NoRegistry(FakeRuntime):
    def pull_image(self, ref: str, credentials: dict[str, str] | None = None) -> None:
        self._record("pull_image", ref)
        raise RacetrackError(f"pulling image {ref}: no such host")


@pytest.fixture
def debootstrap(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """A debootstrap that records its command line and leaves a one-file root filesystem."""
    commands: list[list[str]] = []

    def run(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        if command[0] == "debootstrap":
            rootfs = Path(command[-2])
            (rootfs / "etc").mkdir(parents=True)
            (rootfs / "etc" / "debian_version").write_text("12.0\n")
            (rootfs / "var" / "lib" / "apt" / "lists").mkdir(parents=True)
            (rootfs / "var" / "lib" / "apt" / "lists" / "deb.debian.org_Packages").write_text("Package: x\n")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(base_images.shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(base_images.subprocess, "run", run)
    return commands


def test_the_golang_image_bootstraps_debians_go_toolchain(tmp_path: Path, debootstrap: list[list[str]]) -> None:
    runtime = FakeRuntime()

    name = build_base_image(
        runtime, KINDS["golang"], LOCAL_GOLANG_IMAGE, "bookworm", "http://mirror.test/debian", tmp_path
    )

    assert name == "racetrackd/golang-base:bookworm"
    (command,) = debootstrap
    assert command[:3] == ["debootstrap", "--variant=minbase", "--include=golang-go,ca-certificates"]
    assert command[3] == "bookworm" and command[-1] == "http://mirror.test/debian"
    ((_, ref, changes),) = runtime.calls_to("import_rootfs")
    assert ref == LOCAL_GOLANG_IMAGE
    assert "ENV GOPATH=/go" in changes


def test_the_rust_image_installs_debians_toolchain_and_crates_with_apt_inside_the_new_root(
    tmp_path: Path, debootstrap: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    archived: list[list[str]] = []
    runtime = FakeRuntime()
    monkeypatch.setattr(
        runtime,
        "import_rootfs",
        lambda archive, ref, changes: archived.append(sorted(tarfile.open(archive).getnames())),
    )

    name = build_base_image(runtime, KINDS["rust"], LOCAL_RUST_IMAGE, "bookworm", "http://mirror.test/debian", tmp_path)

    assert name == "racetrackd/rust-base:bookworm"
    bootstrap, update, install, clean = debootstrap
    assert bootstrap[:3] == ["debootstrap", "--variant=minbase", "--include=ca-certificates"]
    rootfs = bootstrap[-2]
    assert update == ["chroot", rootfs, "apt-get", "update"]
    assert install[:6] == ["chroot", rootfs, "apt-get", "install", "-y", "--no-install-recommends"]
    assert {"rustc", "cargo", "librust-tiny-http-dev", "librust-serde-json-dev", "librust-libc-dev"} <= set(install)
    assert clean == ["chroot", rootfs, "apt-get", "clean"]
    # apt's package lists stay out of the image (the directory itself stays, apt expects it)
    assert "./var/lib/apt/lists" in archived[0] and "./var/lib/apt/lists/deb.debian.org_Packages" not in archived[0]


def test_a_failing_apt_inside_the_new_root_says_which_step(
    tmp_path: Path, debootstrap: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run = base_images.subprocess.run

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        if command[0] == "chroot" and command[3] == "install":
            return subprocess.CompletedProcess(command, 100, "", "E: Unable to locate package librust-tiny-http-dev")
        return real_run(command, **kwargs)

    monkeypatch.setattr(base_images.subprocess, "run", run)

    with pytest.raises(RacetrackError, match="apt-get install in the new root filesystem failed") as failure:
        build_base_image(FakeRuntime(), KINDS["rust"], LOCAL_RUST_IMAGE, "bookworm", "http://m.test/debian", tmp_path)
    assert "Unable to locate package librust-tiny-http-dev" in failure.value.message


def test_a_stuck_apt_inside_the_new_root_ends_the_build_naming_the_limit(
    tmp_path: Path, debootstrap: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run = base_images.subprocess.run

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        if command[0] == "chroot":
            assert kwargs["timeout"] == base_images.APT_STEP_TIMEOUT
            raise subprocess.TimeoutExpired(command, kwargs["timeout"])
        return real_run(command, **kwargs)

    monkeypatch.setattr(base_images.subprocess, "run", run)

    with pytest.raises(RacetrackError, match="apt-get update in the new root filesystem took longer than 1800 s"):
        build_base_image(FakeRuntime(), KINDS["rust"], LOCAL_RUST_IMAGE, "bookworm", "http://m.test/debian", tmp_path)


def test_the_python3_image_keeps_its_packages(tmp_path: Path, debootstrap: list[list[str]]) -> None:
    build_base_image(
        FakeRuntime(), KINDS["python3"], LOCAL_PYTHON_IMAGE, "bookworm", "http://mirror.test/debian", tmp_path
    )

    assert debootstrap[0][2] == "--include=python3,python3-venv,ca-certificates"


def test_ensure_prefers_the_configured_image_when_it_can_be_pulled(tmp_path: Path) -> None:
    runtime = FakeRuntime()

    assert ensure_base_image(runtime, KINDS["golang"], "golang:1.21-bookworm", tmp_path) == "golang:1.21-bookworm"
    assert runtime.calls_to("import_rootfs") == []


def test_ensure_builds_the_local_golang_image_once_when_no_registry_answers(
    tmp_path: Path, debootstrap: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base_images, "find_mirror", lambda suite: "http://mirror.test/debian")
    runtime = NoRegistry()

    first = ensure_base_image(runtime, KINDS["golang"], "golang:1.21-bookworm", tmp_path)
    second = ensure_base_image(runtime, KINDS["golang"], "golang:1.21-bookworm", tmp_path)

    assert first == second == LOCAL_GOLANG_IMAGE
    assert len(debootstrap) == 1


def test_racetrackd_admin_token_loads_neither_the_daemon_nor_the_docker_sdk(tmp_path: Path) -> None:
    # scripts/quickstart.sh runs it every time: the whole daemon's imports tripled its start-up.
    probe = (
        "import sys, racetrackd.commands\n"
        "print(sorted(m for m in ('docker', 'racetrackd.daemon', 'flask', 'gunicorn') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2]
    )

    assert done.stdout.strip() == "[]"


def test_a_root_filesystem_bootstrapped_already_is_imported_without_debootstrap(
    tmp_path: Path, debootstrap: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    rootfs = tmp_path / "made-beside-pip"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "debian_version").write_text("12.0\n")
    archived: list[list[str]] = []
    runtime = NoRegistry()
    monkeypatch.setattr(
        runtime,
        "import_rootfs",
        lambda archive, ref, changes: archived.append(sorted(tarfile.open(archive).getnames())),
    )

    image = ensure_base_image(runtime, KINDS["python3"], "python:3.11-slim", tmp_path / "work", rootfs=rootfs)

    assert image == LOCAL_PYTHON_IMAGE
    assert debootstrap == []
    assert archived == [[".", "./etc", "./etc/debian_version"]]


def test_the_bootstrap_command_makes_the_root_filesystem_with_the_kinds_packages(
    tmp_path: Path, debootstrap: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base_images, "find_mirror", lambda suite: "http://mirror.test/debian")

    base_images.main(["bootstrap", str(tmp_path / "rootfs")])

    assert debootstrap == [
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            "bookworm",
            str(tmp_path / "rootfs"),
            "http://mirror.test/debian",
        ]
    ]


def test_the_bootstrap_command_runs_on_the_standard_library_alone() -> None:
    # setup-host.sh runs it with the system's python3 while pip is still filling .venv.
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['base_images', '--help']\n"
        "try:\n"
        "    runpy.run_module('racetrackd.docker.base_images', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] not in sys.stdlib_module_names"
        " and m.split('.')[0] not in ('racetrackd', '__main__')))"
    )
    done = subprocess.run(  # -S: no site-packages, as before pip has run
        [sys.executable, "-S", "-c", probe], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2]
    )

    assert "bootstrap" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"
