"""Run the job's ASGI app under gunicorn's asyncio worker on 0.0.0.0:PORT.

One process by default: the entrypoint (often a large model) is loaded once, and job code runs
in a thread pool while the event loop keeps answering probes and queueing calls.
"""

from __future__ import annotations

import os
from typing import Any

from gunicorn.app.base import BaseApplication

from racetrack_job_wrapper import logs
from racetrack_job_wrapper.app import JobApp


class _WrapperServer(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
    def __init__(self, app: JobApp, options: dict[str, Any]) -> None:
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> JobApp:
        return self._app


def serve(entrypoint_path: str, entrypoint_class: str | None, port: int) -> None:
    logs.configure()
    app = JobApp(entrypoint_path, entrypoint_class)
    options = {
        "bind": f"0.0.0.0:{port}",
        "workers": int(os.environ.get("JOB_WORKERS", "1") or 1),
        "worker_class": "asgi",
        "timeout": 0,
        # Short: on SIGTERM the server waits for open connections, idle keep-alive ones included,
        # so this bounds how long a replaced job lingers after its last call.
        "keepalive": 75,  # the gateway keeps pooled connections open (and drops them after 30 s idle)
        "graceful_timeout": int(os.environ.get("JOB_GRACEFUL_TIMEOUT", "30") or 30),
        "accesslog": None,  # the app writes its own access lines, with the tracing id
        "errorlog": "-",
        "loglevel": os.environ.get("LOG_LEVEL", "info").lower(),
        "control_socket_disable": True,
    }
    _WrapperServer(app, options).run()
