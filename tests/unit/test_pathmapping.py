"""`pathmapping.read_gateway_path`: one reading of the request target for every gateway route."""

from __future__ import annotations

import pytest

from racetrackd.errors import AmbiguousPath
from racetrackd.gateway import pathmapping
from racetrackd.gateway.pathmapping import ASYNC_NEW, ASYNC_TASK, OTHER, SYNC


def test_a_job_call_names_its_job_and_endpoint() -> None:
    target = pathmapping.read_gateway_path(b"/pub/job/adder/1.x/api/v1/perform")

    assert target.route == SYNC and target.call is not None
    assert (target.call.name, target.call.version, target.call.endpoint) == ("adder", "1.x", "/api/v1/perform")


def test_a_new_async_call_names_its_job_under_the_async_prefix() -> None:
    target = pathmapping.read_gateway_path(b"/pub/async/new/fatman/adder/latest/api/v1/perform")

    assert target.route == ASYNC_NEW and target.call is not None
    assert (target.call.kind, target.call.name, target.call.endpoint) == ("fatman", "adder", "/api/v1/perform")
    assert target.call.public_prefix == "/pub/fatman/adder/latest"


@pytest.mark.parametrize(
    ("raw", "task_id", "action"),
    [
        (b"/pub/async/task/abc/poll", "abc", "poll"),
        (b"/pub/async/task/abc/status", "abc", "status"),
        (b"/pub/async/task/abc/cancel", None, None),
        (b"/pub/async/task/abc", None, None),
    ],
)
def test_an_async_task_path_names_the_task_and_what_is_asked(
    raw: bytes, task_id: str | None, action: str | None
) -> None:
    target = pathmapping.read_gateway_path(raw)

    assert (target.route, target.task_id, target.task_action) == (ASYNC_TASK, task_id, action)


def test_malformed_paths_keep_their_route_without_a_call() -> None:
    assert pathmapping.read_gateway_path(b"/pub/async/new/job/adder").call is None
    assert pathmapping.read_gateway_path(b"/pub/elsewhere/x").route == OTHER
    with pytest.raises(AmbiguousPath):
        pathmapping.read_gateway_path(b"/pub/job/adder/1.0.0/a%2Fb")
