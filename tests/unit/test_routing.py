"""Where calls go (racetrackd/gateway/routing.py): versions and aliases from memory, reloads, the watcher, the balancer."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator

import pytest

from racetrackd import db
from racetrackd.gateway import routing
from racetrackd.gateway.routing import LeastOutstanding, RoutingTable
from racetrackd.settings import Settings
from tests.unit.gateway_helpers import add_job


@pytest.fixture
def registry(make_settings: Callable[..., Settings]) -> Iterator[Settings]:
    settings = make_settings()
    db.open_database(settings.database_path)
    yield settings
    db.database.close()


@pytest.fixture
def family(registry: Settings) -> None:
    add_job("adder", "0.9.0", db.JobStatus.CRASHED, ["127.0.0.1:7090"])
    add_job("adder", "1.0.0", db.JobStatus.RUNNING, ["127.0.0.1:7100"])
    add_job("adder", "1.2.0", db.JobStatus.RUNNING, ["127.0.0.1:7120", "127.0.0.1:7121"], call_timeout=30)
    add_job("adder", "1.3.0", db.JobStatus.STARTING, ["127.0.0.1:7130"])  # not yet for aliases
    add_job("adder", "2.0.0-rc.1", db.JobStatus.RUNNING, ["127.0.0.1:7200"])  # a pre-release
    add_job("other", "1.5.0", db.JobStatus.RUNNING, ["127.0.0.1:7150"])


@pytest.mark.parametrize(
    ("asked", "resolved"),
    [
        ("1.0.0", "1.0.0"),
        ("1.3.0", "1.3.0"),  # an exact version is found whatever its status
        ("2.0.0-rc.1", "2.0.0-rc.1"),
        ("latest", "1.2.0"),  # highest stable, not starting
        ("1.x", "1.2.0"),
        ("1.0.x", "1.0.0"),
        ("0.x", "0.9.0"),  # crashed jobs still take calls by alias
        ("2.x", None),  # pre-releases are not picked by x-patterns
        ("1.*", "1.2.0"),
        ("2.*", "2.0.0-rc.1"),  # wildcards match pre-releases
        ("3.x", None),
        ("1.1.0", None),
    ],
)
def test_versions_and_aliases_resolve(family: None, asked: str, resolved: str | None) -> None:
    table = RoutingTable(default_call_timeout=600)
    table.reload()

    route = table.resolve("adder", asked)

    assert (route.version if route else None) == resolved
    if route:
        assert route.name == "adder"


def test_a_route_carries_addresses_status_and_timeouts(family: None) -> None:
    table = RoutingTable(default_call_timeout=600)
    table.reload()

    latest = table.resolve("adder", "latest")
    starting = table.resolve("adder", "1.3.0")
    crashed = table.resolve("adder", "0.9.0")

    assert latest is not None and starting is not None and crashed is not None
    assert latest.addresses == ("127.0.0.1:7120", "127.0.0.1:7121")
    assert latest.call_timeout == 30.0  # the job's own
    assert crashed.call_timeout == 600.0  # the daemon's default
    assert starting.starting and not starting.asleep and starting.status == "starting"
    assert not latest.starting and not latest.asleep


def test_a_job_without_ready_replicas_routes_to_its_first_container_or_nowhere(registry: Settings) -> None:
    job = add_job("one", "1.0.0", db.JobStatus.RUNNING)
    job.internal_name = "job-one-v-1-0-0:7000"
    job.save()
    add_job("none", "1.0.0", db.JobStatus.RUNNING)
    table = RoutingTable(600)

    one = table.resolve("one", "1.0.0")
    none = table.resolve("none", "1.0.0")

    assert one is not None and one.addresses == ("job-one-v-1-0-0:7000",)
    assert none is not None and none.addresses == ()


@pytest.mark.parametrize("status", [db.JobStatus.SLEEPING, db.JobStatus.WAKING])
def test_sleeping_and_waking_jobs_are_asleep_and_reachable_by_alias(registry: Settings, status: str) -> None:
    add_job("sleepy", "1.0.0", status)
    table = RoutingTable(600)

    route = table.resolve("sleepy", "latest")

    assert route is not None and route.asleep


def test_a_job_added_after_loading_is_found_at_once(registry: Settings) -> None:
    add_job("adder", "1.0.0")
    table = RoutingTable(600)
    table.reload()
    assert table.resolve("fresh", "1.0.0") is None
    time.sleep(routing.MISS_RELOAD_INTERVAL + 0.01)

    add_job("fresh", "1.0.0", addresses=["127.0.0.1:7300"])
    add_job("adder", "1.1.0")
    fresh = table.resolve("fresh", "1.0.0")
    time.sleep(routing.MISS_RELOAD_INTERVAL + 0.01)
    newer = table.resolve("adder", "1.1.0")  # a known name at a new version is a miss too

    assert fresh is not None and fresh.addresses == ("127.0.0.1:7300",)
    assert newer is not None and newer.version == "1.1.0"


def test_reloads_on_misses_are_rate_limited(registry: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    table = RoutingTable(600)
    table.reload()
    reloads: list[float] = []
    original = table.reload

    def counted() -> None:
        reloads.append(time.monotonic())
        original()

    monkeypatch.setattr(table, "reload", counted)

    monkeypatch.setattr(routing, "MISS_RELOAD_INTERVAL", 10.0)  # no slow machine lets a second one through

    for _ in range(20):
        assert table.resolve("nothing", "1.0.0") is None
    assert len(reloads) == 1  # a flood of calls to unknown jobs does not query the registry per call
    monkeypatch.setattr(routing, "MISS_RELOAD_INTERVAL", 0.0)
    table.resolve("nothing", "1.0.0")

    assert len(reloads) == 2


def test_a_hit_does_not_reload(registry: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    add_job("adder", "1.0.0", addresses=["127.0.0.1:7100"])  # callable: nothing to look at twice
    table = RoutingTable(600)
    table.reload()
    monkeypatch.setattr(table, "reload", lambda: pytest.fail("reloaded on a hit"))

    for _ in range(5):
        assert table.resolve("adder", "latest") is not None


def _wait_for(condition: Callable[[], bool], seconds: float) -> float:
    """Seconds until `condition` held (polling), or fail after `seconds`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            pytest.fail(f"not within {seconds} s")
        time.sleep(0.01)
    return time.monotonic() - started


def test_the_watcher_follows_changes_made_by_another_connection(registry: Settings) -> None:
    add_job("adder", "1.0.0", db.JobStatus.RUNNING, ["127.0.0.1:7100"])
    table = RoutingTable(600, refresh_interval=0.05)
    table.start()
    try:
        other = sqlite3.connect(registry.database_path, timeout=5)  # e.g. the daemon's supervisor process
        with other:
            other.execute("UPDATE job SET status = 'starting' WHERE name = 'adder'")
        waited = _wait_for(lambda: getattr(table.resolve("adder", "1.0.0"), "status", None) == "starting", 1.0)
        with other:  # running again, at a new address
            other.execute("UPDATE job SET status = 'running', replica_addresses = '[\"127.0.0.1:7999\"]'")
        _wait_for(lambda: getattr(table.resolve("adder", "latest"), "addresses", None) == ("127.0.0.1:7999",), 1.0)
        other.close()
    finally:
        table.stop()

    assert waited < 1.0


def test_the_watcher_sees_a_new_version_behind_an_alias_that_already_resolved(registry: Settings) -> None:
    add_job("adder", "1.0.0", addresses=["127.0.0.1:7100"])
    table = RoutingTable(600, refresh_interval=0.05)
    table.start()
    try:
        route = table.resolve("adder", "latest")
        assert route is not None and route.version == "1.0.0"
        add_job("adder", "1.1.0", addresses=["127.0.0.1:7110"])  # a hit for `latest`: no miss reload

        _wait_for(lambda: getattr(table.resolve("adder", "latest"), "version", None) == "1.1.0", 1.0)
    finally:
        table.stop()


def test_a_stopped_watcher_no_longer_reloads(registry: Settings) -> None:
    add_job("adder", "1.0.0", addresses=["127.0.0.1:7100"])
    table = RoutingTable(600, refresh_interval=0.02)
    table.start()
    table.stop()
    time.sleep(0.1)  # the watcher's thread ends at its next tick

    db.Job.update(status=db.JobStatus.CRASHED).execute()
    time.sleep(0.1)

    route = table.resolve("adder", "1.0.0")
    assert route is not None and route.status == db.JobStatus.RUNNING


# --- LeastOutstanding ----------------------------------------------------------------------------


def test_calls_in_flight_spread_over_every_replica_before_doubling_up() -> None:
    balancer = LeastOutstanding()
    replicas = ("a:7000", "b:7000", "c:7000")

    first_three = [balancer.acquire(replicas) for _ in range(3)]
    fourth = balancer.acquire(replicas)

    assert sorted(first_three) == list(replicas)
    assert fourth in replicas


def test_the_replica_that_finishes_first_takes_the_next_call() -> None:
    balancer = LeastOutstanding()
    replicas = ("a:7000", "b:7000", "c:7000")
    held = [balancer.acquire(replicas) for _ in range(6)]  # two calls on each

    balancer.release("b:7000")

    assert balancer.acquire(replicas) == "b:7000"
    assert sorted(held) == ["a:7000", "a:7000", "b:7000", "b:7000", "c:7000", "c:7000"]


def test_releasing_every_call_leaves_no_counts_behind() -> None:
    balancer = LeastOutstanding()
    for round_ in range(50):
        address = balancer.acquire((f"r{round_}:7000", "shared:7000"))
        balancer.release(address)

    assert balancer._outstanding == {}  # addresses of deleted replicas are not kept forever


def test_a_starting_job_that_became_ready_is_seen_at_once(registry: Settings) -> None:
    # rtd submit returns as soon as the deployment is done: the very next call must not get 503.
    add_job("fresh", "1.0.0", db.JobStatus.STARTING, [])
    table = RoutingTable(600)
    table.reload()
    time.sleep(routing.MISS_RELOAD_INTERVAL + 0.01)

    db.Job.update(status=db.JobStatus.RUNNING, replica_addresses=("127.0.0.1:7300",)).execute()
    route = table.resolve("fresh", "1.0.0")

    assert route is not None and route.status == db.JobStatus.RUNNING and route.addresses == ("127.0.0.1:7300",)


@pytest.mark.parametrize("status", [db.JobStatus.CRASHED, db.JobStatus.LOST])
def test_a_crashed_or_lost_job_has_no_address_to_call(registry: Settings, status: str) -> None:
    # Its last address may belong to another container by now.
    add_job("gone", "1.0.0", status, ["172.18.0.9:7000"])
    table = RoutingTable(600)
    table.reload()

    route = table.resolve("gone", "1.0.0")

    assert route is not None and route.addresses == ()


def test_a_crashed_job_that_came_back_is_seen_at_once(registry: Settings) -> None:
    # The supervisor has just started it again: the gateway must not refuse it as crashed.
    add_job("back", "1.0.0", db.JobStatus.CRASHED, ["172.18.0.9:7000"])
    table = RoutingTable(600)
    table.reload()
    time.sleep(routing.MISS_RELOAD_INTERVAL + 0.01)

    db.Job.update(status=db.JobStatus.RUNNING).execute()
    route = table.resolve("back", "1.0.0")

    assert route is not None and route.status == db.JobStatus.RUNNING and route.addresses == ("172.18.0.9:7000",)
