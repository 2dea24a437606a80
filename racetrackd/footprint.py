"""The daemon's own memory: PSS of its processes (main process, gunicorn master, HTTP workers).

PSS (proportional set size, from /proc/<pid>/smaps_rollup) counts a page shared by n processes as
1/n in each, so the figures of the daemon's processes add up to what the daemon really holds: RSS
would count the pages the workers share with the master (forked after the imports) once per worker.
Read from /proc at the moment of asking, so any HTTP worker can report for the whole daemon. Linux
only; elsewhere (or when /proc hides a process) the figures are simply missing.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

PROC = Path("/proc")
# The daemon puts its own pid here for its gunicorn child, so a worker knows the root of the tree.
MAIN_PID_ENV = "RACETRACKD_MAIN_PID"
# The command name (ps, top) of the gunicorn master the daemon forks, and so of its workers too.
HTTP_PROCESS_NAME = "racetrackd-http"


@dataclasses.dataclass(frozen=True)
class ProcessMemory:
    pid: int
    role: str  # "daemon", "http master", "http worker" or the command name of another child
    pss_bytes: int
    rss_bytes: int

    def to_dict(self, *, with_pid: bool = True) -> dict[str, Any]:
        found = {"role": self.role, "pss_bytes": self.pss_bytes, "rss_bytes": self.rss_bytes}
        return {"pid": self.pid, **found} if with_pid else found


@dataclasses.dataclass(frozen=True)
class Footprint:
    processes: tuple[ProcessMemory, ...]

    @property
    def pss_bytes(self) -> int:
        return sum(p.pss_bytes for p in self.processes)

    def to_dict(self, *, with_pids: bool = True) -> dict[str, Any]:
        return {"pss_bytes": self.pss_bytes, "processes": [p.to_dict(with_pid=with_pids) for p in self.processes]}

    def describe(self) -> list[str]:
        """Lines for people: the total, then each process."""
        lines = [f"memory: {mib(self.pss_bytes)} PSS in {len(self.processes)} processes"]
        lines += [f"  {p.role:<12} pid {p.pid:<8} {mib(p.pss_bytes):>10}" for p in self.processes]
        return lines


def daemon_main_pid() -> int:
    """The daemon's main process as seen from this process: named by the daemon for its HTTP workers,
    else this process (a control plane run in-process, as in tests)."""
    named = os.environ.get(MAIN_PID_ENV, "")
    return int(named) if named.isdigit() and (PROC / named).is_dir() else os.getpid()


def measure(root_pid: int | None = None) -> Footprint:
    """PSS of the process tree rooted at `root_pid` (default: the daemon's main process)."""
    root = daemon_main_pid() if root_pid is None else root_pid
    children = _children_by_parent()
    found: list[ProcessMemory] = []
    pending = [(root, 0)]
    while pending:
        pid, depth = pending.pop(0)
        sizes = _sizes(pid)
        if sizes is not None:
            found.append(ProcessMemory(pid, _role(pid, depth), *sizes))
        pending.extend((child, depth + 1) for child in sorted(children.get(pid, ())))
    return Footprint(tuple(found))


def mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
        fields = stat.rpartition(")")[2].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def _sizes(pid: int) -> tuple[int, int] | None:
    """(PSS, RSS) in bytes, or None when the process is gone or not ours to read."""
    try:
        text = (PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss", "Rss"):
            values[key] = int(rest.split()[0]) * 1024  # the kernel writes kB
    if "Pss" not in values:
        return None
    return values["Pss"], values.get("Rss", 0)


def _role(pid: int, depth: int) -> str:
    if depth == 0:
        return "daemon"
    try:
        command = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
        name = (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return "process"
    if name == HTTP_PROCESS_NAME or any(b"gunicorn" in part for part in command):  # forked, or run apart
        return "http master" if depth == 1 else "http worker"
    return name
