"""The daemon's own memory, as a user asks for it: /info's daemon_memory (what `rtd version` prints) and
`racetrackd status`; and the HTTP processes forked from the daemon, so that they share its pages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import Daemon


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry))
    return sorted(found)


def test_info_reports_the_memory_of_the_daemon_and_its_http_processes(daemon: Daemon) -> None:
    memory = daemon.api("GET", "/lifecycle/api/v1/info").json()["daemon_memory"]

    assert [p["role"] for p in memory["processes"]] == ["daemon", "http master", "http worker", "http worker"]
    assert memory["pss_bytes"] == sum(p["pss_bytes"] for p in memory["processes"])
    assert all(p["pss_bytes"] > 0 for p in memory["processes"])
    version = daemon.rtd("version", check=True).stdout.splitlines()
    assert version[2].startswith("racetrackd memory: ") and "(daemon " in version[2] and "http worker" in version[2]


def test_the_http_master_is_forked_from_the_daemon_not_started_afresh(daemon: Daemon) -> None:
    assert daemon.process is not None
    main = daemon.process.pid
    masters = children(main)

    assert len(masters) == 1
    # Forked: the daemon's own command line, named racetrackd-http for ps; its workers forked from it.
    assert Path(f"/proc/{masters[0]}/cmdline").read_bytes() == Path(f"/proc/{main}/cmdline").read_bytes()
    assert Path(f"/proc/{masters[0]}/comm").read_text().strip() == "racetrackd-http"
    assert len(children(masters[0])) == 2


def test_racetrackd_status_prints_each_process_of_a_started_daemon(daemon: Daemon) -> None:
    assert daemon.process is not None
    (daemon.data_dir / "racetrackd.pid").write_text(f"{daemon.process.pid}\n")  # as `racetrackd start` writes it
    try:
        result = subprocess.run(
            [sys.executable, "-m", "racetrackd", "status"], env=daemon.env, capture_output=True, text=True, check=False
        )
    finally:
        (daemon.data_dir / "racetrackd.pid").unlink()

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"racetrackd is running (pid {daemon.process.pid}) at {daemon.url}"
    assert lines[1].endswith(" MiB PSS in 4 processes")
    assert [line.split(" pid ")[0].strip() for line in lines[2:]] == [
        "daemon",
        "http master",
        "http worker",
        "http worker",
    ]
