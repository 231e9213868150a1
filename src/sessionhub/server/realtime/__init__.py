"""The one realtime engine of a node, for every socket and stream.

``node.py`` is the engine: the registry of connections, topic fan-out of pre-encoded frames,
the liveness tick, the per-address limit and the metrics. ``conn.py`` is what every connection
shares (the bounded send queue and the slow-consumer policy). Each wire format is one module
on top: ``centrifugo.py`` (``/connection/websocket``, the Centrifugo client protocol, whose
decisions are made by the sans-I/O ``core/connection.py``), ``kato.py`` (``/ws``),
``frames.py`` (``/stream/{id}``); SSE (``server/sse.py``) is a connection of the same node.
Two engines carry the sockets: ``native.py`` (what ``sessionhub serve`` runs: WebSocket
straight on the transport) and ``asgi.py`` (any ASGI server, the test client).
"""

from __future__ import annotations

from .asgi import mount
from .native import uvicorn_ws_protocol
from .node import RealtimeNode

__all__ = ["RealtimeNode", "mount", "uvicorn_ws_protocol"]
