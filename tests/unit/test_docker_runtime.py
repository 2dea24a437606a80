"""DockerRuntime against a stand-in Docker client: what it makes of the engine's answers and failures."""

from __future__ import annotations

from typing import Any

import docker.errors
import pytest

from racetrackd.docker.runtime import DockerRuntime
from racetrackd.errors import NotFoundError


class _Image:
    def __init__(self, ref: str, created: str) -> None:
        self.tags = [ref]
        self.id = f"sha256:{ref}"
        self.attrs = {"Created": created}


class _Images:
    """images.list that fails like the SDK does when an image vanishes between listing and inspecting."""

    def __init__(self, vanishing: int) -> None:
        self.vanishing = vanishing
        self.calls = 0

    def list(self, filters: dict[str, Any]) -> list[_Image]:
        self.calls += 1
        if self.calls <= self.vanishing:
            raise docker.errors.ImageNotFound("no such image: sha256:gone")
        return [_Image("job:old", "2026-11-30T10:00:00.1Z"), _Image("job:new", "2026-11-30T10:00:00.2Z")]


class _Client:
    def __init__(self, images: _Images) -> None:
        self.images = images


def test_listing_images_while_another_deployment_removes_one_lists_again() -> None:
    images = _Images(vanishing=2)
    runtime = DockerRuntime(lambda: _Client(images))  # type: ignore[arg-type, return-value]

    assert runtime.list_images({"job-name": "adder"}) == ["job:new", "job:old"]
    assert images.calls == 3


def test_an_image_listing_that_keeps_failing_is_a_not_found_error_naming_the_action() -> None:
    runtime = DockerRuntime(lambda: _Client(_Images(vanishing=10)))  # type: ignore[arg-type, return-value]

    with pytest.raises(NotFoundError, match="listing images"):
        runtime.list_images({"job-name": "adder"})


def test_a_process_forked_after_the_client_was_made_makes_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # gunicorn's master builds the HTTP workers' services once and forks them: a worker sharing the
    # master's connection to the engine would interleave its requests with the other worker's.
    made: list[_Images] = []

    def factory() -> _Client:
        made.append(_Images(vanishing=0))
        return _Client(made[-1])

    runtime = DockerRuntime(factory)  # type: ignore[arg-type]
    runtime.list_images({"job-name": "adder"})
    runtime.list_images({"job-name": "adder"})
    assert len(made) == 1  # one client per process, kept

    monkeypatch.setattr("racetrackd.docker.runtime.os.getpid", lambda: -1)  # as in the forked child
    runtime.list_images({"job-name": "adder"})

    assert len(made) == 2 and made[1].calls == 1


class _LoggingContainer:
    def __init__(self) -> None:
        self.tails: list[Any] = []

    def logs(self, **kwargs: Any) -> bytes:
        self.tails.append(kwargs["tail"])
        return b"line\n"


class _Containers:
    def __init__(self, container: _LoggingContainer) -> None:
        self.container = container

    def get(self, name: str) -> _LoggingContainer:
        return self.container


class _LogClient:
    def __init__(self, container: _LoggingContainer) -> None:
        self.containers = _Containers(container)


def test_logs_with_tail_0_are_all_of_them_as_rtd_logs_promises() -> None:
    container = _LoggingContainer()
    runtime = DockerRuntime(lambda: _LogClient(container))  # type: ignore[arg-type, return-value]

    runtime.container_logs("job-adder-v-0-0-1", 0)
    runtime.container_logs("job-adder-v-0-0-1", 20)
    runtime.follow_logs("job-adder-v-0-0-1", 0)

    assert container.tails == ["all", 20, "all"]  # Docker's own tail=0 prints nothing
