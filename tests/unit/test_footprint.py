"""The daemon reports its own memory: PSS of its process tree, in `racetrackd status`, /info and `rtd version`."""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from racetrackd import commands, db, footprint, gunicorn_hooks


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
    # This process's other children (a daemon of the integration tests, in one run) count too.
    assert re.fullmatch(rf"memory: [0-9.]+ MiB PSS in {len(lines) - 2} processes", lines[1])
    assert lines[2].split()[:3] == ["daemon", "pid", str(os.getpid())]
    master = next(line for line in lines[3:] if f" pid {children[0].pid} " in line)
    assert master.split()[:2] == ["http", "master"] and master.endswith(" MiB")


def test_racetrackd_status_says_when_it_is_not_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RACETRACK_DATA_DIR", str(tmp_path))

    result = CliRunner().invoke(commands.main, ["status"])

    assert result.exit_code == 3
    assert result.output == "racetrackd is not running\n"


def test_gunicorns_master_closes_the_registry_before_forking_a_worker(tmp_path: Path) -> None:
    db.open_database(tmp_path / "registry.sqlite3")
    assert not db.database.is_closed()

    gunicorn_hooks.pre_fork(server=None, worker=None)

    assert db.database.is_closed()  # the worker opens its own on its first query
    assert db.Job.select().count() == 0


def test_racetrackd_status_of_a_daemon_in_the_foreground_asks_its_info(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = {
        "pss_bytes": 3 * 2**20,
        "processes": [
            {"role": "daemon", "pss_bytes": 2 * 2**20, "rss_bytes": 4 * 2**20},
            {"role": "http master", "pss_bytes": 2**20, "rss_bytes": 3 * 2**20},
        ],
    }

    class Info(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"daemon_memory": memory} if self.path == "/lifecycle/api/v1/info" else {}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Info)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("RACETRACK_DATA_DIR", str(tmp_path))  # no pid file: `racetrackd serve` writes none
    monkeypatch.setenv("RACETRACK_PORT", str(server.server_address[1]))
    try:
        result = CliRunner().invoke(commands.main, ["status"])
    finally:
        server.shutdown()

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"racetrackd is running at http://127.0.0.1:{server.server_address[1]} (in the foreground: no pid file)",
        "memory: 3.0 MiB PSS in 2 processes",
        "  daemon                       2.0 MiB",
        "  http master                  1.0 MiB",
    ]
