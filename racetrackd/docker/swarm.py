"""`swarm` mode behind the orchestrator seam: each job release is one Docker Swarm service.

The second module allowed to import the Docker SDK (besides racetrackd.docker.runtime). A unit is a
service named `<job>-<deployment8>`; its tasks are the replicas. racetrackd never uses Swarm's own
`service update`: a redeploy creates a new service beside the old one, probes its tasks ready one by
one, switches the gateway and removes the old service (start-first, and a failed start removes only
the new service). The gateway calls tasks directly, never through the routing mesh:

- `task-port` (racetrackd runs on a manager's host): every task publishes the job's port in host
  mode on a port Docker picks; racetrackd calls `<node address>:<published port>`.
- `task-ip` (racetrackd runs in a container attached to the overlay): it calls `<task IP>:<port>`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.errors
import docker.types

from racetrackd import naming
from racetrackd.docker.orchestrator import (
    EXITED,
    MISSING,
    PENDING,
    RUNNING,
    STARTING,
    SWARM,
    Node,
    NodeTask,
    ReleaseSpec,
    Replica,
)
from racetrackd.docker.runtime import LogStream, _DockerLogStream, _translated, docker_tail
from racetrackd.errors import RacetrackError, SettingsError

log = logging.getLogger(__name__)

TASK_PORT = "task-port"
TASK_IP = "task-ip"

# Swarm's task states, in the seam's words. A task waiting for a node (or for resources) is pending;
# one that is being prepared (its image pulled) or started is starting.
_TASK_STATES = {
    "new": PENDING,
    "allocated": PENDING,
    "pending": PENDING,
    "assigned": STARTING,
    "accepted": STARTING,
    "preparing": STARTING,
    "ready": STARTING,
    "starting": STARTING,
    "running": RUNNING,
}
_FAILED = ("failed", "rejected")
MAX_SERVICE_NAME = 63  # Swarm's limit: a service name is a DNS label
EVENT_SETTLE_SECONDS = 0.5  # after a service or node event, give Swarm a moment to move its tasks


class SwarmOrchestrator:
    """The Orchestrator of `swarm` mode (RACETRACK_ORCHESTRATOR=swarm)."""

    def __init__(
        self,
        network: str,
        instance: str,
        addressing: str = TASK_PORT,
        client_factory: Callable[[], docker.DockerClient] | None = None,
    ) -> None:
        self.network = network
        self.instance = instance
        self.addressing = addressing
        self._client_factory = client_factory or (lambda: docker.from_env(timeout=300))
        self._client_lock = threading.Lock()
        self._client_made: docker.DockerClient | None = None

    @property
    def kind(self) -> str:
        return SWARM

    @property
    def _client(self) -> docker.DockerClient:
        with self._client_lock:
            if self._client_made is None:
                with _translated("connecting to Docker"):
                    self._client_made = self._client_factory()
            return self._client_made

    # --- start-up -------------------------------------------------------------------------------
    def check_manager(self) -> None:
        """Refuse to run unless this engine manages a swarm (services are made on managers only)."""
        with _translated("inspecting the swarm"):
            swarm = self._client.info().get("Swarm") or {}
        state = swarm.get("LocalNodeState") or "inactive"
        if state != "active" or not swarm.get("ControlAvailable"):
            raise SettingsError(
                "RACETRACK_ORCHESTRATOR=swarm needs a Docker engine that is a swarm manager; this one is "
                + (f"in no swarm (state {state})" if state != "active" else "a worker"),
                hint="run `docker swarm init` (or start racetrackd on a manager node), "
                "or set RACETRACK_ORCHESTRATOR=docker",
            )

    def node_address(self) -> str:
        """This manager's address in the swarm (what it advertised; other nodes reach it there)."""
        with _translated("inspecting the swarm"):
            return str((self._client.info().get("Swarm") or {}).get("NodeAddr") or "")

    def ensure_network(self) -> None:
        """Make the jobs' attachable overlay network unless it exists; a network of that name made
        with another driver (a bridge of an earlier single-host install) is refused, untouched."""
        with _translated(f"creating network {self.network}"):
            found = [n for n in self._client.networks.list(names=[self.network]) if n.name == self.network]
            if found:
                found[0].reload()
                driver = found[0].attrs.get("Driver")
                if driver != "overlay" or not found[0].attrs.get("Attachable"):
                    kind = f"a {driver} network" if driver != "overlay" else "an overlay network that is not attachable"
                    raise SettingsError(
                        f"RACETRACK_NETWORK={self.network}: {kind} of that name exists, but swarm mode runs jobs "
                        "on an attachable overlay network",
                        hint=f"set RACETRACK_NETWORK to another name, or remove it (docker network rm {self.network}) "
                        "once nothing uses it",
                    )
                return
            try:
                self._client.networks.create(
                    self.network,
                    driver="overlay",
                    attachable=True,  # so that racetrackd in a container can join it (task-ip addressing)
                    check_duplicate=True,
                    labels={naming.LABEL_INSTANCE: self.instance},
                )
            except docker.errors.APIError:
                if not self._client.networks.list(names=[self.network]):
                    raise  # not made meanwhile by another process: a real failure

    # --- units ----------------------------------------------------------------------------------
    def start(self, unit: str, spec: ReleaseSpec) -> list[str]:
        unit = service_name(unit)
        if self._service(unit) is not None:
            return []  # Swarm keeps its replicas running itself
        spec = dataclasses.replace(spec, image=self._service_image(spec.image))
        with _translated(f"creating service {unit}"):
            self._client.api.create_service(
                _task_template(spec, self.network, no_new_privileges=self._api_at_least(1, 44)),
                name=unit,
                labels=spec.labels,
                mode=docker.types.ServiceMode("replicated", replicas=spec.replicas),
                # No routing mesh: each task publishes the job's port on its own node, on a port Docker
                # picks; dnsrr (no virtual IP) as nothing calls the service by its name.
                endpoint_spec={
                    "Mode": "dnsrr",
                    "Ports": [{"Protocol": "tcp", "TargetPort": spec.port, "PublishMode": "host"}],
                },
            )
        return [f"{unit}.{slot}" for slot in range(1, spec.replicas + 1)]

    def _api_at_least(self, major: int, minor: int) -> bool:
        """Whether the engine speaks this API version (what a service spec may carry depends on it)."""
        with _translated("reading the engine's API version"):
            version = str(self._client.version().get("ApiVersion", "0.0"))
        found = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
        return found >= (major, minor)

    def _service_image(self, ref: str) -> str:
        """An image only this engine has (no registry in its name: a single-node swarm) runs by its id:
        Swarm then pulls nothing (it tries a pull of every tag before each task starts). An image
        named with its registry (RACETRACK_REGISTRY) is pulled by each node as named."""
        if _has_registry(ref):
            return ref
        with _translated(f"looking up image {ref}"):
            try:
                return str(self._client.images.get(ref).id)
            except docker.errors.ImageNotFound:
                return ref

    def replicas(self, unit: str, count: int, port: int) -> list[Replica]:
        unit = service_name(unit)
        service = self._service(unit)
        if service is None:
            return [Replica(name=f"{unit}.{slot}", state=MISSING) for slot in range(1, count + 1)]
        with _translated(f"listing the tasks of {unit}"):
            tasks = self._client.api.tasks(filters={"service": service["ID"]})
            nodes = {node["ID"]: node for node in self._client.api.nodes()}
        by_slot: dict[int, list[dict[str, Any]]] = {}
        for task in tasks:
            by_slot.setdefault(int(task.get("Slot") or 0), []).append(task)
        found = []
        for slot in range(1, count + 1):
            history = sorted(by_slot.get(slot, []), key=lambda t: t.get("CreatedAt", ""))
            found.append(self._replica(f"{unit}.{slot}", history, nodes, port))
        return found

    def _replica(self, name: str, history: list[dict[str, Any]], nodes: dict[str, Any], port: int) -> Replica:
        if not history:
            return Replica(name=name, state=PENDING)  # Swarm has not made the slot's task yet
        wanted = [t for t in history if t.get("DesiredState") == "running"]
        task = (wanted or history)[-1]
        status = task.get("Status") or {}
        state = _TASK_STATES.get(status.get("State", ""), EXITED)
        node = nodes.get(task.get("NodeID", "")) or {}
        failed = [t for t in history if (t.get("Status") or {}).get("State") in _FAILED]
        error = status.get("Err") or ""
        if not error and state == EXITED:
            error = status.get("Message") or ""
        if not error and failed and state != RUNNING:
            last = failed[-1].get("Status") or {}
            error = last.get("Err") or last.get("Message") or ""
        exit_code = ((status.get("ContainerStatus") or {}).get("ExitCode")) if state == EXITED else None
        if exit_code is None and failed:
            exit_code = ((failed[-1].get("Status") or {}).get("ContainerStatus") or {}).get("ExitCode")
        return Replica(
            name=name,
            state=state,
            exit_code=exit_code,
            restart_count=len(failed),
            node=str((node.get("Description") or {}).get("Hostname") or task.get("NodeID") or ""),
            error=error,
            address=self._address(task, node, port) if state == RUNNING else None,
            task_id=str(task.get("ID", "")),
        )

    def _address(self, task: dict[str, Any], node: dict[str, Any], port: int) -> str | None:
        if self.addressing == TASK_IP:
            for attachment in task.get("NetworksAttachments") or []:
                if ((attachment.get("Network") or {}).get("Spec") or {}).get("Name") == self.network:
                    for cidr in attachment.get("Addresses") or []:
                        return f"{cidr.split('/')[0]}:{port}"
            return None
        for published in ((task.get("Status") or {}).get("PortStatus") or {}).get("Ports") or []:
            if published.get("TargetPort") == port and published.get("PublishedPort"):
                host = (node.get("Status") or {}).get("Addr") or ""
                if host and host != "0.0.0.0":
                    return f"{host}:{published['PublishedPort']}"
        return None

    def revive(self, unit: str, replica: Replica) -> bool:
        return False  # Swarm's restart policy starts failed tasks again, wherever they fit

    def stop(self, unit: str, count: int, timeout: float) -> None:
        self._scale(unit, 0)

    can_pause = False  # a service has no frozen state: a sleeping job is scaled to zero

    def pause(self, unit: str, count: int) -> None:
        self._scale(unit, 0)

    def stop_paused(self, unit: str, count: int) -> list[str]:
        return []

    def resume(self, unit: str, count: int) -> None:
        self._scale(unit, count)

    def set_cpu_weight(self, unit: str, count: int, shares: int) -> None:
        pass  # Swarm has no CPU weight; the manifest's cpu_min is a reservation there

    def _scale(self, unit: str, replicas: int) -> None:
        unit = service_name(unit)
        with _translated(f"scaling service {unit} to {replicas}"):
            try:
                service = self._client.services.get(unit)
            except docker.errors.NotFound:
                raise RacetrackError(f"service {unit} is missing in the swarm") from None
            service.scale(replicas)

    def remove(self, unit: str, count: int) -> None:
        self.remove_member(unit)

    def set_aside(self, unit: str, count: int, tag: str) -> list[str]:
        return [unit]  # every release is a service of its own: nothing is in the new one's way

    def retire(self, handle: str, timeout: float) -> None:
        """Remove the replaced service: Swarm stops its tasks with SIGTERM and waits up to their stop
        grace period (the drain timeout, set at creation) before SIGKILL. Returns once this node runs
        none of them, so that their image can be collected."""
        handle = service_name(handle)
        self.remove_member(handle)
        deadline = time.monotonic() + timeout + 5
        with _translated(f"waiting for service {handle} to stop"):
            while time.monotonic() < deadline and self._client.containers.list(
                all=True, filters={"label": f"com.docker.swarm.service.name={handle}", "status": "running"}
            ):
                time.sleep(0.2)

    def promote(self, staging: str, final: str, count: int) -> str:
        return staging  # services cannot be renamed: the release keeps its deployment's name

    def members(self, unit: str, count: int) -> list[str]:
        unit = service_name(unit)
        return [unit]

    def list_members(self, labels: dict[str, str]) -> list[str]:
        with _translated("listing services"):
            services = self._client.api.services(filters={"label": [f"{k}={v}" for k, v in labels.items()]})
        return sorted(str(s["Spec"]["Name"]) for s in services)

    def remove_member(self, name: str) -> None:
        name = service_name(name)
        with _translated(f"removing service {name}"):
            try:
                self._client.api.remove_service(name)
            except docker.errors.NotFound:
                pass

    def _service(self, unit: str) -> dict[str, Any] | None:
        unit = service_name(unit)
        with _translated(f"inspecting service {unit}"):
            try:
                found: dict[str, Any] = self._client.api.inspect_service(unit)
            except docker.errors.NotFound:
                return None
        return found if found.get("Spec", {}).get("Name") == unit else None  # not a prefix or id match

    # --- logs -----------------------------------------------------------------------------------
    def logs(self, unit: str, count: int, tail: int) -> str:
        return "".join(self._log_lines(unit, tail, lambda task_id: True))

    def replica_logs(self, unit: str, replica: Replica, tail: int) -> str:
        if not replica.task_id:
            return ""
        lines = self._log_lines(unit, tail, lambda task_id: task_id == replica.task_id)
        return "".join(line.split(" | ", 1)[-1] for line in lines)

    def _log_lines(self, unit: str, tail: int, keep: Callable[[str], bool]) -> list[str]:
        unit = service_name(unit)
        service = self._service(unit)
        if service is None:
            return []
        names = _TaskNames(self._client, service["ID"], unit)
        with _translated(f"reading logs of {unit}"):
            raw = self._client.api.service_logs(
                service["ID"], details=True, stdout=True, stderr=True, tail=docker_tail(tail), follow=False
            )
        data = raw if isinstance(raw, bytes) else b"".join(raw)
        lines = []
        for line in data.decode("utf-8", errors="replace").splitlines(keepends=True):
            task_id, text = _split_details(line)
            if keep(task_id):
                lines.append(f"{names.of(task_id)} | {text}")
        return lines

    def follow_logs(self, unit: str, count: int, tail: int) -> LogStream:
        """Every task's output as it comes, each line prefixed `<service>.<slot>@<node> | `."""
        unit = service_name(unit)
        service = self._service(unit)
        if service is None:
            raise RacetrackError(f"service {unit} is missing in the swarm")
        api = self._client.api
        with _translated(f"reading logs of {unit}"):
            response = api._get(
                api._url("/services/{0}/logs", service["ID"]),
                params={
                    "details": 1,
                    "follow": 1,
                    "stdout": 1,
                    "stderr": 1,
                    "tail": str(docker_tail(tail)),
                    "timestamps": 0,
                },
                stream=True,
            )
            api._raise_for_status(response)
            frames = api._multiplexed_response_stream_helper(response)
        names = _TaskNames(self._client, service["ID"], unit)
        return _DockerLogStream(docker.types.CancellableStream(_named_lines(frames, names), response))

    # --- the cluster ----------------------------------------------------------------------------
    def nodes(self) -> list[Node]:
        with _translated("listing the swarm's nodes"):
            nodes = self._client.api.nodes()
            tasks = self._client.api.tasks(filters={"desired-state": "running"})
            services = {s["ID"]: s["Spec"]["Name"] for s in self._client.api.services()}
        on_node: dict[str, list[NodeTask]] = {}
        for task in tasks:
            labels = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}
            if labels.get(naming.LABEL_INSTANCE) != self.instance or not labels.get(naming.LABEL_JOB_NAME):
                continue
            on_node.setdefault(task.get("NodeID", ""), []).append(
                NodeTask(
                    job_name=labels[naming.LABEL_JOB_NAME],
                    job_version=labels.get(naming.LABEL_JOB_VERSION, ""),
                    replica=f"{services.get(task.get('ServiceID', ''), task.get('ServiceID', '')[:12])}.{task.get('Slot')}",
                    state=(task.get("Status") or {}).get("State", ""),
                )
            )
        found = []
        for node in sorted(nodes, key=lambda n: (n.get("Description") or {}).get("Hostname", "")):
            spec, status = node.get("Spec") or {}, node.get("Status") or {}
            found.append(
                Node(
                    hostname=str((node.get("Description") or {}).get("Hostname", node.get("ID", ""))),
                    role=str(spec.get("Role", "")),
                    state=str(status.get("State", "")),
                    availability=str(spec.get("Availability", "")),
                    address=str(status.get("Addr", "")),
                    engine_version=str(((node.get("Description") or {}).get("Engine") or {}).get("EngineVersion", "")),
                    leader=bool((node.get("ManagerStatus") or {}).get("Leader")),
                    tasks=tuple(on_node.get(node.get("ID", ""), [])),
                )
            )
        return found

    def wait_for_change(self, timeout: float, stop: threading.Event) -> None:
        """Wait for a service or node event (Docker 20.10 has no task events: a task that moved shows
        as its service's update, a dead node as a node event) for at most `timeout` seconds."""
        now = time.time()
        try:
            events = self._client.events(
                since=int(now), until=int(now + max(timeout, 1)), filters={"type": ["service", "node"]}, decode=True
            )
        except (docker.errors.DockerException, OSError) as exc:
            log.warning("cannot follow the swarm's events (%s): checking every %g s", exc, timeout)
            stop.wait(timeout)
            return
        try:
            for _ in events:
                stop.wait(EVENT_SETTLE_SECONDS)
                return
        except Exception as exc:  # noqa: BLE001 (a broken event stream only delays the next check)
            log.debug("the swarm's event stream ended: %s", exc)
        finally:
            events.close()


def _task_template(spec: ReleaseSpec, network: str, *, no_new_privileges: bool = False) -> docker.types.TaskTemplate:
    hardening = spec.hardening
    mounts = []
    if hardening.read_only_root:
        mounts.append(docker.types.Mount("/tmp", None, type="tmpfs", tmpfs_size=hardening.tmp_size))
    container = docker.types.ContainerSpec(
        spec.image,
        env=spec.env,
        labels=spec.labels,
        read_only=hardening.read_only_root,
        mounts=mounts,
        cap_drop=["ALL"],
        cap_add=list(hardening.capabilities) or None,
        stop_grace_period=int(spec.stop_grace * 1e9),
        hosts={"host.docker.internal": "host-gateway"},
    )
    if no_new_privileges:  # services have it since API 1.44 (Docker 25); older engines have no such field
        container["Privileges"] = {"NoNewPrivileges": True}
    resources = None
    if spec.limits is not None:
        limits = spec.limits
        resources = docker.types.Resources(
            cpu_limit=limits.nano_cpus,
            mem_limit=limits.memory_bytes,
            # Reservations are what Swarm schedules by: a node without this much free is not chosen
            cpu_reservation=max(1, limits.cpu_shares * 1_000_000_000 // 1024),
            mem_reservation=limits.memory_reservation_bytes,
        )
    if hardening.pids_limit:
        resources = resources or docker.types.Resources()
        resources.setdefault("Limits", {})["Pids"] = hardening.pids_limit  # API 1.41 (Docker 20.10)
    return docker.types.TaskTemplate(
        container,
        resources=resources,
        restart_policy=docker.types.RestartPolicy(condition="any", delay=1_000_000_000),
        placement=docker.types.Placement(constraints=list(spec.placement)) if spec.placement else None,
        networks=[docker.types.NetworkAttachmentConfig(network)],
    )


def service_name(unit: str) -> str:
    """The service of a unit: its name, or, past Swarm's 63 characters (a DNS label), its head, a digest
    of the whole and its last 9 characters (`-<deployment8>`, which the start-up reconcile reads)."""
    if len(unit) <= MAX_SERVICE_NAME:
        return unit
    digest = hashlib.sha256(unit.encode()).hexdigest()[:8]
    head = unit[: MAX_SERVICE_NAME - 18].rstrip("-")
    return f"{head}-{digest}{unit[-9:]}"


def _has_registry(ref: str) -> bool:
    """Whether an image reference names its registry (`host[:port]/...`, `localhost/...`)."""
    first, slash, _ = ref.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost")


def _split_details(line: str) -> tuple[str, str]:
    """(task id, text) of a line read with details=1: `k=v,k=v text`."""
    details, sep, text = line.partition(" ")
    if not sep or "com.docker.swarm.task.id=" not in details:
        return "", line
    for pair in details.split(","):
        key, _, value = pair.partition("=")
        if key == "com.docker.swarm.task.id":
            return value, text
    return "", text


class _TaskNames:
    """`<service>.<slot>@<node>` of a service's tasks by id, looked up again for a task not seen yet."""

    def __init__(self, client: docker.DockerClient, service_id: str, unit: str) -> None:
        self._client, self._service_id, self._unit = client, service_id, unit
        self._names: dict[str, str] = {}

    def of(self, task_id: str) -> str:
        if task_id not in self._names:
            self._load()
        return self._names.get(task_id, f"{self._unit}.{task_id[:12]}")

    def _load(self) -> None:
        try:
            nodes = {n["ID"]: (n.get("Description") or {}).get("Hostname", n["ID"]) for n in self._client.api.nodes()}
            for task in self._client.api.tasks(filters={"service": self._service_id}):
                node = nodes.get(task.get("NodeID", ""), task.get("NodeID", "?"))
                self._names[task["ID"]] = f"{self._unit}.{task.get('Slot')}@{node}"
        except docker.errors.DockerException as exc:
            log.debug("cannot name the tasks of %s: %s", self._unit, exc)


def _named_lines(frames: Iterator[bytes], names: _TaskNames) -> Iterator[bytes]:
    buffered = b""
    for frame in frames:
        buffered += frame
        *complete, buffered = buffered.split(b"\n")
        for raw in complete:
            task_id, text = _split_details(raw.decode("utf-8", errors="replace"))
            yield f"{names.of(task_id)} | {text}\n".encode()
    if buffered:
        task_id, text = _split_details(buffered.decode("utf-8", errors="replace"))
        yield f"{names.of(task_id)} | {text}\n".encode()
