"""The gateway's replica choice: fewest calls in flight, round robin among equals."""

from __future__ import annotations

from racetrackd.gateway.routing import LeastOutstanding


def test_idle_replicas_take_turns() -> None:
    balancer = LeastOutstanding()
    picks = []
    for _ in range(6):
        address = balancer.acquire(["a:7000", "b:7000", "c:7000"])
        picks.append(address)
        balancer.release(address)

    assert sorted(picks) == ["a:7000", "a:7000", "b:7000", "b:7000", "c:7000", "c:7000"]


def test_a_replica_with_a_call_in_flight_is_passed_over() -> None:
    balancer = LeastOutstanding()
    busy = balancer.acquire(["a:7000", "b:7000"])  # a long call stays in flight

    next_three = []
    for _ in range(3):
        address = balancer.acquire(["a:7000", "b:7000"])
        next_three.append(address)
        balancer.release(address)

    assert busy not in next_three
    balancer.release(busy)
    assert {balancer.acquire(["a:7000", "b:7000"]) for _ in range(2)} == {"a:7000", "b:7000"}


def test_a_single_address_is_always_chosen() -> None:
    balancer = LeastOutstanding()

    assert {balancer.acquire(["only:7000"]) for _ in range(3)} == {"only:7000"}
