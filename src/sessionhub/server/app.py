"""The ASGI application: routers, error handling, observation, and the runtime's lifespan."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI

from .. import __version__
from ..core.model import Event
from ..settings import Settings
from . import notifications, problems, realtime, rest, sse, system
from .compat import aesthetic, geckos, grace, jambot, nina
from .fastlane import FastLane, Lane
from .httplane import HttpLane
from .observe import Metrics, ObserveMiddleware
from .runtime import Runtime, build_runtime

#: Routers of the transports; an adapter module adds itself here.
ROUTERS: list[APIRouter] = [
    # Before the session routes: its /api/sessions/active|history are fixed paths.
    grace.router,
    # Then the core API: FastAPI matches routers in order, testing every route of each one
    # before the next, so the busiest paths come first (about a sixth of a PATCH's CPU time
    # went to matching it against the routes listed before it).
    rest.router,
    system.router,
    notifications.router,
    jambot.router,
    nina.router,
    aesthetic.router,
    geckos.router,
    sse.router,
]


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """The sessionhub ASGI app. The runtime starts and stops with the app's lifespan."""
    runtime = runtime or build_runtime(settings or Settings.from_env())
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        if getattr(app.state, "freeze_gc", False):
            # Starting imported and built what lives as long as the process (the store's
            # dialect and pool, the broker, the kinds' code): out of the collector's sight.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            await runtime.close()

    app = FastAPI(
        title="sessionhub",
        version=__version__,
        description="Sessions of any kind, kept through their lifecycle and pushed live.",
        lifespan=lifespan,
        # No OpenTelemetry: asking whether it is configured cost ~3 % of a request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = runtime
    app.state.metrics = metrics
    problems.install(app)
    # Swagger UI and ReDoc from installed assets (not a CDN); Bearer and API-key schemes.
    system.install(app, runtime)
    for router in ROUTERS:
        app.include_router(router)
    # Every realtime route also through the ASGI app (any ASGI server, the test client);
    # under `sessionhub serve` the native engine answers them first.
    realtime.mount(app, runtime.realtime)

    def count_event(event: Event, _change: object) -> None:
        metrics.events.labels(event.type).inc()

    runtime.hub.add_listener(count_event)
    metrics.watch_realtime(runtime.realtime.stats)
    if runtime.nina is not None:
        metrics.watch_table(runtime.nina.metrics, "rig")

    def leaders() -> dict[str, dict[str, Any]]:
        values = {role: int(lead.leading) for role, lead in runtime.leaders.items()}
        text = "1 while this node leads the role (sweeps, consumers, connectors), else 0"
        return {"sessionhub_leader": {"type": "gauge", "help": text, "values": values}}

    metrics.watch_table(leaders, "role")
    # Inside the observation (same metrics and logs), in front of FastAPI's routing; and
    # for `sessionhub serve`'s HTTP protocol, which meets those requests before ASGI does.
    lane = Lane(runtime, app.routes)
    max_body = runtime.settings.max_body_bytes
    app.state.http_lane = HttpLane(lane, metrics, max_body)
    app.add_middleware(FastLane, lane=lane)
    app.add_middleware(ObserveMiddleware, metrics=metrics, max_body=max_body)
    return app
