"""How the daemon and its jobs reach each other over Docker networking.

- container-ip (the daemon runs on a Linux host beside the engine): the daemon reaches a job at
  its address on the shared network, with no docker-proxy process in the way; jobs reach the
  daemon at the network's gateway address, where it also listens.
- published-port (the daemon runs on a host that cannot route to containers, e.g. Docker
  Desktop): the daemon reaches a job at the 127.0.0.1 port its 7000 is published on; jobs reach
  the daemon as with container-ip.
- container-name (the daemon runs in a container on the shared network): both sides use
  container names through Docker's DNS.

Jobs' containers cannot reach each other directly (only through the gateway): on a host-run daemon
the jobs' network has inter-container traffic off. Image builds run on a network of their own
(`<network>-build`), never on the host's: the host's loopback services are out of their reach and
so are the jobs' containers (Docker keeps bridges apart), while the package index is not.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Callable

from racetrackd import naming
from racetrackd.docker.runtime import Runtime
from racetrackd.docker.swarm import TASK_IP, TASK_PORT, SwarmOrchestrator
from racetrackd.naming import JOB_PORT
from racetrackd.settings import Settings

CONTAINER_NAME = "container-name"
CONTAINER_IP = "container-ip"
PUBLISHED_PORT = "published-port"
# swarm mode (racetrackd.docker.swarm): tasks at their host-mode published ports (TASK_PORT), or at
# their overlay IPs (TASK_IP)
GWBRIDGE = "docker_gwbridge"  # Swarm's bridge from each node's tasks to that node's host

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Addressing:
    mode: str
    daemon_host: str  # the daemon's address as seen from inside a job container
    port: int
    network: str = "racetrack"

    @property
    def pub_url(self) -> str:
        """PUB_URL given to jobs, for chain calls through the gateway."""
        return f"http://{self.daemon_host}:{self.port}/pub"

    @property
    def in_container(self) -> bool:
        """Whether the daemon runs in a container on the jobs' network."""
        return self.mode in (CONTAINER_NAME, TASK_IP)

    @property
    def isolates_containers(self) -> bool:
        """Whether containers on the daemon's networks can be kept from reaching each other: only when
        the daemon reaches them from the host (in a container on them, it would be cut off too)."""
        return not self.in_container

    @property
    def build_network(self) -> str:
        return naming.build_network(self.network)


def prepare_networks(settings: Settings, runtime: Runtime) -> Addressing:
    """Make the jobs' and the builds' networks (isolated when the daemon runs on the host) and work
    out how the daemon and its jobs reach each other."""
    mode = settings.job_addressing
    in_container = mode == CONTAINER_NAME or (mode == "auto" and settings.network in runtime.own_networks())
    if not runtime.ensure_network(settings.network, isolated=not in_container) and not in_container:
        log.warning(
            "network %s was made before racetrackd kept jobs apart, and containers are still attached: "
            "jobs on it can reach each other's port %s directly, bypassing the gateway's auth. "
            "To fix: racetrackd stop, docker rm -f the job containers on it (or delete the jobs), "
            "docker network rm %s, racetrackd start (it remakes the network and restores the jobs).",
            settings.network,
            JOB_PORT,
            settings.network,
        )
    addressing = resolve_addressing(settings, runtime)
    runtime.ensure_network(addressing.build_network, isolated=addressing.isolates_containers)
    if addressing.mode == CONTAINER_NAME and runtime.own_container_name() is not None:
        runtime.connect_container(addressing.build_network, addressing.daemon_host)  # so builds reach it
    return addressing


def prepare_swarm_networks(settings: Settings, runtime: Runtime, swarm: SwarmOrchestrator) -> Addressing:
    """swarm mode: refuse an engine that is no manager and a clashing network, before anything is
    made; then the jobs' overlay network and the builds' bridge (builds run on this engine)."""
    swarm.check_manager()
    swarm.ensure_network()
    addressing = resolve_swarm_addressing(settings, runtime, swarm)
    runtime.ensure_network(addressing.build_network, isolated=addressing.isolates_containers)
    if addressing.in_container and runtime.own_container_name() is not None:
        runtime.connect_container(addressing.build_network, addressing.daemon_host)  # so builds reach it
    return addressing


def resolve_swarm_addressing(
    settings: Settings,
    runtime: Runtime,
    swarm: SwarmOrchestrator,
    is_local_address: Callable[[str], bool] | None = None,
    route_address: Callable[[str], str | None] | None = None,
) -> Addressing:
    """On a host: tasks at `<node address>:<published port>`; jobs reach the daemon at the manager's
    swarm address (its host, from any node), or, on a swarm advertised on loopback (a single node),
    at the host's address on Swarm's docker_gwbridge. In a container on the overlay: task IPs and
    the container's name.

    When the manager is another machine (DOCKER_HOST names a remote engine, or the swarm lab's
    manager container), nothing of racetrackd listens at the manager's address: jobs reach the
    daemon at this host's own address on its route to the manager instead (the nodes share the
    manager's network, so they route there too), and racetrackd listens there."""
    if settings.network in runtime.own_networks():
        host = runtime.own_container_name() or socket.gethostname()
        return Addressing(mode=TASK_IP, daemon_host=host, port=settings.port, network=settings.network)
    manager = swarm.node_address()
    if not manager or manager.startswith("127.") or manager == "::1":
        manager = runtime.network_gateway(GWBRIDGE)
    elif not (is_local_address or _is_local_address)(manager):
        own = (route_address or _route_address)(manager)
        if own:
            log.info("the swarm manager %s is another host: jobs reach racetrackd at %s", manager, own)
            manager = own
    return Addressing(mode=TASK_PORT, daemon_host=manager, port=settings.port, network=settings.network)


def resolve_addressing(
    settings: Settings, runtime: Runtime, is_local_address: Callable[[str], bool] | None = None
) -> Addressing:
    mode = settings.job_addressing
    if mode == "auto":
        if settings.network in runtime.own_networks():
            mode = CONTAINER_NAME
        else:
            # The bridge's gateway address is one of ours exactly when this host routes to the
            # network's containers (a Linux host; not Docker Desktop's VM).
            local = (is_local_address or _is_local_address)(runtime.network_gateway(settings.network))
            mode = CONTAINER_IP if local else PUBLISHED_PORT
    if mode == CONTAINER_NAME:
        host = runtime.own_container_name() or socket.gethostname()
    else:
        host = runtime.network_gateway(settings.network)
    return Addressing(mode=mode, daemon_host=host, port=settings.port, network=settings.network)


def job_address(addressing: Addressing, runtime: Runtime, container: str, port: int = JOB_PORT) -> str:
    """host:port where the daemon reaches `container`'s job port now (a published port changes on restart).

    `port` is where the job's server listens in its container: 7000, or a Dockerfile job's own port.
    """
    if addressing.mode == CONTAINER_NAME:
        return f"{container}:{port}"
    if addressing.mode == CONTAINER_IP:
        return f"{runtime.container_ip(container, addressing.network)}:{port}"
    return runtime.published_address(container, port)


def extra_bind_addresses(settings: Settings, addressing: Addressing) -> list[str]:
    """Where else the daemon must listen so that jobs can call it (chain calls)."""
    if addressing.in_container or settings.host in ("0.0.0.0", "::", ""):
        return []
    if not _is_local_address(addressing.daemon_host):
        # The engine is not on this host (DOCKER_HOST to another machine, Docker Desktop's VM, a
        # swarm manager elsewhere): the address jobs would call is not ours to listen on, and trying
        # would stop the daemon at start. Jobs are still served; only their calls back are cut off.
        log.warning(
            "jobs reach the daemon at %s, which is not an address of this host (the Docker engine runs "
            "elsewhere): the daemon does not listen there, so chain calls from jobs (PUB_URL) will not reach it",
            addressing.daemon_host,
        )
        return []
    return [f"{addressing.daemon_host}:{settings.port}"]


def daemon_url_for_builds(addressing: Addressing, runtime: Runtime) -> str:
    """Where image builds reach the daemon (for their secret build env) from the build network: at
    the host's address where jobs reach it too, or the daemon's own container on the build network."""
    if addressing.in_container:
        host = runtime.container_ip(addressing.daemon_host, addressing.build_network)
    else:
        host = addressing.daemon_host
    return f"http://{host}:{addressing.port}"


def _route_address(destination: str) -> str | None:
    """This host's address on its route to `destination` (the kernel picks it for a UDP "connect",
    which sends nothing); None without a route."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in destination else socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((destination, 2377))  # Swarm's management port; any port gives the same route
            return str(probe.getsockname()[0])
    except OSError:
        return None


def _is_local_address(address: str) -> bool:
    """Whether `address` belongs to this host (binding to it succeeds only then)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True
