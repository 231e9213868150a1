"""The realtime wires over an ASGI WebSocket: the portable engine.

Used when the server is not uvicorn with :func:`~.native.uvicorn_ws_protocol` (another ASGI
server, a test client). The same :class:`~.conn.Conn` subclasses, so the same protocols;
slower, because each frame is an ASGI message. Queued messages leave as one frame per write
(text frames of one connection are joined with newlines, as the Centrifugo protocol allows).
ASGI carries no ping frames (and no pongs): liveness here is the wire's own (Centrifugo's
pings) or the ASGI server's WebSocket pings (``uvicorn --ws-ping-interval``; ``serving.py``
turns uvicorn's on whenever the native engine is not the one serving). A wire that relies
on protocol pings is therefore never closed as silent by this engine: a client that only
listens sends nothing an ASGI app could hear.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, WebSocket
from starlette.websockets import WebSocketDisconnect

from .conn import Conn
from .node import RealtimeNode, Route
from .socket import Handshake, Out


class AsgiSink:
    """``Sink`` over an ASGI WebSocket: a writer task drains a byte-counted queue."""

    def __init__(self, websocket: WebSocket, *, close_timeout: float = 5.0) -> None:
        self.websocket = websocket
        self._pending: list[Out] = []
        self._bytes = 0
        self._wake = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self._reading = asyncio.Event()
        self._reading.set()
        self._task: asyncio.Task[None] | None = None
        self.close_timeout = close_timeout
        #: Called when the queue drained (the frame relay's newest-frame slot).
        self.on_drain: Callable[[], None] | None = None
        #: Called at each liveness tick instead of a ping (see the module's docstring).
        self.on_ping: Callable[[], None] | None = None
        #: Text messages of one batch may leave newline-joined in one frame (Conn.joinable).
        self.join = True

    def write(self, items: list[Out]) -> None:
        if self._close is not None:
            return
        for item in items:
            self._pending.append(item)
            self._bytes += len(item.payload)
        self._wake.set()

    def write_one(self, item: Out) -> None:
        self.write([item])

    def buffered(self) -> int:
        return self._bytes

    def ping(self) -> None:
        # ASGI offers no ping frames, nor a way to hear a pong: the ASGI server's own pings
        # keep this connection honest, so the tick must not take silence for death.
        if self.on_ping is not None:
            self.on_ping()

    def close(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
            self._wake.set()
            task = self._task
            if task is not None:
                # A reader that does not read keeps send() waiting: cut it off.
                asyncio.get_running_loop().call_later(self.close_timeout, task.cancel)

    def pause_reading(self) -> None:
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    async def run(self) -> None:
        self._task = asyncio.current_task()
        ws = self.websocket
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                texts = [i.payload for i in batch if not i.binary]
                if self.join and len(texts) == len(batch):
                    await ws.send_text(b"\n".join(texts).decode())
                else:
                    for item in batch:
                        if item.binary:
                            await ws.send_bytes(item.payload)
                        else:
                            await ws.send_text(item.payload.decode())
                self._bytes -= sum(len(i.payload) for i in batch)
            if self.on_drain is not None and self._close is None:
                self.on_drain()
            if self._close is not None and not self._pending:
                with contextlib.suppress(Exception):
                    await ws.close(self._close[0], self._close[1])
                return


def endpoint(route: Route) -> Callable[[WebSocket], Awaitable[None]]:
    """The ASGI WebSocket handler serving ``route``'s wire."""

    async def serve(websocket: WebSocket) -> None:
        node: RealtimeNode = websocket.app.state.runtime.realtime
        peer = websocket.client.host if websocket.client else ""
        if not node.admit(peer):
            await websocket.close(code=1013, reason="too many connections from this address")
            return
        await websocket.accept()
        params = {k: str(v) for k, v in websocket.path_params.items()}
        hs = Handshake(
            websocket.url.path,
            dict(websocket.query_params),
            {k.lower(): v for k, v in websocket.headers.items()},
            peer,
            params,
        )
        sink = AsgiSink(websocket, close_timeout=node.close_timeout)
        conn = route.factory(node, sink, hs)
        sink.join = conn.joinable
        if not conn.drop_slow:
            sink.on_drain = conn.writable
        sink.on_ping = lambda: setattr(conn, "heard", True)
        node.register(conn)
        loop = asyncio.get_running_loop()
        writer = loop.create_task(sink.run())
        reader = loop.create_task(_read(websocket, sink, conn))
        try:
            conn.opened()
            # The writer ends after a close frame; the reader when the peer goes away.
            # Either way the connection is over.
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            conn.lost()
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)

    return serve


async def _read(websocket: WebSocket, sink: AsgiSink, conn: Conn) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            conn.heard = True
            text = message.get("text")
            data = text.encode() if text is not None else (message.get("bytes") or b"")
            if len(data) > conn.max_message:
                conn.disconnect(1009, "message too big")
                return
            conn.received(data, text is None)
            await sink._reading.wait()


def mount(app: FastAPI, node: RealtimeNode) -> None:
    """Serve every route of ``node`` through the ASGI app too."""
    for route in node.routes:
        app.add_api_websocket_route(route.pattern, endpoint(route), name=f"ws_{route.wire}")
