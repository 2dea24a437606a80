"""The composition root: `build_services(settings)` wires the registry, secrets, accounts, the Docker
runtime, addressing and the plugin store once, for every process that needs them.

The daemon's main process (racetrackd.daemon), each HTTP worker's Flask app (racetrackd.app) and
gateway (racetrackd.asgi) and the tests all start here, so each piece is made in one place and
handed down; nothing below reaches back for it (the gateway gets its parts from the `Services`,
not from Flask).
"""

from __future__ import annotations

import dataclasses

from racetrackd.auth.accounts import Accounts, ChangeSignal
from racetrackd.auth.authenticator import Authenticator, ensure_admin_token, ensure_secret_key
from racetrackd.auth.vault import Vault
from racetrackd.db import Job, open_database
from racetrackd.docker.orchestrator import SWARM, Orchestrator
from racetrackd.docker.runtime import DockerRuntime, RegistryLogin, Runtime
from racetrackd.docker.swarm import TASK_IP, SwarmOrchestrator
from racetrackd.errors import JobNotFound
from racetrackd.jobs import waking
from racetrackd.jobs.addressing import (
    Addressing,
    prepare_networks,
    prepare_swarm_networks,
    resolve_addressing,
    resolve_swarm_addressing,
)
from racetrackd.jobs.containers import ContainerReplicas
from racetrackd.plugins.store import PluginStore
from racetrackd.settings import Settings
from racetrackd.streams import StreamLimiter


@dataclasses.dataclass(frozen=True)
class Services:
    """Everything handlers, the gateway and the background loops need, wired once by `build_services`."""

    settings: Settings
    runtime: Runtime  # builds, images, networks
    orchestrator: Orchestrator  # what runs job releases: containers here, or Swarm services
    plugins: PluginStore
    authenticator: Authenticator
    accounts: Accounts
    addressing: Addressing
    vault: Vault
    streams: StreamLimiter  # open follow streams of this process (one per HTTP worker)

    def wake(self, job: Job) -> None:
        """Start a sleeping (scaled-to-zero) job and wait until it is ready; blocking."""
        waking.wake(job, self.orchestrator, self.settings.job_start_timeout)

    def claim_wake_named(self, name: str, version: str) -> None:
        """`wake_named` for an HTTP worker under the daemon: claim the wake-up and wait while the main
        process, whose Docker client is warm, starts the job (racetrackd.jobs.waker)."""
        job = Job.find(name, version)
        if job is None:
            raise JobNotFound(f"job {name} {version} not found")
        waking.wake(job, self.orchestrator, self.settings.job_start_timeout, start=False)

    def wake_named(self, name: str, version: str) -> None:
        """`wake` for a caller that knows only the job's name and version (the gateway's routing table)."""
        job = Job.find(name, version)
        if job is None:
            raise JobNotFound(f"job {name} {version} not found")
        self.wake(job)


def registry_login(settings: Settings) -> RegistryLogin | None:
    """The login to RACETRACK_REGISTRY, when it needs one (settings check that both parts are set)."""
    if not (settings.registry and settings.registry_username and settings.registry_password_file):
        return None
    host = settings.registry.split("/", 1)[0]  # reg.example:5000/team logs in to reg.example:5000
    return RegistryLogin(host, settings.registry_username, settings.registry_password_file)


def build_services(
    settings: Settings,
    runtime: Runtime | None = None,
    *,
    make_networks: bool = False,
    orchestrator_override: Orchestrator | None = None,
) -> Services:
    """Open the registry, make sure the secret key and the bootstrap admin exist, and wire the rest.

    `make_networks`: create the jobs' and the builds' Docker networks (the daemon's main process, once
    at start-up; in swarm mode it first refuses an engine that is no swarm manager, and a network of
    that name that is not an attachable overlay); the HTTP workers and tests only work out the addressing.
    `orchestrator_override`: a fake behind the seam (unit tests).
    """
    open_database(settings.database_path)  # creates the tables before any HTTP worker starts
    vault = Vault(ensure_secret_key(settings))
    accounts = Accounts(vault, ChangeSignal.in_data_dir(settings.data_dir))
    accounts.ensure_bootstrap_admin(ensure_admin_token(settings))
    engine: DockerRuntime | None = None  # the real engine (None: a fake runtime from a test)
    if runtime is None:
        runtime = engine = DockerRuntime(registry_login=registry_login(settings))
    orchestrator: Orchestrator
    if settings.orchestrator == SWARM:
        # One client, logged in to RACETRACK_REGISTRY, for pushes and service creates alike: the
        # login travels with each create, so workers without credentials pull the image.
        swarm = SwarmOrchestrator(
            settings.network, settings.instance, client_factory=engine.shared_client if engine else None
        )
        addressing = (
            prepare_swarm_networks(settings, runtime, swarm)
            if make_networks
            else resolve_swarm_addressing(settings, runtime, swarm)
        )
        swarm.addressing = TASK_IP if addressing.in_container else swarm.addressing
        orchestrator = orchestrator_override or swarm
    else:
        addressing = prepare_networks(settings, runtime) if make_networks else resolve_addressing(settings, runtime)
        orchestrator = orchestrator_override or ContainerReplicas(runtime, addressing)
    return Services(
        settings=settings,
        runtime=runtime,
        orchestrator=orchestrator,
        plugins=PluginStore.from_settings(settings),
        authenticator=Authenticator.from_settings(settings, accounts),
        accounts=accounts,
        addressing=addressing,
        vault=vault,
        streams=StreamLimiter(settings.follow_streams_per_caller, settings.max_follow_streams),
    )
