"""scripts/setup-host.sh readies golang jobs only when asked (--with-golang, as run-tests.sh does):
`make quickstart` on a fresh machine builds only what the python3 sample needs (issue 18: the Go
images were 3 of its 5.5 minutes). Runs a copy of the script against stubs in a temporary tree."""

from __future__ import annotations

import configparser
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


def test_without_a_c_compiler_the_fast_http_parser_is_skipped_and_said_so(tree: Path) -> None:
    done = subprocess.run(
        [str(tree.parent / "bin" / "bash"), str(tree / "scripts" / "setup-host.sh"), "--quickstart"],
        env={"PATH": str(tree.parent / "bin")},
        capture_output=True,
        text=True,
        check=False,
        cwd=fresh_venv(tree),
    )
    calls = (tree.parent / "calls.log").read_text().splitlines()

    # A bare machine has no compiler and gunicorn_h1c has no wheels: quickstart must not need it.
    assert done.returncode == 0, done.stderr
    assert not [call for call in calls if "gunicorn_h1c" in call]
    assert "no C compiler: the gateway parses HTTP with gunicorn's Python parser" in done.stderr


def test_with_a_c_compiler_the_fast_http_parser_is_added(tree: Path) -> None:
    stub(tree.parent / "bin", "cc", tree.parent / "calls.log")

    _, calls = run(fresh_venv(tree), "--quickstart")

    assert [call for call in calls if "pip install" in call] == [
        "python -m pip install -q -c constraints.txt -e .",
        "python -m pip install -q -c constraints.txt gunicorn_h1c",
    ]


def test_gunicorn_h1c_is_not_a_requirement_of_racetrackd() -> None:
    # It builds from source only; pip would fail the whole install on a machine without a compiler.
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    assert "gunicorn_h1c" not in config["options"]["install_requires"].split()
    assert config["options.extras_require"]["fast"].split() == ["gunicorn_h1c"]


def apt_tree(tree: Path, *, dockerd: bool) -> Path:
    """The tree on a root host with apt whose Docker engine is not running (or not installed)."""
    bin_dir = tree.parent / "bin"
    log = tree.parent / "calls.log"
    (bin_dir / "id").unlink()
    stub(bin_dir, "id", log, output="0")
    stub(bin_dir, "apt-get", log)
    # docker info fails until dockerd has been started
    started = tree.parent / "dockerd-started"
    (bin_dir / "docker").write_text(
        f'#!/bin/sh\necho "docker $*" >> "{log}"\nif [ "$1" = info ] && [ ! -f "{started}" ]; then exit 1; fi\n'
    )
    (bin_dir / "docker").chmod(0o755)
    if dockerd:
        (bin_dir / "dockerd").write_text(f'#!/bin/sh\necho "dockerd $*" >> "{log}"\ntouch "{started}"\n')
        (bin_dir / "dockerd").chmod(0o755)
    for tool in ("nohup", "basename", "chmod"):
        found = shutil.which(tool)
        assert found is not None, tool
        os.symlink(found, bin_dir / tool)
    return tree


def test_a_bare_machine_gets_its_apt_packages_in_one_run_without_recommends(tree: Path) -> None:
    tree = apt_tree(tree, dockerd=False)
    apt_get = tree.parent / "bin" / "apt-get"
    # Installing docker.io brings dockerd with it.
    apt_get.write_text(
        apt_get.read_text()
        + f'case "$*" in *docker.io*) printf \'#!/bin/sh\\ntouch "{tree.parent}/dockerd-started"\\n\' '
        f'> "{tree.parent}/bin/dockerd"; chmod +x "{tree.parent}/bin/dockerd";; esac\n'
    )

    out, calls = run(tree, "--quickstart")

    installs = [call for call in calls if call.startswith("apt-get") and " install " in call]
    assert installs == [
        "apt-get install -o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends docker.io apparmor debootstrap"
    ]
    # the engine is started after the install, before the base image is asked for
    assert calls.index(installs[0]) < calls.index("racetrackd base-images ensure")
    assert out.splitlines()[-1] == "racetrackd/python3-base:bookworm"


def test_an_installed_engine_that_is_not_running_is_started_without_apt_for_it(tree: Path) -> None:
    tree = apt_tree(tree, dockerd=True)

    run(tree, "--quickstart")
    calls = (tree.parent / "calls.log").read_text().splitlines()

    assert "dockerd " in calls
    assert not [call for call in calls if "docker.io" in call]


def test_a_new_engine_that_cannot_pull_gets_the_base_image_root_filesystem_bootstrapped_beside_pip(
    tree: Path,
) -> None:
    tree = apt_tree(fresh_venv(tree), dockerd=True)
    bin_dir, log = tree.parent / "bin", tree.parent / "calls.log"
    (bin_dir / "dockerd").unlink()  # not installed yet: apt brings it
    apt_get = bin_dir / "apt-get"
    apt_get.write_text(
        apt_get.read_text()
        + f'case "$*" in *docker.io*) printf \'#!/bin/sh\\ntouch "{tree.parent}/dockerd-started"\\n\' '
        f'> "{bin_dir}/dockerd"; chmod +x "{bin_dir}/dockerd";; esac\n'
    )
    docker = bin_dir / "docker"
    docker.write_text(docker.read_text() + 'if [ "$1" = pull ]; then exit 1; fi\n')  # no registry answers
    # the system's python3 runs the bootstrap (stdlib only): it makes the directory it is given
    (bin_dir / "python3").write_text(f'#!/bin/sh\necho "python3 $*" >> "{log}"\nmkdir -p "$4"\n')
    (bin_dir / "python3").chmod(0o755)
    for tool in ("mkdir", "mv"):
        os.symlink(shutil.which(tool) or tool, bin_dir / tool)
    stub(bin_dir, "debootstrap", log)
    tmp = tree.parent / "tmp"
    tmp.mkdir()

    done = subprocess.run(
        [str(bin_dir / "bash"), str(tree / "scripts" / "setup-host.sh"), "--quickstart"],
        env={"PATH": str(bin_dir), "TMPDIR": str(tmp)},
        capture_output=True,
        text=True,
        check=True,
    )
    calls = log.read_text().splitlines()

    rootfs = tmp / "racetrackd-rootfs-python3"
    assert f"python3 -m racetrackd.docker.base_images bootstrap {rootfs}.partial" in calls
    assert f"racetrackd base-images ensure --rootfs {rootfs}" in calls
    assert not rootfs.exists()  # imported, then removed
    assert calls.count("docker pull -q python:3.11-slim") == 1
    assert done.stdout.splitlines()[-1] == "racetrackd/python3-base:bookworm"


def test_the_base_image_setup_host_pulls_first_is_the_python3_job_types_default() -> None:
    manifest = (REPO / "jobtype_plugins" / "python3" / "plugin-manifest.yaml").read_text()
    script = (REPO / "scripts" / "setup-host.sh").read_text()

    assert "default: python:3.11-slim" in manifest
    assert "python_base_image=${RACETRACK_PYTHON_BASE_IMAGE:-python:3.11-slim}" in script
