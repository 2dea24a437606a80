"""The daemon reports its own memory: PSS of its process tree, in `racetrackd status`, /info and `rtd version`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from racetrackd import commands, footprint


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for child in started:
        child.kill()
        child.wait()


def sleeper(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "import sys, time; print(flush=True); time.sleep(60)", *argv], stdout=subprocess.PIPE
    )


def test_the_footprint_sums_the_pss_of_the_process_and_its_children(
    children: list[subprocess.Popen[bytes]],
) -> None:
    for argv in (("gunicorn", "racetrackd.asgi:create_asgi_app()"), ("other",)):
        children.append(sleeper(*argv))
        assert children[-1].stdout is not None
        children[-1].stdout.readline()  # the child has started Python: its memory is its own

    found = footprint.measure(os.getpid())

    roles = {p.pid: p.role for p in found.processes}
    assert roles[os.getpid()] == "daemon"
    assert roles[children[0].pid] == "http master"  # gunicorn, run by the daemon
    assert roles[children[1].pid].startswith("python")  # any other child: its command name
    assert all(p.pss_bytes > 0 and p.rss_bytes >= p.pss_bytes for p in found.processes)
    assert found.pss_bytes == sum(p.pss_bytes for p in found.processes)
    assert found.to_dict()["pss_bytes"] == found.pss_bytes


def test_a_worker_measures_from_the_daemon_named_in_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(footprint.MAIN_PID_ENV, str(os.getppid()))
    assert footprint.daemon_main_pid() == os.getppid()

    monkeypatch.setenv(footprint.MAIN_PID_ENV, "not-a-pid")
    assert footprint.daemon_main_pid() == os.getpid()


def test_racetrackd_status_shows_the_pid_url_and_memory_of_each_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, children: list[subprocess.Popen[bytes]]
) -> None:
    children.append(sleeper("gunicorn"))
    assert children[0].stdout is not None
    children[0].stdout.readline()
    monkeypatch.setenv("RACETRACK_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RACETRACK_PORT", "7123")
    (tmp_path / "racetrackd.pid").write_text(f"{os.getpid()}\n")  # this test stands in for the daemon

    result = CliRunner().invoke(commands.main, ["status"])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"racetrackd is running (pid {os.getpid()}) at http://127.0.0.1:7123"
    assert lines[1].startswith("memory: ") and lines[1].endswith(" MiB PSS in 2 processes")
    assert lines[2].split()[:3] == ["daemon", "pid", str(os.getpid())]
    assert lines[3].split()[:4] == ["http", "master", "pid", str(children[0].pid)]
    assert lines[3].endswith(" MiB")


def test_racetrackd_status_says_when_it_is_not_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RACETRACK_DATA_DIR", str(tmp_path))

    result = CliRunner().invoke(commands.main, ["status"])

    assert result.exit_code == 3
    assert result.output == "racetrackd is not running\n"


def test_gunicorns_master_closes_the_registry_before_forking_a_worker(tmp_path: Path) -> None:
    from racetrackd import db, gunicorn_hooks

    db.open_database(tmp_path / "registry.sqlite3")
    assert not db.database.is_closed()

    gunicorn_hooks.pre_fork(server=None, worker=None)

    assert db.database.is_closed()  # the worker opens its own on its first query
    assert db.Job.select().count() == 0
