"""Asking a job how it is: /live, /ready, /metrics over HTTP, with short timeouts; and the checks
that tell a container just started is ready (WrapperStarted, ServerAnswers, and ContractOrServer
choosing between them), for the deployer's crash-poll loop."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from typing import Protocol

import urllib3

from racetrackd.serving import CONTRACT, SERVER, Serving

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


def speaks_contract(address: str) -> bool | None:
    """Whether the server at `address` speaks Racetrack's wrapper contract; None while it answers no HTTP.

    It does when its /live answers a JSON object carrying `deployment_timestamp` (whatever the
    status: the wrapper answers 500 with it while still starting), or when /live or /ready answer
    500 with the wrapper's error shape (a JSON object naming `error`, or `{"ready": false}`). A 404
    on /live, a 501 for GET or an answer that is not JSON means a server of another kind.
    """
    live, body = probe(address, "/live")
    if live is None:
        return None
    if isinstance(body, dict) and ("deployment_timestamp" in body or (live == 500 and "error" in body)):
        return True
    ready, body = probe(address, "/ready")
    return ready == 500 and isinstance(body, dict) and ("error" in body or body.get("ready") is False)


def check_ready(address: str, serving: Serving) -> str | None:
    """None when the job at `address` can take calls, else what failed.

    A wrapper-contract job answers /live and /ready itself (a `dockerfile` job whose contract was
    not decided yet is asked whether it speaks it). Any other job (docker-proxy, a `dockerfile`
    job whose server knows nothing of the contract) is ready once its server speaks HTTP: any
    answer to GET / (a 404, a redirect, or a 501 from a server that handles only POST still proves
    a server is listening), unless its manifest names a probe path: that path must then answer
    below 500.
    """
    if serving.contract or (serving.detecting and speaks_contract(address)):
        live, _ = probe(address, "/live")
        ready, _ = probe(address, "/ready") if live == 200 else (None, None)
        if live == 200 and ready == 200:
            return None
        return f"probes failing: /live {live or 'unreachable'}, /ready {ready or 'not checked'}"
    path = serving.probe_path or "/"
    status, _ = probe(address, path)
    if status is not None and (serving.probe_path is None or status < 500):
        return None
    return f"probe failing: {path} on port {serving.port} {status or 'unreachable'} (ready: {serving.readiness})"


# A starting container is probed finely: a job's server comes up within a second or so, and every
# tick between its first answer and our noticing it is time the caller (a redeploy, a woken call)
# waits for nothing. A refused connection costs microseconds. Docker is asked whether the container
# is still alive less often (an inspect is a round trip through the engine).
PROBE_STEP = 0.02  # seconds between probes of a starting server: it is noticed ready at once
STATE_STEP = 0.25  # seconds between looks at a starting replica's state (a crash, Swarm's reason)


class StartFailed(Exception):
    """A started container will not become ready (why, in words); the caller adds the log's tail."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StartCheck(Protocol):
    """What the crash-poll loop (the deployer's wait for a starting replica) asks, every PROBE_STEP, of a container it waits for."""

    def passed(self) -> bool:
        """Whether the container is ready; raises StartFailed when it never will be."""
        ...

    def timeout_reason(self, timeout: float) -> str: ...


class WrapperStarted:
    """A job on the wrapper contract: /live answers for this deployment's timestamp, then /ready answers."""

    def __init__(self, address: str, deployment_timestamp: int, on_live: Callable[[], None] | None = None) -> None:
        self.address = address
        self.deployment_timestamp = deployment_timestamp
        self.on_live = on_live  # called once /live passed: the job's entrypoint is initializing
        self.phase = "live"

    def passed(self) -> bool:
        if self.phase == "live":
            status, body = probe(self.address, "/live")
            _fail_on_init_error(status, body)
            if not (status == 200 and isinstance(body, dict) and _same_timestamp(body, self.deployment_timestamp)):
                return False
            self.phase = "ready"
            if self.on_live is not None:
                self.on_live()
        status, _ = probe(self.address, "/ready")
        if status == 500:
            # /live answered before the entrypoint failed to load (it loads after the server starts):
            # the error is on /live now. Without this the deployment waited out the start timeout.
            _fail_on_init_error(*probe(self.address, "/live"))
        return status == 200

    def timeout_reason(self, timeout: float) -> str:
        return f"the job did not become {self.phase} within {timeout:g} s"


def _fail_on_init_error(status: int | None, body: object) -> None:
    """StartFailed when a wrapper's /live answer carries its entrypoint's loading error."""
    if status == 500 and isinstance(body, dict) and body.get("error"):
        raise StartFailed(f"job initialization error: {body['error']}")


class ServerAnswers:
    """A job whose server does not follow the wrapper contract: its probe path answers."""

    def __init__(self, address: str, serving: Serving) -> None:
        self.address = address
        self.serving = serving
        self.failure: str | None = "not checked"

    def passed(self) -> bool:
        self.failure = check_ready(self.address, self.serving)
        return self.failure is None

    def timeout_reason(self, timeout: float) -> str:
        return (
            f"the job's server did not answer within {timeout:g} s ({self.failure}); "
            f"it must listen on 0.0.0.0:{self.serving.port}"
        )


def _same_timestamp(body: dict[str, object], expected: int) -> bool:
    try:
        return int(str(body.get("deployment_timestamp"))) == expected
    except ValueError:
        return False


class ContractOrServer:
    """A job that may or may not speak the wrapper contract (a `dockerfile` job): once its server
    answers HTTP, WrapperStarted when it speaks it (with its fail-fast on an initialization error),
    else ServerAnswers (ready at once, or when its probe path answers below 500)."""

    def __init__(
        self, address: str, serving: Serving, deployment_timestamp: int, on_live: Callable[[], None] | None = None
    ) -> None:
        self.address = address
        self.serving = serving
        self.deployment_timestamp = deployment_timestamp
        self.on_live = on_live
        self.chosen: WrapperStarted | ServerAnswers | None = None
        self.decided = serving

    def passed(self) -> bool:
        if self.chosen is None:
            speaks = speaks_contract(self.address)
            if speaks is None:
                return False  # not listening yet (or not HTTP): the contract cannot be told yet
            self.decided = dataclasses.replace(self.serving, probes=CONTRACT if speaks else SERVER)
            if speaks:
                self.chosen = WrapperStarted(self.address, self.deployment_timestamp, self.on_live)
            else:
                self.chosen = ServerAnswers(self.address, self.decided)
                if self.on_live is not None:
                    self.on_live()  # the server runs: what follows is the job's own start
        return self.chosen.passed()

    def timeout_reason(self, timeout: float) -> str:
        if self.chosen is None:
            return (
                f"the job's server did not answer HTTP within {timeout:g} s; "
                f"it must listen on 0.0.0.0:{self.serving.port}"
            )
        return self.chosen.timeout_reason(timeout)
