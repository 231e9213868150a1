"""Realtime transports: the Centrifugo-compatible WebSocket endpoint and its fan-out.

:func:`install` (in ``server.app.INSTALLERS``) attaches a :class:`RealtimeService` to the
runtime as ``runtime.services["realtime"]`` and mounts the ASGI route; ``sessionhub serve``
additionally passes :func:`uvicorn_ws_protocol` to uvicorn so the same endpoint is served by
the fast engine.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from ..runtime import Runtime
from .asgi import router
from .engine import PATH, uvicorn_ws_protocol
from .service import RealtimeService


def install(app: FastAPI, runtime: Runtime) -> None:
    """Create the node's realtime service and mount ``/connection/websocket``."""
    s = runtime.settings
    # Settings.extra wins over the SESSIONHUB_REALTIME_* settings (the benchmark uses it).
    extra: dict[str, Any] = s.extra
    service = RealtimeService(
        runtime.hub,
        runtime.auth,
        ping_interval=runtime.settings.ping_interval,
        max_queue_bytes=int(extra.get("realtime_queue_bytes", s.realtime_queue_bytes)),
        max_subscriptions=int(
            extra.get("realtime_max_subscriptions", s.realtime_max_subscriptions)
        ),
        recover_limit=runtime.settings.history_size,
        publish_topics=tuple(extra.get("realtime_publish_topics", ())),
        close_timeout=float(extra.get("realtime_close_timeout", s.realtime_close_timeout)),
    )
    runtime.services["realtime"] = service
    runtime.on_start.append(service.start)
    runtime.on_close.append(service.close)
    app.include_router(router)


__all__ = ["PATH", "RealtimeService", "install", "uvicorn_ws_protocol"]
