"""Calls per job version and minute (racetrackd.callstats): bucketing, the flush that adds across HTTP
workers, retention, and the series the API serves (GET /lifecycle/api/v1/job/<name>/<version>/stats)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from racetrackd import callstats, db
from racetrackd.callstats import CallTally, Tally
from racetrackd.gateway.lastcall import LastCalls
from tests.unit.conftest import ADMIN_TOKEN
from tests.unit.gateway_helpers import Daemons, Request, ServerConnection, Servers, add_job, reply

AUTH = {"X-Racetrack-Auth": ADMIN_TOKEN}
MINUTE_0 = int(time.time()) // 60 * 60 - 600  # a whole minute, ten minutes ago (within the retention)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[None]:
    database = db.open_database(tmp_path / "registry.db")
    yield
    database.close()


def stored() -> dict[int, dict[str, object]]:
    return {row["minute"]: row for row in db.CallBucket.select().dicts()}


# --- bucketing -----------------------------------------------------------------------------------------


def test_answers_are_counted_as_calls_errors_redirects_and_client_errors_apart() -> None:
    tally = Tally()
    for status in (200, 201, 302, 308, 404, 401, 500, 502, 504):
        tally.add(status, 0.01)

    assert (tally.calls, tally.errors, tally.redirects, tally.client_errors) == (9, 3, 2, 2)


def test_latencies_land_in_fixed_buckets_whose_upper_bound_holds_them() -> None:
    tally = Tally()
    for seconds in (0.0, 0.005, 0.0051, 0.3, 10.0, 42.0):
        tally.add(200, seconds)

    assert tally.histogram == [2, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1]
    assert len(tally.histogram) == len(callstats.LATENCY_BOUNDS) + 1
    assert tally.latency_sum == pytest.approx(52.3101)


def test_p50_and_p95_are_estimated_within_the_bucket_that_holds_them() -> None:
    tally = Tally()
    for _ in range(90):
        tally.add(200, 0.02)  # (0.01, 0.025]
    for _ in range(10):
        tally.add(200, 3.0)  # (2.5, 5]

    assert tally.quantile(0.5) == pytest.approx(0.01 + 0.015 * 50 / 90)
    assert tally.quantile(0.95) == pytest.approx(2.5 + 2.5 * 5 / 10)
    assert Tally().quantile(0.5) is None
    slow = Tally()
    slow.add(200, 60.0)
    assert slow.quantile(0.95) == callstats.LATENCY_BOUNDS[-1]  # "slower than the last bound"


def test_calls_are_tallied_by_the_minute_they_happened_in() -> None:
    clock = Clock(MINUTE_0 + 59.9)
    tally = CallTally(clock)
    tally.record("adder", "1.0.0", 200, 0.01)
    clock.now = MINUTE_0 + 60.0
    tally.record("adder", "1.0.0", 200, 0.01)
    tally.record("adder", "2.0.0", 200, 0.01)

    taken = tally.take()

    assert sorted(taken) == [
        ("adder", "1.0.0", MINUTE_0),
        ("adder", "1.0.0", MINUTE_0 + 60),
        ("adder", "2.0.0", MINUTE_0 + 60),
    ]
    assert tally.take() == {}


# --- the flush: adds, never overwrites ----------------------------------------------------------------


def test_workers_flushing_the_same_minute_add_their_counts(registry: None) -> None:
    clock = Clock(MINUTE_0 + 5)
    first, second = LastCalls(tally=CallTally(clock)), LastCalls(tally=CallTally(clock))
    add_job("adder", "1.0.0")

    first.answered("adder", "1.0.0", 200, 0.02)
    first.answered("adder", "1.0.0", 503, 0.002)
    second.answered("adder", "1.0.0", 200, 0.3)
    first.flush()
    second.flush()
    first.answered("adder", "1.0.0", 404, 0.02)  # the same worker again, in the same minute
    first.flush()

    row = stored()[MINUTE_0]
    assert (row["calls"], row["errors"], row["client_errors"], row["redirects"]) == (4, 1, 1, 0)
    assert row["latency_sum"] == pytest.approx(0.342)
    assert (row["latency_le_0"], row["latency_le_2"], row["latency_le_6"]) == (1, 2, 1)
    assert db.Job.get(db.Job.name == "adder").last_call_time is not None


def test_counts_a_failed_flush_could_not_write_are_written_by_the_next(
    registry: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = LastCalls(tally=CallTally(Clock(MINUTE_0)))
    calls.answered("adder", "1.0.0", 200, 0.02)
    real_write = callstats.write

    def locked(taken: dict[callstats.Key, Tally]) -> None:
        raise db.peewee.OperationalError("database is locked")

    monkeypatch.setattr(callstats, "write", locked)
    with pytest.raises(db.peewee.OperationalError):
        calls.flush()
    calls.answered("adder", "1.0.0", 200, 0.02)
    monkeypatch.setattr(callstats, "write", real_write)
    calls.flush()

    assert stored()[MINUTE_0]["calls"] == 2  # neither lost nor counted twice


def test_minutes_past_the_retention_are_purged_by_a_flush(registry: None) -> None:
    now = time.time()
    old = LastCalls(tally=CallTally(Clock(now - 3 * 3600)))
    old.answered("adder", "1.0.0", 200, 0.01)
    old.answered("adder", "1.0.0", 200, 0.01)
    old._next_purge = float("inf")  # this worker purged a moment ago
    old.flush()
    recent = LastCalls(stats_retention=2 * 3600, tally=CallTally(Clock(now - 60)))
    recent.answered("adder", "1.0.0", 200, 0.01)

    before = list(stored())
    recent.flush()

    assert before == [int(now - 3 * 3600) // 60 * 60]
    assert list(stored()) == [int(now - 60) // 60 * 60]


# --- the series ------------------------------------------------------------------------------------------


def test_a_series_has_every_step_and_sums_the_minutes_in_each(registry: None) -> None:
    tally = CallTally(Clock(MINUTE_0))
    tally.record("adder", "1.0.0", 200, 0.02)
    callstats.write(tally.take())
    later = CallTally(Clock(MINUTE_0 + 120))
    later.record("adder", "1.0.0", 500, 0.2)
    later.record("other", "1.0.0", 500, 0.2)  # another job's calls stay out
    callstats.write(later.take())

    series = callstats.series("adder", "1.0.0", MINUTE_0 - 300, MINUTE_0 + 600, 300).to_dict()

    start = (MINUTE_0 - 300) // 300 * 300
    assert series["since"] == start and series["step"] == 300
    assert [p["time"] for p in series["points"]] == list(range(start, MINUTE_0 + 601, 300))  # until is in
    counts = {p["time"]: (p["calls"], p["errors"]) for p in series["points"] if p["calls"]}
    assert sum(c for c, _ in counts.values()) == 2 and sum(e for _, e in counts.values()) == 1
    assert series["totals"]["calls"] == 2 and series["totals"]["errors"] == 1
    assert all(p["latency_p50"] is None for p in series["points"] if not p["calls"])


def test_the_minute_under_way_at_until_is_in_the_series(registry: None) -> None:
    tally = CallTally(Clock(MINUTE_0 + 0.4))
    tally.record("adder", "1.0.0", 200, 0.02)
    callstats.write(tally.take())

    series = callstats.series("adder", "1.0.0", MINUTE_0 - 600, MINUTE_0 + 0.5, 60)

    assert series.points[-1].time == MINUTE_0 and series.points[-1].tally.calls == 1
    assert len(series.points) == 11


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("step=90", "step: must be a whole number of minutes"),
        ("since=-86400&step=30", "step: must be a whole number of minutes"),
        ("since=0&step=60", "at most 2000"),
        ("since=yesterday", "since: must be a number"),
        ("since=2000000000", "since: must be before until"),
    ],
)
def test_a_bad_series_request_is_an_error_naming_the_parameter(daemon: Daemons, query: str, message: str) -> None:
    client = daemon()
    add_job("adder", "1.0.0")

    response = client.get(f"/lifecycle/api/v1/job/adder/1.0.0/stats?{query}", AUTH)

    assert response.status_code == 400
    assert message in response.json["error"]


# --- through the gateway -------------------------------------------------------------------------------


def answer_with_status(connection: ServerConnection, request: Request) -> None:
    """A job that answers /.../status/<code> with that code."""
    status = int(request.target.rsplit("/", 1)[-1])
    connection.send(reply(status, b"", [("Location", "/elsewhere")] if 300 <= status < 400 else []))


def test_calls_through_the_gateway_show_in_the_series_once_flushed(daemon: Daemons, servers: Servers) -> None:
    client = daemon()
    add_job("adder", "1.0.0", addresses=[servers(answer_with_status).address])
    with socket.create_server(("127.0.0.1", 0)) as closed:
        gone = f"127.0.0.1:{closed.getsockname()[1]}"
    add_job("adder", "0.9.0", addresses=[gone])  # nothing listens: the gateway answers 502
    add_job("adder", "0.8.0", status=db.JobStatus.CRASHED, addresses=[gone])  # refused at once: 502
    for status in (200, 200, 200, 302, 404, 503):
        assert client.get(f"/pub/job/adder/1.0.0/status/{status}", AUTH).status_code == status
    assert client.get("/pub/job/adder/0.9.0/status/200", AUTH).status_code == 502
    assert client.get("/pub/job/adder/0.8.0/status/200", AUTH).status_code == 502

    unflushed = client.get("/lifecycle/api/v1/job/adder/1.0.0/stats", AUTH).json["totals"]["calls"]
    client.app.gateway.last_calls.flush()
    series = client.get("/lifecycle/api/v1/job/adder/latest/stats?since=-600", AUTH).json
    failed = client.get("/lifecycle/api/v1/job/adder/0.9.0/stats", AUTH).json["totals"]
    crashed = client.get("/lifecycle/api/v1/job/adder/0.8.0/stats", AUTH).json["totals"]

    assert unflushed == 0  # no registry write per call
    assert series["job_version"] == "1.0.0" and series["step"] == 60 and len(series["points"]) in (10, 11)
    assert series["totals"]["calls"] == 6
    assert (series["totals"]["errors"], series["totals"]["redirects"], series["totals"]["client_errors"]) == (1, 1, 1)
    assert sum(p["calls"] for p in series["points"][-2:]) == 6  # in the last minute (or two, at a turn)
    assert series["totals"]["latency_p50"] is not None and series["totals"]["latency_p95"] is not None
    assert (failed["calls"], failed["errors"]) == (1, 1)  # a gateway failure is an error too
    assert (crashed["calls"], crashed["errors"]) == (1, 1)  # and so is a call refused for a crashed job


def test_a_registry_of_the_version_before_gets_the_call_bucket_table(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    database = db.open_database(path)
    database.execute_sql("DROP TABLE call_bucket")
    database.execute_sql("PRAGMA user_version = 12")
    database.close()

    database = db.open_database(path)
    tally = CallTally(Clock(MINUTE_0))
    tally.record("adder", "1.0.0", 200, 0.01)
    callstats.write(tally.take())

    assert database.execute_sql("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION
    assert stored()[MINUTE_0]["calls"] == 1
    assert "callbucket_job_name_job_version_minute" in {index.name for index in database.get_indexes("call_bucket")}
    database.close()
