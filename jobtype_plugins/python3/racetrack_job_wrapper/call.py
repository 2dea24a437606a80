"""Call another job through the gateway, as this job: `from racetrack_job_wrapper.call import call_job`.

Uses the gateway URL (`PUB_URL`) and the job's own token (`AUTH_TOKEN`), and passes on the
tracing id of the request being served, so one id follows a call through a chain of jobs.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from racetrack_job_wrapper.context import current_tracing_id

TRACING_HEADER = os.environ.get("REQUEST_TRACING_HEADER", "X-Request-Tracing-Id")


class JobCallError(RuntimeError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def call_job(
    job_name: str,
    path: str = "/api/v1/perform",
    payload: Any = None,
    version: str = "latest",
    method: str = "POST",
    timeout: float = 10.0,
) -> Any:
    """Call `path` of job `job_name` and return its JSON answer; JobCallError on failure."""
    pub_url = os.environ.get("PUB_URL", "").rstrip("/")
    if not pub_url:
        raise JobCallError("PUB_URL is not set: chain calls work inside a job deployed by racetrackd")
    url = f"{pub_url}/job/{job_name}/{version}/{path.lstrip('/')}"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if os.environ.get("AUTH_TOKEN"):
        headers["X-Racetrack-Auth"] = os.environ["AUTH_TOKEN"]
    tracing_id = current_tracing_id()
    if tracing_id:
        headers[TRACING_HEADER] = tracing_id
    data = json.dumps(payload).encode() if payload is not None and method != "GET" else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # URL from the daemon
            body = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise JobCallError(
            f"calling job {job_name} {version} {path} failed with {exc.code}: {detail}", exc.code
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise JobCallError(f"calling job {job_name} {version} {path} failed: {exc}") from exc
    return json.loads(body) if body else None
