"""Gunicorn server hooks for the daemon's HTTP workers (loaded with `-c python:racetrackd.gunicorn_hooks`)."""

from __future__ import annotations

from typing import Any

from racetrackd import metrics


def child_exit(server: Any, worker: Any) -> None:
    """A worker ended: its live gauges (calls in flight) must stop counting."""
    metrics.mark_process_dead(worker.pid)
