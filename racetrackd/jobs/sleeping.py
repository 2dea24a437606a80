"""An idle job's containers asleep and awake again: paused first, stopped after a longer sleep.

A paused container (Docker's cgroup freezer) keeps its memory and uses no CPU; unpausing it takes
a few tens of milliseconds and its server answers at once, its imports, caches and loaded model
intact. A stopped container frees that memory, but waking it starts the process again: the wrapper,
the job's imports, whatever its entrypoint loads (0.7 s for samples/adder, minutes for a large
model). The rule: a job idle for its `idle_timeout` is paused; after RACETRACK_SLEEP_PAUSED_FOR
more seconds asleep its containers are stopped (0: stopped at once, as before there was pausing).

The supervisor puts jobs to sleep and stops long sleepers; waking (racetrackd.jobs.waking) gets
the containers running again, whichever way they sleep. Status names stay: both are "sleeping".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from racetrackd.docker.runtime import Runtime
from racetrackd.errors import RacetrackError

log = logging.getLogger(__name__)

IDLE_STOP_SECONDS = 1  # an idle job has no calls to finish: SIGKILL follows SIGTERM soon
# Longer than the gateways' routing-table refresh (racetrackd.gateway.routing, 0.25 s) with a margin.
ROUTES_GRACE = 0.6
PAUSED = "paused"


def put_to_sleep(
    runtime: Runtime, containers: list[str], *, pause: bool, still_asleep: Callable[[], bool] = lambda: True
) -> None:
    """Pause (`pause`) or stop the containers of a job that went idle (already recorded asleep). A
    container that cannot be paused (a cgroup without the freezer, say) is stopped instead.

    Before pausing, the gateways are given ROUTES_GRACE to see that the job sleeps: a call they
    still forwarded to a paused container would hang until the job was next woken (to a stopped
    one it fails at once). If the job was woken meanwhile (`still_asleep` is false), it is left be."""
    if pause:
        time.sleep(ROUTES_GRACE)
        if not still_asleep():
            return
    for name in containers:
        if pause:
            try:
                runtime.pause_container(name)
                continue
            except RacetrackError as exc:
                # e.g. "unable to freeze" from runc on a very busy host: thaw what it froze, then stop
                log.warning("could not pause %s (%s): stopping it instead", name, exc.message)
                _thaw(runtime, name)
        runtime.stop_container(name, IDLE_STOP_SECONDS)


def _thaw(runtime: Runtime, name: str) -> None:
    try:
        runtime.unpause_container(name)
    except RacetrackError:
        pass  # it was not left paused


def stop_paused(runtime: Runtime, containers: list[str]) -> list[str]:
    """Stop the paused ones of a long-sleeping job's containers, freeing their memory; which were."""
    stopped = []
    for name in containers:
        if runtime.container_state(name).status == PAUSED:
            # Resumed first, so that its server gets SIGTERM and stops as it would at any other time.
            runtime.unpause_container(name)
            runtime.stop_container(name, IDLE_STOP_SECONDS)
            stopped.append(name)
    return stopped


def wake_container(runtime: Runtime, name: str) -> bool:
    """Get a sleeping job's container running again: unpause a paused one (True: its server was up
    all along), else start it again (False: its server starts from scratch)."""
    if runtime.container_state(name).status == PAUSED:
        runtime.unpause_container(name)
        return True
    runtime.stop_container(name, IDLE_STOP_SECONDS)  # it may still be on its way down from being put to sleep
    runtime.start_container(name)
    return False
