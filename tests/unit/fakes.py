"""In-memory fakes behind the daemon's own interfaces (so unit tests need no Docker), and test-data builders."""

from __future__ import annotations

import base64
import gzip
import io
import json
import shlex
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import requests

from builders.labels import image_labels
from builders.recipe import template_variables
from jobmanifest import validate_manifest
from racetrackd.docker.runtime import ContainerSpec, ContainerState, ImageInfo
from racetrackd.errors import NotFoundError, RacetrackError
from racetrackd.plugins.jobtypes import discover, resolve
from racetrackd.settings import BUILTIN_PLUGINS_DIR


def dockerfile_labels(dockerfile: str) -> dict[str, str]:
    """The labels of a Dockerfile's one-line LABEL instructions (`key="value" ...`), as the engine reads them."""
    found: dict[str, str] = {}
    for line in dockerfile.splitlines():
        if line.startswith("LABEL "):
            for pair in shlex.split(line[len("LABEL ") :]):
                key, _, value = pair.partition("=")
                found[key] = value
    return found


def as_written(built: str) -> str:
    """A built Dockerfile without the one LABEL line the daemon appends (its labels): what the job type's
    template rendered, or the job's own Dockerfile. Fails when that line is missing."""
    written, _, label_line = built.rstrip("\n").rpartition("\n")
    assert label_line.startswith("LABEL ") and "racetrackd.instance" in label_line, built
    return written + "\n"


class FakeLogStream:
    """runtime.LogStream in memory: the given chunks, then (silent_after) a wait until close()."""

    def __init__(self, chunks: list[bytes], silent_after: bool = False) -> None:
        self.chunks = chunks
        self.silent_after = silent_after
        self.closed = threading.Event()
        self.finished = threading.Event()  # the iterating thread has left the stream

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self.chunks:
                if self.closed.is_set():
                    return
                yield chunk
            if self.silent_after:
                self.closed.wait()
        finally:
            self.finished.set()

    def close(self) -> None:
        self.closed.set()


class FakeRuntime:
    """Implements every method of `racetrackd.docker.runtime.Runtime` in memory and records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.containers: dict[str, ContainerSpec] = {}
        self.stopped: set[str] = set()
        self.paused: set[str] = set()  # frozen: Docker's pause
        self.images: dict[str, dict[str, str]] = {}
        self.networks: set[str] = set()
        self.logs: dict[str, str] = {}
        self.own: set[str] = set()
        self.own_name: str | None = None  # the daemon's own container, when it runs in one
        self.gateways: dict[str, str] = {}
        self.build_args: dict[str, dict[str, str]] = {}  # image tag -> the build args it was built with
        self.contexts: dict[str, tuple[str, bytes]] = {}
        self.build_networks: dict[str, str] = {}  # image tag -> the network its RUN steps ran on
        self.isolated_networks: set[str] = set()  # networks whose containers cannot reach each other
        # True: a followed job goes silent after its tail (the stream waits, as Docker's does, until closed)
        self.silent_follow = False
        self.follow_streams: list[FakeLogStream] = []
        # What pull_image finds in "the registry": None, everything; else only these (others fail, as here)
        self.registry: set[str] | None = None
        self.image_ids: dict[str, str] = {}  # image ref -> id, when a test chooses it
        self.repo_digests: dict[str, tuple[str, ...]] = {}
        self.pushed: list[str] = []  # image references pushed to a registry, in order
        self.push_failure: str | None = None  # set: every push fails with this reason

    def _record(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))

    def calls_to(self, method: str) -> list[tuple[Any, ...]]:
        return [args for name, args in self.calls if name == method]

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
        self._record("build_image", dockerfile, tag, labels, no_cache, timeout)
        self.build_networks[tag] = network
        self.build_args[tag] = dict(build_args or {})
        self.contexts[tag] = (dockerfile, context.read())  # the Dockerfile's name, the context tar
        on_log(f"built {tag}\n")
        # As the engine does: the image carries the Dockerfile's LABELs and then the API's labels.
        self.images[tag] = {**dockerfile_labels(self.dockerfile_of(tag)), **labels}
        return f"sha256:{len(self.images):064x}"

    def dockerfile_of(self, tag: str) -> str:
        """The Dockerfile text the build of `tag` was given (from its context tar)."""
        name, tar_bytes = self.contexts[tag]
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            member = tar.extractfile(name)
            return member.read().decode() if member is not None else ""

    def ensure_network(self, name: str, *, isolated: bool = False) -> bool:
        self._record("ensure_network", name, isolated)
        if name not in self.networks:
            self.networks.add(name)
            self.isolated_networks.update({name} if isolated else set())
        return name in self.isolated_networks

    def connect_container(self, network: str, container: str) -> None:
        self._record("connect_container", network, container)

    def run_container(self, spec: ContainerSpec) -> None:
        self._record("run_container", spec)
        self.containers[spec.name] = spec

    def container_state(self, name: str) -> ContainerState:
        self._record("container_state", name)
        if name not in self.containers:
            return ContainerState(name=name, status="missing", exit_code=None)
        if name in self.stopped:
            return ContainerState(name=name, status="exited", exit_code=0)
        if name in self.paused:
            return ContainerState(name=name, status="paused", exit_code=None)
        return ContainerState(name=name, status="running", exit_code=None)

    def container_logs(self, name: str, tail: int) -> str:
        self._record("container_logs", name, tail)
        return "\n".join(self.logs.get(name, "").splitlines()[-tail:])

    def follow_logs(self, name: str, tail: int) -> FakeLogStream:
        self._record("follow_logs", name, tail)
        stream = FakeLogStream(
            [line.encode() + b"\n" for line in self.logs.get(name, "").splitlines()[-tail:]],
            silent_after=self.silent_follow,
        )
        self.follow_streams.append(stream)
        return stream

    def published_address(self, name: str, port: int = 7000) -> str:
        self._record("published_address", name)
        return f"127.0.0.1:{port + sorted(self.containers).index(name)}"

    def container_ip(self, name: str, network: str) -> str:
        self._record("container_ip", name, network)
        return f"172.18.0.{10 + sorted(self.containers).index(name)}"

    def remove_container(self, name: str) -> bool:
        self._record("remove_container", name)
        return self.containers.pop(name, None) is not None

    def stop_container(self, name: str, timeout: float) -> None:
        self._record("stop_container", name, timeout)
        if name in self.containers:
            self.stopped.add(name)
            self.paused.discard(name)

    def start_container(self, name: str) -> None:
        self._record("start_container", name)
        self.stopped.discard(name)

    def set_cpu_shares(self, name: str, shares: int) -> None:
        self._record("set_cpu_shares", name, shares)

    def pause_container(self, name: str) -> None:
        self._record("pause_container", name)
        if name not in self.containers or name in self.stopped:
            raise RacetrackError(f"pausing container {name}: it is not running")
        self.paused.add(name)

    def unpause_container(self, name: str) -> None:
        self._record("unpause_container", name)
        if name not in self.paused:
            raise RacetrackError(f"unpausing container {name}: it is not paused")
        self.paused.discard(name)

    def rename_container(self, name: str, new_name: str) -> None:
        self._record("rename_container", name, new_name)
        self.containers[new_name] = self.containers.pop(name)

    def list_containers(self, labels: dict[str, str]) -> list[str]:
        self._record("list_containers", labels)
        return [
            name for name, spec in self.containers.items() if all(spec.labels.get(k) == v for k, v in labels.items())
        ]

    def image_exists(self, ref: str) -> bool:
        self._record("image_exists", ref)
        return ref in self.images

    def remove_image(self, ref: str) -> None:
        self._record("remove_image", ref)
        self.images.pop(ref, None)

    def list_images(self, labels: dict[str, str]) -> list[str]:
        """Newest first, as Docker lists them: the most recently built (or pulled) image comes first."""
        self._record("list_images", labels)
        return [
            ref
            for ref, image_labels in reversed(self.images.items())
            if all(image_labels.get(k) == v for k, v in labels.items())
        ]

    def pull_image(self, ref: str, credentials: dict[str, str] | None = None) -> None:
        self._record("pull_image", ref, credentials)
        if self.registry is None or ref in self.registry:
            self.images[ref] = {}
            return
        raise NotFoundError(f"pulling image {ref}: pull access denied for {ref.partition(':')[0]}")

    def inspect_image(self, ref: str) -> ImageInfo | None:
        """An image's id is derived from its reference; `repo_digests` gives the registry digests of some."""
        self._record("inspect_image", ref)
        if ref not in self.images:
            return None
        return ImageInfo(
            id=self.image_ids.get(ref, f"sha256:{hash(ref) & (2**64 - 1):064x}"),
            repo_digests=self.repo_digests.get(ref, ()),
        )

    def push_image(self, ref: str, on_log: Callable[[str], None]) -> None:
        self._record("push_image", ref)
        if self.push_failure is not None:
            raise RacetrackError(f"pushing image {ref}: {self.push_failure}")
        if ref not in self.images:
            raise RacetrackError(f"pushing image {ref}: An image does not exist locally with the tag")
        on_log(f"{ref}: pushed\n")
        self.pushed.append(ref)

    def import_rootfs(self, rootfs_tar: Path, ref: str, changes: list[str]) -> None:
        self._record("import_rootfs", rootfs_tar, ref, changes)
        self.images[ref] = {}

    def own_networks(self) -> set[str]:
        self._record("own_networks")
        return set(self.own)

    def own_container_name(self) -> str | None:
        self._record("own_container_name")
        return self.own_name

    def network_gateway(self, name: str) -> str:
        self._record("network_gateway", name)
        return self.gateways.get(name, "172.18.0.1")


def build_context(files: dict[str, bytes] | None = None) -> str:
    """A job's directory as `rtd submit` uploads it: a base64-encoded tar.gz."""
    files = files or {"entrypoint.py": b"class AdderEntrypoint:\n    def perform(self, a, b):\n        return a + b\n"}
    buffer = io.BytesIO()
    # mtime=0: the same files give the same bytes, also when a second passes between two calls.
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped, tarfile.open(fileobj=zipped, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode()


def write_job(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    return directory


def dockerfile_variables(
    manifest_data: dict[str, Any],
    *,
    job_type_version: str,
    base_image: str,
    build: dict[str, Any],
    runtime_image: str = "",
    build_stage_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The variables `racetrackd.deploy.building.ImageBuilder.build` gives a job type's template, with fixed values."""
    return template_variables(
        manifest=validate_manifest(manifest_data),
        job_type=resolve(job_type_version, discover([BUILTIN_PLUGINS_DIR])),
        base_image=base_image,
        runtime_image=runtime_image,
        build_stage_labels=build_stage_labels,
        final_image_labels=image_labels("main", manifest_data["name"], manifest_data["version"], job_type_version),
        build=build,
        git_version="",
        racetrackd_version="0.1.0",
    )


def sample_manifest(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "adder",
        "owner_email": "owner@example.com",
        "version": "0.0.1",
        "jobtype": "python3:latest",
        "jobtype_extra": {"entrypoint_path": "entrypoint.py"},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


# --- rtd's daemon, for the CLI's unit tests -----------------------------------------------------

REMOTE = "http://127.0.0.1:9"


def _response(status: int, body: Any, url: str) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.url = url
    if isinstance(body, bytes | str):
        response._content = body.encode() if isinstance(body, str) else body
        response.headers["Content-Type"] = "text/plain"
    else:
        response._content = json.dumps(body).encode()
        response.headers["Content-Type"] = "application/json"
    response.encoding = "utf-8"
    return response


class FakeDaemon:
    """Stands in for racetrackd behind requests.Session for rtd's unit tests (whose remote is `REMOTE`):
    canned answers by method and path, every call kept."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str, dict[str, Any], dict[str, str]]] = []
        self._answers: dict[tuple[str, str], list[tuple[int, Any]]] = {}
        fake = self

        def request(session: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
            fake.calls.append((method, url, kwargs, {k: str(v) for k, v in session.headers.items()}))
            path = url.removeprefix(REMOTE)
            answers = fake._answers.get((method, path))
            if not answers:
                raise AssertionError(f"unexpected request {method} {path}")
            status, body = answers.pop(0) if len(answers) > 1 else answers[0]
            return _response(status, body, url)

        monkeypatch.setattr(requests.Session, "request", request)

    def answer(self, method: str, path: str, *answers: tuple[int, Any]) -> None:
        """Answers in order; the last one repeats."""
        self._answers[(method, path)] = list(answers)


def minimal_job_dir(tmp_path: Path, more_yaml: str = "") -> Path:
    """tmp_path/adder: the least a python3 job needs to pass rtd's checks before it is sent (a
    manifest, plus `more_yaml`, and an empty entrypoint), for CLI tests against a FakeDaemon."""
    job_dir = tmp_path / "adder"
    job_dir.mkdir()
    (job_dir / "job.yaml").write_text(
        "name: adder\nversion: 1.0.0\nowner_email: a@example.com\n"
        + more_yaml
        + "jobtype: python3:latest\njobtype_extra: {entrypoint_path: e.py}\n"
    )
    (job_dir / "e.py").write_text("")
    return job_dir
