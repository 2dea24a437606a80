"""The daemon's HTTP entry point (served by gunicorn's asgi worker): one port, two halves.

`/pub/...` goes to the gateway, native on the event loop, so a call costs one hop and
WebSockets pass through. Everything else (control-plane API, probes, metrics) is the Flask app
from `create_app`, run in a thread pool by a2wsgi.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from a2wsgi import WSGIMiddleware

from racetrackd.app import create_app
from racetrackd.docker.runtime import Runtime
from racetrackd.gateway.app import Gateway, Receive, Scope, Send
from racetrackd.gateway.lastcall import LastCalls
from racetrackd.gateway.routing import RoutingTable
from racetrackd.gateway.upstream import UpstreamPool
from racetrackd.services import build_services
from racetrackd.settings import Settings
from racetrackd.streams import ENVIRON_KEY, ClientGone

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
            await self._serve_control_plane(scope, receive, send)
        else:  # a WebSocket outside /pub: nothing serves it
            await send({"type": "websocket.close", "code": 1008})

    async def _serve_control_plane(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the Flask app (a2wsgi, in a thread) while watching for the client to go.

        a2wsgi alone never notices: a follow stream blocked on a silent job holds its thread for ever,
        and once a send to the gone client fails, its queue fills and the thread blocks for ever. Here a
        watcher task reads `receive` (passing the request body through, one message at a time) and on
        `http.disconnect` fires the request's ClientGone, which streams find in the environ; sends after
        that are dropped, so the thread always gets to finish.
        """
        gone = ClientGone()
        incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1)  # the body is not read ahead

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.fire()
                    with contextlib.suppress(asyncio.QueueFull):
                        incoming.put_nowait(message)
                    return
                await incoming.put(message)

        async def app_receive() -> dict[str, Any]:
            if gone.is_set() and incoming.empty():
                return {"type": "http.disconnect"}
            return await incoming.get()

        async def app_send(message: dict[str, Any]) -> None:
            if gone.is_set():
                return
            try:
                await send(message)
            except OSError:  # the client went mid-response (gunicorn: ClientDisconnected)
                gone.fire()

        watcher = asyncio.ensure_future(watch())
        try:
            await self._control_plane({**scope, ENVIRON_KEY: gone}, app_receive, app_send)
        finally:
            watcher.cancel()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._routes.start()
                self.gateway.authenticator.start()
                self.gateway.last_calls.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._routes.stop()
                self._upstream.close()
                self.gateway.last_calls.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_asgi_app(
    settings: Settings | None = None, runtime: Runtime | None = None, *, wakes_in_main_process: bool = False
) -> Daemon:
    """One HTTP worker's app: the services built once, shared by the gateway and the control plane.
    `wakes_in_main_process` (the daemon's HTTP workers): a call to a sleeping job claims its wake-up
    and the main process carries it out (racetrackd.jobs.waker); else this process does."""
    services = build_services(settings or Settings.from_env(), runtime)
    settings = services.settings
    routes = RoutingTable(settings.call_timeout)
    upstream = UpstreamPool()
    gateway = Gateway(
        routes=routes,
        upstream=upstream,
        authenticator=services.authenticator,
        wake=services.claim_wake_named if wakes_in_main_process else services.wake_named,
        async_max_body=int(settings.async_max_body),
        maintenance_blocks_calls=settings.maintenance_blocks_calls,
        last_calls=LastCalls(stats_retention=settings.call_stats_retention),
    )
    flask_app = create_app(services=services)
    control_plane = WSGIMiddleware(flask_app, workers=settings.http_threads)  # type: ignore[arg-type]
    return Daemon(gateway, control_plane, routes, upstream)
