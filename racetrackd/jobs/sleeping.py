"""An idle job asleep and awake again: paused first, stopped after a longer sleep.

A paused container (Docker's cgroup freezer) keeps its memory and uses no CPU; unpausing it takes
a few tens of milliseconds and its server answers at once, its imports, caches and loaded model
intact. A stopped container frees that memory, but waking it starts the process again: the wrapper,
the job's imports, whatever its entrypoint loads (0.7 s for samples/adder, minutes for a large
model). The rule: a job idle for its `idle_timeout` is paused; after RACETRACK_SLEEP_PAUSED_FOR
more seconds asleep its replicas are stopped (0: stopped at once, as before there was pausing).

The supervisor puts jobs to sleep and stops long sleepers; waking (racetrackd.jobs.waking) gets
the replicas running again, whichever way they sleep (Orchestrator.resume). Status names stay: both
are "sleeping". Swarm services cannot be paused: there a sleeping job is always scaled to zero.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from racetrackd.docker.orchestrator import Orchestrator

IDLE_STOP_SECONDS = 1  # an idle job has no calls to finish: SIGKILL follows SIGTERM soon
# Longer than the gateways' routing-table refresh (racetrackd.gateway.routing, 0.1 s) with a margin.
ROUTES_GRACE = 0.6


def put_to_sleep(
    orchestrator: Orchestrator,
    unit: str,
    count: int,
    *,
    pause: bool,
    still_asleep: Callable[[], bool] = lambda: True,
) -> None:
    """Pause (`pause`, where the orchestrator can) or stop the replicas of a job that went idle
    (already recorded asleep).

    Before pausing, the gateways are given ROUTES_GRACE to see that the job sleeps: a call they
    still forwarded to a paused container would hang until the job was next woken (to a stopped
    one it fails at once). If the job was woken meanwhile (`still_asleep` is false), it is left be."""
    if pause and orchestrator.can_pause:
        time.sleep(ROUTES_GRACE)
        if still_asleep():
            orchestrator.pause(unit, count)
        return
    orchestrator.stop(unit, count, IDLE_STOP_SECONDS)
