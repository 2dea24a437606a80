"""The daemon's HTTP entry point (served by gunicorn's asgi worker): one port, two halves.

`/pub/...` goes to the gateway, native on the event loop, so a call costs one hop and
WebSockets pass through. Everything else (control-plane API, probes, metrics) is the Flask app
from `create_app`, run in a thread pool by a2wsgi.
"""

from __future__ import annotations

import logging
from typing import Any

from a2wsgi import WSGIMiddleware

from racetrackd import waking
from racetrackd.api import Services
from racetrackd.app import create_app
from racetrackd.db import Job
from racetrackd.errors import JobNotFound
from racetrackd.gateway import Gateway, Receive, Scope, Send
from racetrackd.routing import RoutingTable
from racetrackd.runtime import Runtime
from racetrackd.settings import Settings
from racetrackd.upstream import UpstreamPool

log = logging.getLogger(__name__)


class Daemon:
    """Routes each ASGI connection to the gateway or the control plane; runs the lifespan."""

    def __init__(self, gateway: Gateway, control_plane: Any, routes: RoutingTable, upstream: UpstreamPool) -> None:
        self.gateway = gateway
        self._control_plane = control_plane
        self._routes = routes
        self._upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif scope["path"].startswith("/pub/") or scope["path"] == "/pub":
            await self.gateway(scope, receive, send)
        elif kind == "http":
            await self._control_plane(scope, receive, send)
        else:  # a WebSocket outside /pub: nothing serves it
            await send({"type": "websocket.close", "code": 1008})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._routes.start()
                self.gateway.authenticator.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._routes.stop()
                self._upstream.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_asgi_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Daemon:
    flask_app = create_app(settings, runtime)
    services: Services = flask_app.extensions["racetrackd"]
    settings = services.settings
    routes = RoutingTable(settings.call_timeout)
    upstream = UpstreamPool()

    def wake(name: str, version: str) -> None:
        job = Job.find(name, version)
        if job is None:
            raise JobNotFound(f"job {name} {version} not found")
        waking.wake(job, services.runtime, services.addressing, settings.job_start_timeout)

    gateway = Gateway(routes=routes, upstream=upstream, authenticator=services.authenticator, wake=wake,
                      async_max_body=int(settings.async_max_body))
    control_plane = WSGIMiddleware(flask_app, workers=settings.http_threads)  # type: ignore[arg-type]
    return Daemon(gateway, control_plane, routes, upstream)
