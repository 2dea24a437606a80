"""How much of a job's log a failure quotes: the reason, then the last lines of the container's log.

Spelt once for the deployer (a job that does not start) and the supervisor (a job that crashed).
"""

from __future__ import annotations

from racetrackd.docker.orchestrator import Orchestrator, Replica

LOG_TAIL_LINES = 20


def with_log_tail(orchestrator: Orchestrator, unit: str, replica: Replica, reason: str) -> str:
    """`reason`, followed by the last LOG_TAIL_LINES lines of `replica`'s log when it has any."""
    logs = orchestrator.replica_logs(unit, replica, LOG_TAIL_LINES).rstrip()
    return f"{reason}\n--- last {LOG_TAIL_LINES} lines of the job's log ---\n{logs}" if logs else reason
