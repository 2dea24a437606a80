"""`docker` mode behind the orchestrator seam: a unit is plain containers on this one engine.

Replica i of unit `u` is the container `u` (i = 0) or `u-i`; a redeploy starts the new release under a
staging unit beside the old one, renames the old containers `...-retiring-<deployment>` (they drain
in the background) and the staging ones to the final names. Here in jobs/ rather than docker/
because how the daemon reaches a container depends on its addressing (racetrackd.jobs.addressing).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from racetrackd import naming
from racetrackd.docker.orchestrator import (
    DOCKER,
    EXITED,
    MISSING,
    RESTARTING,
    RUNNING,
    STARTING,
    Node,
    ReleaseSpec,
    Replica,
)
from racetrackd.docker.runtime import ContainerSpec, LogStream, Runtime
from racetrackd.errors import RacetrackError
from racetrackd.jobs.addressing import CONTAINER_NAME, Addressing, job_address

# Docker's container states, in the seam's words
_STATES = {"created": STARTING, "running": RUNNING, "restarting": RESTARTING, "missing": MISSING}


class ContainerReplicas:
    """The Orchestrator of `docker` mode (RACETRACK_ORCHESTRATOR=docker, the default)."""

    def __init__(
        self,
        runtime: Runtime,
        addressing: Addressing,
        address_of: Callable[[str, int], str] | None = None,
    ) -> None:
        self.runtime = runtime
        self.addressing = addressing
        self._address_of = address_of or (lambda name, port: job_address(addressing, runtime, name, port))

    @property
    def kind(self) -> str:
        return DOCKER

    def names(self, unit: str, count: int) -> list[str]:
        return [naming.replica_container_name(unit, i) for i in range(count)]

    def start(self, unit: str, spec: ReleaseSpec) -> list[str]:
        started = []
        for name in self.names(unit, spec.replicas):
            if self.runtime.container_state(name).status != "missing":
                continue
            self.runtime.ensure_network(spec.network, isolated=self.addressing.isolates_containers)
            self.runtime.run_container(
                ContainerSpec(
                    name=name,
                    image=spec.image,
                    env=spec.env,
                    labels=spec.labels,
                    network=spec.network,
                    publish_port=self.addressing.mode != CONTAINER_NAME,  # also handy for a look with curl
                    limits=spec.limits,
                    port=spec.port,
                    hardening=spec.hardening,
                )
            )
            started.append(name)
        return started

    def replicas(self, unit: str, count: int, port: int) -> list[Replica]:
        found = []
        for name in self.names(unit, count):
            state = self.runtime.container_state(name)
            status = _STATES.get(state.status, EXITED)  # exited, dead, paused, removing: not serving
            address = None
            if status == RUNNING:
                try:
                    address = self._address_of(name, port)
                except RacetrackError:
                    address = None  # its address (a published port) is not assigned yet
            found.append(
                Replica(
                    name=name,
                    state=status,
                    exit_code=state.exit_code,
                    restart_count=state.restart_count,
                    error="" if status in (RUNNING, STARTING, MISSING) else f"container {name} {state.status}",
                    address=address,
                )
            )
        return found

    def revive(self, unit: str, replica: Replica) -> bool:
        # Docker's restart policy does not cover a container killed from outside: start it.
        if replica.state != EXITED:
            return False
        self.runtime.start_container(replica.name)
        return True

    def stop(self, unit: str, count: int, timeout: float) -> None:
        for name in self.names(unit, count):
            self.runtime.stop_container(name, timeout)

    def resume(self, unit: str, count: int) -> None:
        for name in self.names(unit, count):
            self.runtime.stop_container(name, 1)  # it may still be on its way down from being put to sleep
            self.runtime.start_container(name)

    def remove(self, unit: str, count: int) -> None:
        for name in self.names(unit, count):
            self.runtime.remove_container(name)

    def set_aside(self, unit: str, count: int, tag: str) -> list[str]:
        retiring = []
        for name in self.names(unit, count):
            if self.runtime.container_state(name).status != "missing":
                retired = f"{name}-retiring-{tag}"
                self.runtime.rename_container(name, retired)
                retiring.append(retired)
        return retiring

    def retire(self, handle: str, timeout: float) -> None:
        self.runtime.stop_container(handle, timeout)
        self.runtime.remove_container(handle)

    def promote(self, staging: str, final: str, count: int) -> str:
        self.runtime.remove_container(final)  # leftovers of an earlier failure, if any
        for staging_name, final_name in zip(self.names(staging, count), self.names(final, count), strict=True):
            self.runtime.rename_container(staging_name, final_name)
        return final

    def members(self, unit: str, count: int) -> list[str]:
        return self.names(unit, count)

    def list_members(self, labels: dict[str, str]) -> list[str]:
        return self.runtime.list_containers(labels)

    def remove_member(self, name: str) -> None:
        self.runtime.remove_container(name)

    def logs(self, unit: str, count: int, tail: int) -> str:
        return self.runtime.container_logs(unit, tail)

    def replica_logs(self, unit: str, replica: Replica, tail: int) -> str:
        return self.runtime.container_logs(replica.name, tail)

    def follow_logs(self, unit: str, count: int, tail: int) -> LogStream:
        return self.runtime.follow_logs(unit, tail)

    def nodes(self) -> list[Node]:
        """This engine, the one node there is (its tasks are filled in from the registry by the caller)."""
        return [
            Node(hostname=socket.gethostname(), role="engine", state="ready", availability="active", address="local")
        ]

    def wait_for_change(self, timeout: float, stop: threading.Event) -> None:
        stop.wait(timeout)
