"""scripts/link-cli.sh (run by make quickstart): rtd and racetrackd on PATH, idempotent, never
replacing someone else's file. Runs the script against temporary directories only."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "link-cli.sh"
NAMES = ("rtd", "racetrackd")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    for name in NAMES:
        (venv_bin / name).write_text("#!/bin/sh\necho ours\n")
        (venv_bin / name).chmod(0o755)
    return venv_bin


def run(tmp_path: Path, source: Path, dirs: list[Path], path: str = "/usr/bin:/bin") -> str:
    env = {
        "HOME": str(tmp_path / "home"),
        "PATH": path,
        "RTD_LINK_SOURCE": str(source),
        "RTD_LINK_DIRS": ":".join(str(d) for d in dirs),
    }
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, check=True)
    return done.stdout


def test_links_into_the_first_directory_and_says_what_to_add_to_path(tmp_path: Path, source: Path) -> None:
    system, user = tmp_path / "system", tmp_path / "home" / ".local" / "bin"
    system.mkdir()
    out = run(tmp_path, source, [system, user])
    for name in NAMES:
        assert os.readlink(system / name) == str(source / name)
        assert subprocess.run([str(system / name)], capture_output=True, text=True).stdout == "ours\n"
    assert f'export PATH="{system}:$PATH"' in out
    assert not user.exists()


def test_no_path_hint_when_the_directory_is_on_path(tmp_path: Path, source: Path) -> None:
    system = tmp_path / "system"
    system.mkdir()
    out = run(tmp_path, source, [system], path=f"/usr/bin:{system}:/bin")
    assert "export PATH" not in out
    assert "on PATH" in out


def test_running_again_keeps_our_links(tmp_path: Path, source: Path) -> None:
    system = tmp_path / "system"
    system.mkdir()
    first = run(tmp_path, source, [system])
    second = run(tmp_path, source, [system])
    assert first == second
    assert sorted(p.name for p in system.iterdir()) == sorted(NAMES)
    assert os.readlink(system / "rtd") == str(source / "rtd")


def test_never_replaces_a_foreign_rtd_and_falls_back_to_the_user_directory(tmp_path: Path, source: Path) -> None:
    system, user = tmp_path / "system", tmp_path / "home" / ".local" / "bin"
    system.mkdir()
    (system / "rtd").write_text("someone else's rtd\n")
    other = tmp_path / "elsewhere-rtd"
    other.write_text("")
    (system / "racetrackd").symlink_to(other)
    out = run(tmp_path, source, [system, user])
    assert (system / "rtd").read_text() == "someone else's rtd\n"
    assert os.readlink(system / "racetrackd") == str(other)
    for name in NAMES:  # ~/.local/bin did not exist: made
        assert os.readlink(user / name) == str(source / name)
    assert f'export PATH="{user}:$PATH"' in out


def test_says_what_to_add_when_no_directory_can_take_the_links(tmp_path: Path, source: Path) -> None:
    system = tmp_path / "system"
    system.mkdir()
    (system / "rtd").write_text("foreign\n")
    out = run(tmp_path, source, [system])
    assert (system / "rtd").read_text() == "foreign\n"
    assert not (system / "racetrackd").exists()
    assert f'export PATH="{source}:$PATH"' in out


def test_quickstart_runs_the_link_step() -> None:
    assert "scripts/link-cli.sh" in (SCRIPT.parent / "quickstart.sh").read_text()
