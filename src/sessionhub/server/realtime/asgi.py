"""The realtime protocol over an ASGI WebSocket: the portable engine.

Used when the server is not uvicorn with :func:`~.engine.uvicorn_ws_protocol` (another ASGI
server, a test client). Same :class:`~.connection.Connection`, so the same protocol; slower,
because each frame is an ASGI message. Queued messages leave as one text frame per write.
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from .connection import Connection, Out

router = APIRouter()


class AsgiSink:
    """``Sink`` over an ASGI WebSocket: a writer task drains a byte-counted queue."""

    def __init__(self, websocket: WebSocket, *, close_timeout: float = 5.0) -> None:
        self.websocket = websocket
        self._pending: list[bytes] = []
        self._bytes = 0
        self._wake = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self._reading = asyncio.Event()
        self._reading.set()
        self._task: asyncio.Task[None] | None = None
        self.close_timeout = close_timeout

    def write(self, items: list[Out]) -> None:
        if self._close is not None:
            return
        for item in items:
            self._pending.append(item.payload)
            self._bytes += len(item.payload)
        self._wake.set()

    def write_one(self, item: Out) -> None:
        self.write([item])

    def buffered(self) -> int:
        return self._bytes

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
            if self._pending:
                batch, self._pending, self._bytes = self._pending, [], 0
                await ws.send_text(b"\n".join(batch).decode())
            if self._close is not None and not self._pending:
                with contextlib.suppress(Exception):
                    await ws.close(self._close[0], self._close[1])
                return


@router.websocket("/connection/websocket")
async def realtime_websocket(websocket: WebSocket) -> None:
    """Centrifugo-compatible realtime connection (JSON protocol)."""
    service = websocket.app.state.runtime.services["realtime"]
    await websocket.accept()
    sink = AsgiSink(websocket, close_timeout=service.close_timeout)
    conn = service.new_connection(sink)
    loop = asyncio.get_running_loop()
    writer = loop.create_task(sink.run())
    reader = loop.create_task(_read(websocket, sink, conn))
    try:
        # The writer ends after a close frame; the reader when the peer goes away. Either
        # way the connection is over.
        await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        conn.lost()
        for task in (reader, writer):
            task.cancel()
        await asyncio.gather(reader, writer, return_exceptions=True)


async def _read(websocket: WebSocket, sink: AsgiSink, conn: Connection) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("text")
            conn.feed(data.encode() if data is not None else message.get("bytes") or b"")
            await sink._reading.wait()
