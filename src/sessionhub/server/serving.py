"""The uvicorn configuration ``sessionhub serve`` runs with (tests and benchmarks use it too,
so they measure and check what users run)."""

from __future__ import annotations

from typing import Any

import uvicorn

from ..settings import Settings
from .realtime import uvicorn_ws_protocol


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """uvicorn settings for ``app``: sessionhub's own WebSocket engine on
    ``/connection/websocket``, our JSON logging instead of uvicorn's, no uvicorn pings (the
    realtime protocol has its own), and an HTTP keep-alive longer than clients' own."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "ws_ping_interval": None,
        "timeout_keep_alive": max(1, round(settings.http_keep_alive)),
        "lifespan": "on",
        # Open streams (SSE, sockets) must not hold a Ctrl-C up: after this long uvicorn
        # stops waiting for them; clients resume from their last position.
        "timeout_graceful_shutdown": 3,
        # /connection/websocket on sessionhub's fast WebSocket engine; other paths unchanged.
        "ws": uvicorn_ws_protocol(app),
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)
