"""Long-lived control-plane responses (`logs?follow=true`, `build-logs?follow=true`): they end when the
client goes, and there are only so many at once.

A follow stream holds one of the HTTP worker's control-plane threads for as long as it lasts. The
ASGI layer (racetrackd.asgi) tells a stream its client has gone through `ClientGone`, found in the
WSGI environ; the stream then stops, also when it is blocked waiting for a silent job's next line
(its `on_disconnect` callback closes the Docker log stream). `StreamLimiter` caps the streams of one
caller and of one HTTP worker, so the others keep answering.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from racetrackd.errors import TooManyStreams

log = logging.getLogger(__name__)

ENVIRON_KEY = "racetrackd.client_gone"


class ClientGone:
    """Set once the HTTP client of a request has disconnected; callbacks run then (from the event loop)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._callbacks: list[Callable[[], object]] = []
        self._lock = threading.Lock()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds, waking early (True) when the client goes."""
        return self._event.wait(timeout)

    def on_disconnect(self, callback: Callable[[], object]) -> None:
        """Run `callback` when the client goes (now, if it has already)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        _run(callback)

    def fire(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _run(callback)


def _run(callback: Callable[[], object]) -> None:
    try:
        callback()
    except Exception as exc:  # noqa: BLE001 (closing a stream that already broke must not break the caller)
        log.debug("closing a stream after its client went: %s", exc)


def client_gone(environ: dict[str, Any]) -> ClientGone:
    """The request's disconnect signal (a fresh, never-set one when no ASGI server put one there)."""
    scope = environ.get("asgi.scope") or {}
    gone = scope.get(ENVIRON_KEY)
    return gone if isinstance(gone, ClientGone) else ClientGone()


class StreamLimiter:
    """Counts open follow streams, per caller and in all, within one HTTP worker process."""

    def __init__(self, per_caller: int, total: int) -> None:
        self.per_caller = per_caller
        self.total = total
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, caller: str) -> Callable[[], None]:
        """Count one more stream of `caller`, or TooManyStreams naming the limit; returns its release
        (safe to call more than once)."""
        with self._lock:
            if self._open.get(caller, 0) >= self.per_caller:
                raise TooManyStreams(
                    f"{self.per_caller} follow streams of this caller are open already "
                    f"(RACETRACK_FOLLOW_STREAMS_PER_CALLER)",
                    hint="close one (stop rtd logs -f) and try again",
                )
            if sum(self._open.values()) >= self.total:
                raise TooManyStreams(
                    f"{self.total} follow streams are open already (RACETRACK_MAX_FOLLOW_STREAMS)",
                    hint="try again later, or read the logs without follow",
                )
            self._open[caller] = self._open.get(caller, 0) + 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if released.is_set():
                    return
                released.set()
                self._open[caller] -= 1
                if not self._open[caller]:
                    del self._open[caller]

        return release

    def open_streams(self) -> int:
        with self._lock:
            return sum(self._open.values())
