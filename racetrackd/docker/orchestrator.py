"""The seam between racetrackd's job lifecycle and whatever runs a job's replicas.

A *unit* is one release of a job running as N replicas under one name: in `docker` mode the
containers `<unit>`, `<unit>-1`, ... on this engine (racetrackd.jobs.containers), in `swarm` mode
one Swarm service named `<unit>` whose tasks are the replicas (racetrackd.docker.swarm). The
deployer, the supervisor, waking and the job queries talk only to `Orchestrator`; which one runs is
chosen once, by RACETRACK_ORCHESTRATOR, in racetrackd.services.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Protocol

from racetrackd.docker.runtime import Hardening, LogStream
from racetrackd.manifest import ContainerLimits
from racetrackd.naming import JOB_PORT

DOCKER = "docker"
SWARM = "swarm"
ORCHESTRATORS = (DOCKER, SWARM)


@dataclasses.dataclass(frozen=True)
class ReleaseSpec:
    """What every replica of one release runs with."""

    image: str
    env: dict[str, str]
    labels: dict[str, str]
    network: str
    replicas: int
    limits: ContainerLimits | None = None
    port: int = JOB_PORT  # where the job's server listens in its container
    hardening: Hardening = dataclasses.field(default_factory=Hardening)
    placement: tuple[str, ...] = ()  # Swarm placement constraints (`node.labels.gpu == true`)
    stop_grace: float = 10.0  # SIGTERM, then SIGKILL after this long


# Replica states, the same words in both modes: what the supervisor and the deployer decide on.
MISSING = "missing"  # nothing runs for this replica (docker: no container; swarm: no service)
PENDING = "pending"  # swarm: a task waits to be placed or for its image (the reason is in `error`)
STARTING = "starting"  # created, not running yet
RUNNING = "running"
RESTARTING = "restarting"
EXITED = "exited"  # stopped (crashed, killed or put to sleep)


@dataclasses.dataclass(frozen=True)
class Replica:
    """One replica as the orchestrator sees it now."""

    name: str  # docker: the container's name; swarm: `<service>.<slot>`, as `docker service ps` shows it
    state: str  # one of the states above
    exit_code: int | None = None
    restart_count: int = 0  # docker: Docker's restarts; swarm: the slot's failed tasks
    node: str = ""  # the node's hostname (swarm); empty in docker mode: this engine
    error: str = ""  # Swarm's own reason (task Status.Err, else Message when it failed)
    address: str | None = None  # host:port where racetrackd reaches its server; None until known
    task_id: str = ""  # swarm: the task behind the replica now (a rescheduled replica gets a new one)

    @property
    def alive(self) -> bool:
        return self.state in (PENDING, STARTING, RUNNING)


@dataclasses.dataclass(frozen=True)
class NodeTask:
    job_name: str
    job_version: str
    replica: str
    state: str


@dataclasses.dataclass(frozen=True)
class Node:
    hostname: str
    role: str  # manager | worker (docker mode: "engine")
    state: str  # ready | down | unknown | disconnected
    availability: str  # active | pause | drain
    address: str
    engine_version: str = ""
    leader: bool = False
    tasks: tuple[NodeTask, ...] = ()


def nodes_that_may_run(nodes: list[Node], constraints: tuple[str, ...]) -> list[Node]:
    """The nodes Swarm could place a job's tasks on now: ready and active, and meeting the constraints
    on a node's role or hostname (`node.role == manager`); constraints on labels, ids or platforms are
    not known here and leave every node in."""
    found = [node for node in nodes if node.state == "ready" and node.availability == "active"]
    for constraint in constraints:
        for operator in ("==", "!="):
            key, sep, value = constraint.partition(operator)
            if sep:
                break
        else:
            continue
        attribute = {"node.role": "role", "node.hostname": "hostname"}.get(key.strip())
        if attribute is None:
            continue
        wanted = value.strip()
        found = [node for node in found if (getattr(node, attribute) == wanted) == (operator == "==")]
    return found


class Orchestrator(Protocol):
    """Runs job releases ("units") as replicas; see the module's docstring."""

    @property
    def kind(self) -> str: ...  # DOCKER or SWARM

    def start(self, unit: str, spec: ReleaseSpec) -> list[str]:
        """Start what of `unit` does not run yet (all of it for a new unit); the replicas started."""
        ...

    def replicas(self, unit: str, count: int, port: int) -> list[Replica]:
        """The unit's `count` replicas, in order; a replica with nothing behind it is MISSING."""
        ...

    def revive(self, unit: str, replica: Replica) -> bool:
        """Start an EXITED replica again when nothing else will (docker: a container killed from outside
        is not covered by its restart policy; swarm restarts tasks itself). Whether it was started."""
        ...

    def stop(self, unit: str, count: int, timeout: float) -> None:
        """Stop every replica, keeping the unit (scale to zero: the job sleeps)."""
        ...

    @property
    def can_pause(self) -> bool: ...  # whether `pause` freezes (docker) or only stops (swarm)

    def pause(self, unit: str, count: int) -> None:
        """Freeze every replica, keeping its memory (a short sleep, woken in milliseconds); a replica
        that cannot be frozen, and every replica where the backend cannot freeze (swarm), is stopped."""
        ...

    def stop_paused(self, unit: str, count: int) -> list[str]:
        """Stop the frozen replicas of a long-sleeping job, freeing their memory; which were."""
        ...

    def resume(self, unit: str, count: int) -> None:
        """Run the unit's `count` replicas again after `pause` or `stop` (the job wakes)."""
        ...

    def set_cpu_weight(self, unit: str, count: int, shares: int) -> None:
        """Give ready replicas their own CPU weight (docker's cpu-shares; swarm has none: a no-op)."""
        ...

    def remove(self, unit: str, count: int) -> None:
        """Remove the unit and its replicas now (no-op for what is gone already)."""
        ...

    def set_aside(self, unit: str, count: int, tag: str) -> list[str]:
        """Take a replaced unit out of the way of its successor; the handles `retire` takes."""
        ...

    def retire(self, handle: str, timeout: float) -> None:
        """Let a set-aside replica or unit finish its calls (SIGTERM, up to `timeout`), then remove it."""
        ...

    def promote(self, staging: str, final: str, count: int) -> str:
        """Give a ready staging unit the name it serves under; the unit's name from now on."""
        ...

    def members(self, unit: str, count: int) -> list[str]:
        """The names `list_members` lists for this unit (docker: its containers; swarm: its service)."""
        ...

    def list_members(self, labels: dict[str, str]) -> list[str]:
        """Names of everything carrying all `labels` (the start-up reconcile looks for orphans)."""
        ...

    def remove_member(self, name: str) -> None: ...

    def logs(self, unit: str, count: int, tail: int) -> str:
        """The last `tail` lines of the unit's output (swarm: of every task, each line naming its task and node)."""
        ...

    def replica_logs(self, unit: str, replica: Replica, tail: int) -> str: ...

    def follow_logs(self, unit: str, count: int, tail: int) -> LogStream: ...

    def nodes(self) -> list[Node]: ...

    def wait_for_change(self, timeout: float, stop: threading.Event) -> None:
        """Return after `timeout`, when `stop` is set, or earlier when the cluster changed (swarm: a
        service or node event), so that the supervisor follows Swarm within moments."""
        ...
