"""Gunicorn server hooks for the daemon's HTTP workers (loaded with `-c python:racetrackd.gunicorn_hooks`)."""

from __future__ import annotations

import gc
from typing import Any

from racetrackd import metrics
from racetrackd.db import database


def child_exit(server: Any, worker: Any) -> None:
    """A worker ended: its live gauges (calls in flight) must stop counting."""
    metrics.mark_process_dead(worker.pid)


def pre_fork(server: Any, worker: Any) -> None:
    """Before each worker is forked from the master, which built the app once (--preload): the registry
    connection is closed, as SQLite's state must never cross a fork (each worker reconnects on its first
    query); the Docker client is made again by each worker (DockerRuntime checks the pid). What the
    master built is frozen, as the daemon froze what it had loaded: the workers' collector then never
    writes to those objects, so their pages stay shared."""
    database.close()
    gc.freeze()
