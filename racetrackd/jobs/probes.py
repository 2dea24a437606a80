"""Asking a job how it is: /live, /ready, /metrics over HTTP, with short timeouts."""

from __future__ import annotations

import json
import re

import urllib3

from racetrackd.serving import Serving

_pool = urllib3.PoolManager(num_pools=8, retries=False)
TIMEOUT = urllib3.Timeout(3.0)
_LAST_CALL = re.compile(rb"^last_call_timestamp\s+([0-9.eE+-]+)\s*$", re.MULTILINE)


def probe(address: str, path: str) -> tuple[int | None, object]:
    """(status, JSON body) of GET http://address/path; (None, None) when unreachable."""
    try:
        response = _pool.request("GET", f"http://{address}{path}", timeout=TIMEOUT)
    except urllib3.exceptions.HTTPError:
        return None, None
    try:
        return response.status, json.loads(response.data or b"null")
    except ValueError:
        return response.status, None


def last_call_timestamp(address: str) -> float | None:
    """The job's `last_call_timestamp` metric (Racetrack's wrapper contract); None when unknown."""
    try:
        response = _pool.request("GET", f"http://{address}/metrics", timeout=TIMEOUT)
    except urllib3.exceptions.HTTPError:
        return None
    match = _LAST_CALL.search(response.data or b"")
    return float(match.group(1)) if match and response.status == 200 else None


def check_ready(address: str, serving: Serving) -> str | None:
    """None when the job at `address` can take calls, else what failed.

    A wrapper-contract job answers /live and /ready itself. Any other job (docker-proxy) is ready
    once its server answers `serving.probe_path` with anything below 500: a 404 or a redirect
    still proves a server is listening and handling requests.
    """
    if serving.wrapper:
        live, _ = probe(address, "/live")
        ready, _ = probe(address, "/ready") if live == 200 else (None, None)
        if live == 200 and ready == 200:
            return None
        return f"probes failing: /live {live or 'unreachable'}, /ready {ready or 'not checked'}"
    status, _ = probe(address, serving.probe_path)
    if status is not None and status < 500:
        return None
    return f"probe failing: {serving.probe_path} on port {serving.port} {status or 'unreachable'}"
