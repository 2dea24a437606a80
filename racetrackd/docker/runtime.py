"""The Docker adapter: the only module that imports `docker`.

Everything else talks to the `Runtime` protocol, which `tests/unit/fakes.py` also implements.
Docker SDK and connection errors are translated here into racetrackd's own errors.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol

import docker
import docker.errors
import requests.exceptions

from racetrackd.errors import BuildError, DockerUnavailable, NotFoundError, RacetrackError
from racetrackd.manifest import ContainerLimits
from racetrackd.naming import JOB_PORT

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Hardening:
    """What a job's container may not do. Every job loses all capabilities and cannot gain
    privileges (setuid binaries, file capabilities); the job type decides the rest."""

    read_only_root: bool = False  # the root filesystem is read-only; /tmp is a tmpfs of `tmp_size` bytes
    capabilities: tuple[str, ...] = ()  # added back after dropping all (a job type that needs one says so)
    pids_limit: int | None = None  # processes and threads, together
    tmp_size: int = 128 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    env: dict[str, str]
    labels: dict[str, str]
    network: str
    publish_port: bool  # publish `port` on 127.0.0.1 for a daemon running on the host
    limits: ContainerLimits | None = None
    port: int = JOB_PORT  # where the job's server listens in the container
    hardening: Hardening = dataclasses.field(default_factory=Hardening)


@dataclasses.dataclass(frozen=True)
class ContainerState:
    name: str
    status: str  # created | running | paused | restarting | exited | dead | missing
    exit_code: int | None
    restart_count: int = 0

    @property
    def alive(self) -> bool:
        return self.status in ("created", "running")


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What the engine knows of an image: its id (the digest of its configuration: the exact
    content) and the registry digests it was pulled or pushed by (none for an image built here)."""

    id: str  # sha256:<hex>
    repo_digests: tuple[str, ...] = ()  # e.g. registry.example/team/svc@sha256:<hex>


@dataclasses.dataclass(frozen=True)
class RegistryLogin:
    """Who the engine pulls and pushes as at a private registry. The password stays in its file
    until the login (read afresh each time: a rotated password needs no restart)."""

    registry: str  # host[:port], as at the start of image references
    username: str
    password_file: Path

    def password(self) -> str:
        return self.password_file.read_text().rstrip("\r\n")


def registry_login(client: docker.DockerClient, login: RegistryLogin) -> None:
    """Log `client` in to `login.registry`. The SDK keeps the credentials and sends them
    (X-Registry-Auth) with every later push, pull and swarm service create or update made through
    this client, which is how workers without credentials of their own pull a private image."""
    try:
        password = login.password()
    except OSError as exc:
        raise RacetrackError(f"reading the registry password file {login.password_file}: {exc}") from exc
    with _translated(f"logging in to registry {login.registry} as {login.username}"):
        client.login(username=login.username, password=password, registry=login.registry, reauth=True)


def try_registry_login(client: docker.DockerClient, login: RegistryLogin | None) -> bool:
    """`registry_login` when the client is made: a failure is a warning, not fatal (the registry may
    be down while the engine is up; the next push logs in again and fails the deployment saying why)."""
    if login is None:
        return False
    try:
        registry_login(client, login)
    except RacetrackError as exc:
        log.warning("cannot log in to registry %s yet: %s", login.registry, exc.message)
        return False
    return True


class Runtime(Protocol):
    def build_image(
        self,
        context: IO[bytes],
        dockerfile: str,
        tag: str,
        labels: dict[str, str],
        on_log: Callable[[str], None],
        *,
        no_cache: bool = False,
        timeout: float | None = None,
        memory_limit: int | None = None,
        build_args: dict[str, str] | None = None,
        network: str = "none",
    ) -> str: ...
    def ensure_network(self, name: str, *, isolated: bool = False) -> bool: ...
    def connect_container(self, network: str, container: str) -> None: ...
    def run_container(self, spec: ContainerSpec) -> None: ...
    def container_state(self, name: str) -> ContainerState: ...
    def container_logs(self, name: str, tail: int) -> str: ...
    def follow_logs(self, name: str, tail: int) -> LogStream: ...
    def published_address(self, name: str, port: int = JOB_PORT) -> str: ...
    def container_ip(self, name: str, network: str) -> str: ...
    def remove_container(self, name: str) -> bool: ...
    def stop_container(self, name: str, timeout: float) -> None: ...
    def start_container(self, name: str) -> None: ...
    def pause_container(self, name: str) -> None: ...
    def set_cpu_shares(self, name: str, shares: int) -> None: ...
    def unpause_container(self, name: str) -> None: ...
    def rename_container(self, name: str, new_name: str) -> None: ...
    def list_containers(self, labels: dict[str, str]) -> list[str]: ...
    def image_exists(self, ref: str) -> bool: ...
    def remove_image(self, ref: str) -> None: ...
    def list_images(self, labels: dict[str, str]) -> list[str]: ...
    def pull_image(self, ref: str, credentials: dict[str, str] | None = None) -> None: ...
    def inspect_image(self, ref: str) -> ImageInfo | None: ...

    def push_image(self, ref: str, on_log: Callable[[str], None]) -> None: ...
    def import_rootfs(self, rootfs_tar: Path, ref: str, changes: list[str]) -> None: ...
    def own_networks(self) -> set[str]: ...
    def own_container_name(self) -> str | None: ...
    def network_gateway(self, name: str) -> str: ...


ICC_OPTION = "com.docker.network.bridge.enable_icc"  # "false": containers on the bridge cannot reach each other


def _isolates(network: Any) -> bool:
    return str((network.attrs.get("Options") or {}).get(ICC_OPTION, "true")).lower() == "false"


def docker_tail(lines: int) -> int | str:
    """Docker's `tail` for "the last `lines` lines", where 0 (or less) means all of them, as `rtd logs
    --tail 0` and the API's `tail=0` promise (Docker's own 0 would print nothing)."""
    return lines if lines > 0 else "all"


def _hardening_args(hardening: Hardening) -> dict[str, Any]:
    args: dict[str, Any] = {
        "cap_drop": ["ALL"],
        "cap_add": list(hardening.capabilities) or None,
        "security_opt": ["no-new-privileges:true"],
        "pids_limit": hardening.pids_limit,
        "read_only": hardening.read_only_root,
    }
    if hardening.read_only_root:
        args["tmpfs"] = {"/tmp": f"rw,nosuid,nodev,size={hardening.tmp_size}"}
    return args


def _limit_args(limits: ContainerLimits | None) -> dict[str, Any]:
    if limits is None:
        return {}
    return {
        "mem_limit": limits.memory_bytes,
        "memswap_limit": limits.memory_bytes,  # no swap beyond the limit: memory_max means what it says
        "mem_reservation": limits.memory_reservation_bytes,
        "nano_cpus": limits.nano_cpus,
        "cpu_shares": limits.cpu_shares,
    }


class LogStream(Protocol):
    """A job's output as it comes: iterate it in one thread, `close()` it from any other to end it,
    even while the iterating thread waits for a silent job's next line."""

    def __iter__(self) -> Iterator[bytes]: ...
    def close(self) -> None: ...


class _DockerLogStream:
    def __init__(self, stream: Any) -> None:
        self._stream = stream  # docker's CancellableStream: close() shuts its socket down, waking a blocked read
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._stream
        except Exception:  # a read cut short by close() raises; anything else ends the stream too
            if not self._closed:
                raise
        finally:
            self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._stream.close()


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn Docker SDK and transport failures into racetrackd errors naming what was attempted."""
    try:
        yield
    except docker.errors.NotFound as exc:
        raise NotFoundError(f"{action}: {exc.explanation or exc}") from exc
    except docker.errors.APIError as exc:
        raise RacetrackError(f"{action}: {exc.explanation or exc}") from exc
    except (docker.errors.DockerException, requests.exceptions.ConnectionError) as exc:
        raise DockerUnavailable(
            f"{action}: the Docker engine is not reachable ({exc})",
            hint="start dockerd, or set DOCKER_HOST",
        ) from exc


class DockerRuntime:
    """Runtime backed by the Docker engine named by DOCKER_HOST (default: the local socket).

    `registry_login`: log in to a private registry as the client is made. The SDK then sends the
    credentials (X-Registry-Auth) with each push, pull and swarm service create or update, which is
    how swarm nodes other than this engine's get to pull a private image.
    """

    def __init__(
        self,
        client_factory: Callable[[], docker.DockerClient] | None = None,
        *,
        registry_login: RegistryLogin | None = None,
    ) -> None:
        self._client_factory = client_factory or (lambda: docker.from_env(timeout=300))
        self._made: tuple[int, docker.DockerClient] | None = None
        self._registry_login = registry_login
        self._logged_in = False

    @property
    def _client(self) -> docker.DockerClient:
        """The client of this process: one made before a fork (gunicorn's master builds the HTTP workers'
        services once, then forks them) holds connections that must stay the parent's. Logged in to
        the registry, if any, as it is made."""
        if self._made is None or self._made[0] != os.getpid():
            with _translated("connecting to Docker"):
                client = self._client_factory()
            self._logged_in = try_registry_login(client, self._registry_login)
            self._made = (os.getpid(), client)
        return self._made[1]

    def shared_client(self) -> docker.DockerClient:
        """This runtime's client, logged in to the registry: for the swarm backend, so that its
        service creates and updates carry the same login (a re-login before a push counts for both)."""
        return self._client

    def build_image(
        self,
        context: IO[bytes],
        dockerfile: str,
        tag: str,
        labels: dict[str, str],
        on_log: Callable[[str], None],
        *,
        no_cache: bool = False,
        timeout: float | None = None,
        memory_limit: int | None = None,
        build_args: dict[str, str] | None = None,
        network: str = "none",
    ) -> str:
        """Build from a tar context, passing each log line to `on_log` (which may raise to stop the
        build); returns the image id. `timeout` bounds the wait for each piece of output. RUN steps
        run on `network` (never the host's: its loopback services would be open to them)."""
        image_id = ""
        with _translated(f"building image {tag}"):
            stream = self._client.api.build(
                fileobj=context,
                custom_context=True,
                dockerfile=dockerfile,
                tag=tag,
                labels=labels,
                rm=True,
                forcerm=True,
                decode=True,
                network_mode=network,
                nocache=no_cache,
                buildargs=build_args,
                timeout=int(timeout) if timeout else None,
                container_limits={"memory": memory_limit, "memswap": -1} if memory_limit else None,
            )
            for chunk in stream:
                if "stream" in chunk:
                    on_log(chunk["stream"])
                if "error" in chunk:
                    on_log(chunk["error"] + "\n")
                    raise BuildError(chunk["error"].strip())
                aux = chunk.get("aux")
                if isinstance(aux, dict) and "ID" in aux:
                    image_id = aux["ID"]
        return image_id

    def ensure_network(self, name: str, *, isolated: bool = False) -> bool:
        """Make the bridge network `name` unless it exists; `isolated`: its containers cannot reach
        each other (Docker's inter-container communication off), only the host and beyond.

        Returns whether the network, new or old, isolates its containers. A network made before
        without it is remade when no container is attached; otherwise it is left alone (False).
        """
        with _translated(f"creating network {name}"):
            found = self._network(name)
            if found is not None and isolated and not _isolates(found) and not found.attrs.get("Containers"):
                found.remove()  # nothing on it yet: remake it isolated rather than keep it open
                found = None
            if found is None:
                options = {ICC_OPTION: "false"} if isolated else {}
                try:
                    found = self._client.networks.create(name, driver="bridge", check_duplicate=True, options=options)
                except docker.errors.APIError:
                    found = self._network(name)  # another daemon on this engine made it meanwhile
                    if found is None:
                        raise
                found.reload()
            return _isolates(found)

    def _network(self, name: str) -> Any:
        # networks.list(names=...) matches by prefix too: keep the exact name only
        for network in self._client.networks.list(names=[name]):
            if network.name == name:
                network.reload()  # the listing leaves out options and attached containers
                return network
        return None

    def connect_container(self, network: str, container: str) -> None:
        """Attach `container` to `network` as well (no-op when it already is)."""
        with _translated(f"connecting {container} to network {network}"):
            target = self._client.containers.get(container)
            if network not in (target.attrs.get("NetworkSettings", {}).get("Networks") or {}):
                self._client.networks.get(network).connect(target)

    def run_container(self, spec: ContainerSpec) -> None:
        ports: dict[str, Any] = {f"{spec.port}/tcp": ("127.0.0.1", None)} if spec.publish_port else {}
        with _translated(f"starting container {spec.name}"):
            self._client.containers.run(
                spec.image,
                name=spec.name,
                detach=True,
                environment=spec.env,
                labels=spec.labels,
                network=spec.network,
                ports=ports,
                restart_policy={"Name": "unless-stopped"},
                extra_hosts={"host.docker.internal": "host-gateway"},
                **_limit_args(spec.limits),
                **_hardening_args(spec.hardening),
            )

    def container_state(self, name: str) -> ContainerState:
        with _translated(f"inspecting container {name}"):
            try:
                container = self._client.containers.get(name)
            except docker.errors.NotFound:
                return ContainerState(name=name, status="missing", exit_code=None)
            state = container.attrs.get("State", {})
            return ContainerState(
                name=name,
                status=state.get("Status", "unknown"),
                exit_code=state.get("ExitCode"),
                restart_count=int(container.attrs.get("RestartCount", 0)),
            )

    def container_logs(self, name: str, tail: int) -> str:
        with _translated(f"reading logs of {name}"):
            try:
                raw = self._client.containers.get(name).logs(tail=docker_tail(tail), stdout=True, stderr=True)
            except docker.errors.NotFound:
                return ""
        return raw.decode("utf-8", errors="replace")

    def follow_logs(self, name: str, tail: int) -> LogStream:
        """The last `tail` lines, then new output as it comes, until the container stops or the stream
        is closed (from any thread)."""
        with _translated(f"reading logs of {name}"):
            return _DockerLogStream(
                self._client.containers.get(name).logs(stream=True, follow=True, tail=docker_tail(tail))
            )

    def published_address(self, name: str, port: int = JOB_PORT) -> str:
        """`127.0.0.1:<host port>` where the container's job port is published on the host."""
        with _translated(f"reading the published port of {name}"):
            for _ in range(50):
                container = self._client.containers.get(name)
                bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{port}/tcp")
                if bindings:
                    return f"127.0.0.1:{bindings[0]['HostPort']}"
                time.sleep(0.1)
        raise RacetrackError(f"container {name} has no published port {port}")

    def container_ip(self, name: str, network: str) -> str:
        """The container's address on `network` (assigned once it has started)."""
        with _translated(f"reading the address of {name}"):
            for _ in range(50):
                container = self._client.containers.get(name)
                address = ((container.attrs["NetworkSettings"].get("Networks") or {}).get(network) or {}).get(
                    "IPAddress"
                )
                if address:
                    return str(address)
                time.sleep(0.1)
        raise RacetrackError(f"container {name} has no address on network {network}")

    def remove_container(self, name: str) -> bool:
        """Force-remove a container; False when there was none."""
        with _translated(f"removing container {name}"):
            try:
                self._client.containers.get(name).remove(force=True)
            except docker.errors.NotFound:
                return False
        return True

    def stop_container(self, name: str, timeout: float) -> None:
        """SIGTERM (the image's STOPSIGNAL), then SIGKILL after `timeout` seconds; no-op when absent."""
        with _translated(f"stopping container {name}"):
            try:
                self._client.containers.get(name).stop(timeout=int(timeout))
            except docker.errors.NotFound:
                pass

    def start_container(self, name: str) -> None:
        with _translated(f"starting container {name}"):
            self._client.containers.get(name).start()

    def set_cpu_shares(self, name: str, shares: int) -> None:
        """Change a running container's CPU weight (Docker's cpu-shares; kept across restarts)."""
        with _translated(f"updating container {name}"):
            self._client.containers.get(name).update(cpu_shares=shares)

    def pause_container(self, name: str) -> None:
        """Freeze the container's processes (they keep their memory, use no CPU); see jobs/sleeping.py."""
        with _translated(f"pausing container {name}"):
            self._client.containers.get(name).pause()

    def unpause_container(self, name: str) -> None:
        with _translated(f"unpausing container {name}"):
            self._client.containers.get(name).unpause()

    def rename_container(self, name: str, new_name: str) -> None:
        with _translated(f"renaming container {name} to {new_name}"):
            self._client.containers.get(name).rename(new_name)

    def list_containers(self, labels: dict[str, str]) -> list[str]:
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        with _translated("listing containers"):
            return [c.name for c in self._client.containers.list(all=True, filters=filters)]

    def image_exists(self, ref: str) -> bool:
        with _translated(f"looking up image {ref}"):
            try:
                self._client.images.get(ref)
            except docker.errors.ImageNotFound:
                return False
        return True

    def remove_image(self, ref: str) -> None:
        """Remove a tag; its layers stay while other images (or the build cache) share them."""
        with _translated(f"removing image {ref}"):
            try:
                self._client.images.remove(ref, noprune=False)
            except docker.errors.ImageNotFound:
                pass

    def list_images(self, labels: dict[str, str]) -> list[str]:
        """References of the images carrying all `labels`, newest first."""
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        with _translated("listing images"):
            images = self._list_images(filters)
        images.sort(key=lambda image: image.attrs.get("Created", ""), reverse=True)
        return [image.tags[0] if image.tags else image.id for image in images]

    def _list_images(self, filters: dict[str, Any], attempts: int = 3) -> list[Any]:
        # The SDK lists ids, then inspects each: an image removed in between (an image collection of
        # another deployment) makes the whole listing fail. Gone is gone: list again.
        for attempt in range(attempts):
            try:
                return list(self._client.images.list(filters=filters))
            except docker.errors.ImageNotFound:
                if attempt == attempts - 1:
                    raise
        return []

    def pull_image(self, ref: str, credentials: dict[str, str] | None = None) -> None:
        """Pull `ref`, with registry credentials ({"username", "password"}) used for this pull only
        (handed to the engine per request, never written to a Docker config file)."""
        auth = {"username": credentials["username"], "password": credentials["password"]} if credentials else None
        with _translated(f"pulling image {ref}"):
            if "@" in ref:  # the SDK would take the digest for a tag
                repository, _, digest = ref.partition("@")
                self._client.api.pull(repository, tag=digest, auth_config=auth)
            else:
                self._client.images.pull(ref, auth_config=auth)

    def inspect_image(self, ref: str) -> ImageInfo | None:
        """The engine's image `ref` (a tag, name@digest or id); None when it has no such image."""
        with _translated(f"looking up image {ref}"):
            try:
                image = self._client.images.get(ref)
            except docker.errors.ImageNotFound:
                return None
        return ImageInfo(id=str(image.id), repo_digests=tuple(image.attrs.get("RepoDigests") or ()))

    def push_image(self, ref: str, on_log: Callable[[str], None]) -> None:
        """Push `ref` (`registry/repository:tag`) to its registry, passing progress lines to `on_log`."""
        client = self._client
        if self._registry_login is not None and not self._logged_in:
            registry_login(client, self._registry_login)  # raises, naming the registry, when it fails again
            self._logged_in = True
        repository, tag = _split_ref(ref)
        with _translated(f"pushing image {ref}"):
            for chunk in client.api.push(repository, tag=tag, stream=True, decode=True):
                if "error" in chunk:
                    raise RacetrackError(f"pushing image {ref}: {str(chunk['error']).strip()}")
                if chunk.get("status") and not chunk.get("progressDetail"):
                    layer = f"{chunk['id']}: " if chunk.get("id") else ""
                    on_log(f"{layer}{chunk['status']}\n")

    def own_networks(self) -> set[str]:
        """Networks of the container this process runs in; empty when it runs on the host.

        Docker sets a container's hostname to its id, so the engine can tell us about ourselves.
        Inside a container that the engine does not know (another engine, a CI sandbox), empty too.
        """
        with _translated("inspecting the daemon's own container"):
            try:
                container = self._client.containers.get(socket.gethostname())
            except docker.errors.NotFound:
                return set()
            return set((container.attrs.get("NetworkSettings", {}).get("Networks") or {}).keys())

    def own_container_name(self) -> str | None:
        with _translated("inspecting the daemon's own container"):
            try:
                return str(self._client.containers.get(socket.gethostname()).name)
            except docker.errors.NotFound:
                return None

    def network_gateway(self, name: str) -> str:
        """The host's address on network `name` (the bridge gateway), as containers see it."""
        with _translated(f"inspecting network {name}"):
            network = self._client.networks.get(name)
            for pool in (network.attrs.get("IPAM") or {}).get("Config") or []:
                if pool.get("Gateway"):
                    return str(pool["Gateway"])
        raise RacetrackError(f"network {name} has no gateway address")

    def import_rootfs(self, rootfs_tar: Path, ref: str, changes: list[str]) -> None:
        repository, tag = _split_ref(ref)
        with _translated(f"importing {rootfs_tar} as {ref}"), rootfs_tar.open("rb") as data:
            self._client.api.import_image_from_data(data, repository=repository, tag=tag, changes=changes)


def _split_ref(ref: str) -> tuple[str, str]:
    """`registry:5000/team/name:tag` -> (`registry:5000/team/name`, `tag`); the tag defaults to latest.
    Only a colon in the last path component separates a tag (the first may hold a port)."""
    repository, _, tag = ref.rpartition(":") if ":" in ref.split("/")[-1] else (ref, "", "latest")
    return repository, tag or "latest"
