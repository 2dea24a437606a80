"""The shell job type's wrapper: serves the job's script over HTTP, standard library only.

POST /api/v1/perform runs `sh $JOB_SCRIPT` with the JSON body on stdin and each top-level key as
an environment variable ARG_<KEY>; the script's output (parsed as JSON when it is JSON) is the
answer. /live, /ready, /health and /metrics follow the wrapper contract racetrackd probes. Paths
work at the root and under the gateway prefix /pub/job/<name>/<version>.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = re.compile(r"^/pub/job/[^/]+/[^/]+")
last_call = 0.0


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = PREFIX.sub("", self.path.split("?")[0]) or "/"
        if path == "/live":
            self._json(200, {"live": True, "deployment_timestamp": int(os.environ.get("JOB_DEPLOYMENT_TIMESTAMP", 0))})
        elif path in ("/ready", "/health"):
            self._json(200, {"ready": True, "job_name": os.environ.get("JOB_NAME"),
                             "job_type_version": os.environ.get("JOB_TYPE_VERSION")})
        elif path == "/metrics":
            self._send(200, f"last_call_timestamp {last_call}\n".encode(), "text/plain; version=0.0.4")
        else:
            self._json(404, {"error": f"no endpoint {path}"})

    def do_POST(self) -> None:  # noqa: N802
        global last_call
        path = PREFIX.sub("", self.path.split("?")[0])
        if path != "/api/v1/perform":
            self._json(404, {"error": f"no endpoint {path}"})
            return
        last_call = time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}"
        try:
            kwargs = json.loads(body)
            if not isinstance(kwargs, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            self._json(400, {"error": str(exc)})
            return
        env = {**os.environ, **{f"ARG_{key.upper()}": str(value) for key, value in kwargs.items()}}
        done = subprocess.run(["sh", os.environ["JOB_SCRIPT"]], input=body, env=env, capture_output=True,
                              timeout=300, check=False)
        if done.returncode != 0:
            self._json(500, {"error": done.stderr.decode(errors="replace").strip(), "exit_code": done.returncode})
            return
        output = done.stdout.decode(errors="replace").strip()
        try:
            self._json(200, json.loads(output))
        except ValueError:
            self._json(200, output)

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        print(f"{self.command} {self.path} {args[1] if len(args) > 1 else ''}", flush=True)


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 7000), Handler).serve_forever()  # noqa: S104 (the container's port)
