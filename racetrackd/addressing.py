"""How the daemon and its jobs reach each other over Docker networking.

- published-port (the daemon runs on the host, e.g. a laptop; Docker Desktop cannot route to
  container IPs): the daemon reaches a job at the 127.0.0.1 port its 7000 is published on, and
  jobs reach the daemon at the shared network's gateway address, where it also listens.
- container-name (the daemon runs in a container on the shared network): both sides use
  container names through Docker's DNS.
"""

from __future__ import annotations

import dataclasses
import socket

from racetrackd.naming import JOB_PORT
from racetrackd.runtime import Runtime
from racetrackd.settings import Settings

CONTAINER_NAME = "container-name"
PUBLISHED_PORT = "published-port"


@dataclasses.dataclass(frozen=True)
class Addressing:
    mode: str
    daemon_host: str  # the daemon's address as seen from inside a job container
    port: int

    @property
    def pub_url(self) -> str:
        """PUB_URL given to jobs, for chain calls through the gateway."""
        return f"http://{self.daemon_host}:{self.port}/pub"


def resolve_addressing(settings: Settings, runtime: Runtime) -> Addressing:
    mode = settings.job_addressing
    if mode == "auto":
        mode = CONTAINER_NAME if settings.network in runtime.own_networks() else PUBLISHED_PORT
    if mode == CONTAINER_NAME:
        host = runtime.own_container_name() or socket.gethostname()
    else:
        host = runtime.network_gateway(settings.network)
    return Addressing(mode=mode, daemon_host=host, port=settings.port)


def job_address(addressing: Addressing, runtime: Runtime, container: str) -> str:
    """host:port where the daemon reaches `container`'s job port now (a published port changes on restart)."""
    if addressing.mode == CONTAINER_NAME:
        return f"{container}:{JOB_PORT}"
    return runtime.published_address(container)


def extra_bind_addresses(settings: Settings, addressing: Addressing) -> list[str]:
    """Where else the daemon must listen so that jobs can call it (chain calls)."""
    if addressing.mode != PUBLISHED_PORT or settings.host in ("0.0.0.0", "::", ""):
        return []
    return [f"{addressing.daemon_host}:{settings.port}"]
