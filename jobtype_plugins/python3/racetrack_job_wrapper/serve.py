"""Run the job's WSGI app under gunicorn (one process, threads) on 0.0.0.0:PORT."""

from __future__ import annotations

import os
from typing import Any

from gunicorn.app.base import BaseApplication

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
    app = JobApp(entrypoint_path, entrypoint_class)
    options = {
        "bind": f"0.0.0.0:{port}",
        # One process: the entrypoint (often a large model) is loaded once; threads serve calls.
        "workers": 1,
        "worker_class": "gthread",
        "threads": int(os.environ.get("JOB_THREADS", "16")),
        "timeout": 0,
        "keepalive": 300,  # longer than the gateway keeps idle pooled connections
        "graceful_timeout": 10,
        "accesslog": None,
        "errorlog": "-",
        "post_worker_init": lambda worker: app.start_loading(),
        "control_socket_disable": True,
    }
    _WrapperServer(app, options).run()
