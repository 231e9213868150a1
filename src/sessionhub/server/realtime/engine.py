"""The fast WebSocket engine: an asyncio protocol that uvicorn hands upgraded connections to.

``sessionhub serve`` runs uvicorn with ``ws=uvicorn_ws_protocol(app)``. For the path
``/connection/websocket`` this engine talks WebSocket itself, straight on the transport: a
publication is framed once and written to each subscriber with one ``transport.write`` per
event-loop turn, no task, no ASGI message and no await per send. Every other WebSocket path
(the seed adapters' endpoints) is handed, untouched, to uvicorn's own implementation and
reaches the ASGI app as usual. Under another ASGI server the same protocol is served by the
ASGI route in ``asgi.py``; both feed :class:`~.connection.Connection`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from ...core import codes
from . import wsframe
from .connection import Connection, Out

log = logging.getLogger("sessionhub.realtime")

PATH = "/connection/websocket"
MAX_HANDSHAKE = 16384


def _default_ws_class() -> type[asyncio.Protocol]:
    from uvicorn.config import WS_PROTOCOLS
    from uvicorn.importer import import_from_string

    name = WS_PROTOCOLS["auto"]
    assert name is not None
    cls = import_from_string(name)
    if cls is None:  # pragma: no cover - neither websockets nor wsproto installed
        raise RuntimeError("uvicorn has no WebSocket implementation available")
    return cast(type[asyncio.Protocol], cls)


class RealtimeWebSocketProtocol(asyncio.Protocol):
    """uvicorn's ``ws_protocol_class``: serves ``/connection/websocket`` natively and hands
    any other path to uvicorn's default WebSocket protocol."""

    #: The ASGI app whose ``state.runtime.services["realtime"]`` serves connections.
    app: Any = None

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._config = config
        self._server_state = server_state
        self._app_state = app_state
        self._transport: asyncio.Transport | None = None
        self._head = b""
        self._delegate: asyncio.Protocol | None = None
        self._parser: wsframe.FrameParser | None = None
        self._conn: Connection | None = None
        self._closing = False
        self._abort_handle: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._delegate is not None:
            cast(Any, self._delegate).data_received(data)
            return
        if self._parser is not None:
            self._frames(data)
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HANDSHAKE:
                self._reject("request head too large")
            return
        head, rest = self._head[: end + 4], self._head[end + 4 :]
        self._head = b""
        try:
            request = wsframe.parse_request(head)
        except wsframe.WebSocketError as exc:
            self._reject(exc.reason)
            return
        service = self._service()
        if request.path != PATH or service is None:
            self._hand_over(head + rest)
            return
        try:
            response = wsframe.handshake_response(request)
        except wsframe.WebSocketError as exc:
            self._reject(exc.reason)
            return
        assert self._transport is not None
        self._transport.write(response)
        self._parser = wsframe.FrameParser(max_size=1 << 20)
        self._conn = service.new_connection(self)
        # A lone publication is written straight to the transport (service fan-out); the
        # transport tells us through pause_writing when a reader falls too far behind.
        self._conn.writer = self._transport.write
        self._transport.set_write_buffer_limits(high=service.max_queue_bytes)
        self._server_state.connections.add(self)
        if rest:
            self._frames(rest)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._delegate is not None:
            self._delegate.connection_lost(exc)
            return
        self._server_state.connections.discard(self)
        if self._abort_handle is not None:
            self._abort_handle.cancel()
        if self._conn is not None:
            self._conn.lost()

    def eof_received(self) -> bool | None:
        if self._delegate is not None:
            return self._delegate.eof_received()
        return None

    def pause_writing(self) -> None:
        if self._delegate is not None:
            self._delegate.pause_writing()
        elif self._conn is not None and not self._conn.closed:
            # More than max_queue_bytes unsent: a slow consumer. Disconnect from a fresh
            # loop turn, not from inside the write that noticed (it may be in a fan-out).
            asyncio.get_running_loop().call_soon(self._slow)

    def resume_writing(self) -> None:
        if self._delegate is not None:
            self._delegate.resume_writing()

    # -- uvicorn ------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """uvicorn is stopping: tell the client to come back (3001)."""
        if self._conn is not None and not self._conn.closed:
            self._conn.disconnect(codes.SHUTDOWN)
        elif self._transport is not None:
            self._transport.close()

    # -- Sink ---------------------------------------------------------------------------------

    def write(self, items: list[Out]) -> None:
        if self._closing or self._transport is None:
            return
        if len(items) == 1:
            self._transport.write(items[0].framed)
        else:
            self._transport.write(b"".join([i.framed for i in items]))

    def write_one(self, item: Out) -> None:
        if not self._closing and self._transport is not None:
            self._transport.write(item.framed)

    def buffered(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport is not None else 0

    def close(self, code: int, reason: str) -> None:
        if self._closing or self._transport is None:
            return
        self._closing = True
        transport = self._transport
        transport.write(wsframe.close(code, reason))
        # close() lets the queued bytes drain first; a reader that never drains them is
        # cut off after close_timeout.
        transport.close()
        timeout = self._conn.service.close_timeout if self._conn is not None else 5.0
        self._abort_handle = asyncio.get_running_loop().call_later(timeout, transport.abort)

    def pause_reading(self) -> None:
        if self._transport is not None and not self._closing:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()

    # -- internals ----------------------------------------------------------------------------

    def _slow(self) -> None:
        if self._conn is not None:
            self._conn.drop_if_slow()

    def _service(self) -> Any:
        app = type(self).app
        if app is None:
            return None
        runtime = getattr(app.state, "runtime", None)
        return runtime.services.get("realtime") if runtime is not None else None

    def _hand_over(self, head: bytes) -> None:
        cls = _default_ws_class()
        delegate = cls(  # type: ignore[call-arg]
            config=self._config, server_state=self._server_state, app_state=self._app_state
        )
        self._delegate = delegate
        assert self._transport is not None
        delegate.connection_made(self._transport)
        cast(Any, delegate).data_received(head)

    def _reject(self, reason: str) -> None:
        if self._transport is not None:
            self._transport.write(wsframe.reject_response(400, reason))
            self._transport.close()

    def _frames(self, data: bytes) -> None:
        assert self._parser is not None and self._conn is not None
        if self._closing:
            return
        try:
            messages = self._parser.feed(data)
        except wsframe.WebSocketError as exc:
            self._protocol_close(exc.code, exc.reason)
            return
        conn = self._conn
        for op, payload in messages:
            if op == wsframe.OP_TEXT or op == wsframe.OP_BINARY:
                conn.feed(payload)
            elif op == wsframe.OP_PING:
                assert self._transport is not None
                self._transport.write(wsframe.frame(wsframe.OP_PONG, payload))
            elif op == wsframe.OP_CLOSE:
                code, _ = wsframe.parse_close(payload)
                conn.lost()
                self._protocol_close(code if code not in (1005, 1006) else 1000, "")
                return
            if self._closing:
                return

    def _protocol_close(self, code: int, reason: str) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.lost()
        self.close(code, reason)


def uvicorn_ws_protocol(app: Any) -> type[asyncio.Protocol]:
    """The ``ws`` argument for ``uvicorn.Config`` that serves ``app``'s realtime endpoint
    with this engine: ``uvicorn.Config(app, ws=uvicorn_ws_protocol(app), ...)``."""
    return type("SessionhubWebSocketProtocol", (RealtimeWebSocketProtocol,), {"app": app})
