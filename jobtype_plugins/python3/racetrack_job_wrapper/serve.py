"""Run the job's app on 0.0.0.0:PORT with the wrapper's own HTTP server (server.py).

One process by default: the entrypoint (often a large model) is loaded once, and job code runs
in a thread pool while the event loop keeps answering probes and queueing calls.
"""

from __future__ import annotations

import os

from racetrack_job_wrapper import logs
from racetrack_job_wrapper.app import MAX_BODY_BYTES, JobApp
from racetrack_job_wrapper.server import WrapperServer


def serve(entrypoint_path: str, entrypoint_class: str | None, port: int) -> None:
    logs.configure()
    app = JobApp(entrypoint_path, entrypoint_class)
    WrapperServer(
        app,
        port,
        workers=int(os.environ.get("JOB_WORKERS", "1") or 1),
        # The gateway keeps pooled connections open (and drops them after 30 s idle).
        keepalive=75,
        # On SIGTERM calls in flight get this long to finish; idle connections are closed at once.
        graceful_timeout=float(os.environ.get("JOB_GRACEFUL_TIMEOUT", "30") or 30),
        max_body_bytes=MAX_BODY_BYTES,
    ).run()
