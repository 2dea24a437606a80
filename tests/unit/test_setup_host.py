"""scripts/setup-host.sh readies golang jobs only when asked (--with-golang, as run-tests.sh does):
`make quickstart` on a fresh machine builds only what the python3 sample needs (issue 18: the Go
images were 3 of its 5.5 minutes). Runs a copy of the script against stubs in a temporary tree."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What the script runs besides the stubs; no apt-get, so nothing is installed on the host.
TOOLS = ("bash", "cat", "sha256sum", "cut", "id", "rm", "touch", "dirname", "seq", "sleep", "tail")
STUB = '#!/bin/sh\necho "$(basename "$0") $*" >> "{log}"\necho {output}\n'


def stub(directory: Path, name: str, log: Path, output: str = "") -> None:
    path = directory / name
    path.write_text(STUB.format(log=log, output=output).replace('$(basename "$0")', name))
    path.chmod(0o755)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the script beside stubs for docker, docker-compose and .venv/bin/racetrackd."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup-host.sh", root / "scripts" / "setup-host.sh")
    for name in ("constraints.txt", "setup.cfg"):
        shutil.copy(REPO / name, root / name)
    venv_bin = root / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    digest = hashlib.sha256((root / "constraints.txt").read_bytes() + (root / "setup.cfg").read_bytes()).hexdigest()
    (root / ".venv" / f".installed-{digest[:16]}").touch()  # the Python environment counts as installed
    log = tmp_path / "calls.log"
    stub(venv_bin, "racetrackd", log, output="racetrackd/python3-base:bookworm")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub(bin_dir, "docker", log)
    stub(bin_dir, "docker-compose", log)
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found is not None, tool
        os.symlink(found, bin_dir / tool)
    return root


def run(tree: Path, *args: str) -> tuple[str, list[str]]:
    done = subprocess.run(
        [str(tree.parent / "bin" / "bash"), str(tree / "scripts" / "setup-host.sh"), *args],
        env={"PATH": str(tree.parent / "bin")},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout, (tree.parent / "calls.log").read_text().splitlines()


def test_by_default_only_the_python3_base_image_is_ensured(tree: Path) -> None:
    out, calls = run(tree)

    assert [call for call in calls if call.startswith("racetrackd")] == ["racetrackd base-images ensure"]
    assert out.splitlines()[-1] == "racetrackd/python3-base:bookworm"


def test_with_golang_also_ensures_the_golang_base_image_and_still_prints_python3_last(tree: Path) -> None:
    out, calls = run(tree, "--with-golang")

    assert [call for call in calls if call.startswith("racetrackd")] == [
        "racetrackd base-images ensure --job-type golang",
        "racetrackd base-images ensure",
    ]
    assert out.splitlines()[-1] == "racetrackd/python3-base:bookworm"


def test_with_rust_also_ensures_the_rust_base_image_and_still_prints_python3_last(tree: Path) -> None:
    out, calls = run(tree, "--with-golang", "--with-rust")

    assert [call for call in calls if call.startswith("racetrackd")] == [
        "racetrackd base-images ensure --job-type golang",
        "racetrackd base-images ensure --job-type rust",
        "racetrackd base-images ensure",
    ]
    assert out.splitlines()[-1] == "racetrackd/python3-base:bookworm"


def test_run_tests_asks_for_golang_and_rust_and_quickstart_does_not_by_default() -> None:
    assert "scripts/setup-host.sh --with-golang --with-rust" in (REPO / "scripts" / "run-tests.sh").read_text()
    quickstart = (REPO / "scripts" / "quickstart.sh").read_text()
    # only what a flag asked for (--with-golang, --with-rust) goes to setup-host.sh beside --quickstart
    assert "setup_args=()" in quickstart
    assert (
        'base_image=$(scripts/setup-host.sh --quickstart ${setup_args[@]+"${setup_args[@]}"} | tail -n 1)' in quickstart
    )


def test_run_again_the_base_image_found_before_is_used_without_asking_racetrackd(tree: Path) -> None:
    first, first_calls = run(tree)
    (tree.parent / "calls.log").write_text("")

    again, calls = run(tree)

    assert first.splitlines()[-1] == again.splitlines()[-1] == "racetrackd/python3-base:bookworm"
    assert "racetrackd base-images ensure" in first_calls
    # No Python start-up nor pull attempt: one look that Docker still has the image.
    assert calls == ["docker info", "docker image inspect racetrackd/python3-base:bookworm"]


def test_run_again_after_the_base_image_was_removed_ensures_it_again(tree: Path) -> None:
    run(tree)
    (tree.parent / "calls.log").write_text("")
    gone = tree.parent / "bin" / "docker"
    gone.write_text(gone.read_text().replace("echo \n", 'case "$1" in image) exit 1;; esac\n'))

    again, calls = run(tree)

    assert "racetrackd base-images ensure" in calls
    assert again.splitlines()[-1] == "racetrackd/python3-base:bookworm"


def fresh_venv(tree: Path) -> Path:
    """The tree with no Python environment installed yet: .venv/bin/python is a stub that logs pip."""
    for stamp in (tree / ".venv").glob(".installed-*"):
        stamp.unlink()
    stub(tree / ".venv" / "bin", "python", tree.parent / "calls.log")
    return tree


@pytest.mark.parametrize(
    ("args", "installed"),
    [
        ((), "python -m pip install -q -c constraints.txt -e .[test]"),
        (("--quickstart",), "python -m pip install -q -c constraints.txt -e ."),
    ],
)
def test_the_test_packages_are_installed_for_the_tests_not_for_quickstart(
    tree: Path, args: tuple[str, ...], installed: str
) -> None:
    _, calls = run(fresh_venv(tree), *args)

    assert [call for call in calls if "pip install -q -c" in call] == [installed]


def test_quickstart_is_satisfied_by_an_environment_installed_with_the_test_packages(tree: Path) -> None:
    _, calls = run(tree, "--quickstart")  # the tree's stamp is the one with the test packages

    assert not [call for call in calls if "pip" in call]
