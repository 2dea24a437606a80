"""Calls that keep coming while something changes under them (a forced redeploy, a new tag): the
zero-downtime promises are judged by what these callers saw."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import requests

Result = TypeVar("Result")


@contextlib.contextmanager
def steady_calls(
    call: Callable[[requests.Session], Result], *, callers: int = 4, seconds: float = 120, most: int = 5000
) -> Iterator[list[Result]]:
    """`callers` threads, each calling `call` every 10 ms on its own keep-alive session until the block
    ends, `seconds` pass or `most` results are in (bounded, whatever happens); yields the results
    list as it fills. `call` turns each outcome, failures included, into a result."""
    results: list[Result] = []
    stop = threading.Event()

    def call_in_a_loop() -> None:
        with requests.Session() as session:
            deadline = time.monotonic() + seconds
            while not stop.is_set() and time.monotonic() < deadline and len(results) < most:
                results.append(call(session))
                time.sleep(0.01)

    threads = [threading.Thread(target=call_in_a_loop, daemon=True) for _ in range(callers)]
    for thread in threads:
        thread.start()
    try:
        yield results
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)


def adder_status(url: str, token: str) -> Callable[[requests.Session], int]:
    """A call of an adder job (40 + 2): its HTTP status, -1 for a wrong answer, 0 when it failed outright."""

    def call(session: requests.Session) -> int:
        try:
            response = session.post(url, json={"a": 40, "b": 2}, headers={"X-Racetrack-Auth": token}, timeout=10)
            return response.status_code if response.json() == 42 else -1
        except (requests.RequestException, ValueError):
            return 0

    return call
