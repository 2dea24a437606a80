"""How the daemon and its jobs reach each other over Docker networking.

- container-ip (the daemon runs on a Linux host beside the engine): the daemon reaches a job at
  its address on the shared network, with no docker-proxy process in the way; jobs reach the
  daemon at the network's gateway address, where it also listens.
- published-port (the daemon runs on a host that cannot route to containers, e.g. Docker
  Desktop): the daemon reaches a job at the 127.0.0.1 port its 7000 is published on; jobs reach
  the daemon as with container-ip.
- container-name (the daemon runs in a container on the shared network): both sides use
  container names through Docker's DNS.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable

from racetrackd.naming import JOB_PORT
from racetrackd.runtime import Runtime
from racetrackd.settings import Settings

CONTAINER_NAME = "container-name"
CONTAINER_IP = "container-ip"
PUBLISHED_PORT = "published-port"


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


def resolve_addressing(settings: Settings, runtime: Runtime,
                       is_local_address: Callable[[str], bool] | None = None) -> Addressing:
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
    if addressing.mode == CONTAINER_NAME or settings.host in ("0.0.0.0", "::", ""):
        return []
    return [f"{addressing.daemon_host}:{settings.port}"]


def daemon_url_for_builds(addressing: Addressing, runtime: Runtime) -> str:
    """Where image builds reach the daemon (their RUN steps use the host's network namespace)."""
    if addressing.mode == CONTAINER_NAME:
        host = runtime.container_ip(addressing.daemon_host, addressing.network)
    else:
        host = addressing.daemon_host
    return f"http://{host}:{addressing.port}"


def _is_local_address(address: str) -> bool:
    """Whether `address` belongs to this host (binding to it succeeds only then)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True
