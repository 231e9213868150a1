"""A room client that sends exactly what Aesthetic Computer's browser client sends.

Modelled on ``system/public/aesthetic.computer/lib/socket.mjs`` and ``disk.mjs`` (repository
whistlegraph/aesthetic-computer): ``send(type, content)`` writes ``{"type", "content"}`` when
the socket is open and **queues** it otherwise; on open the queue goes out first, in order,
one frame per message; then, with a handle, ``location:broadcast {handle, slug}`` and a
keep-alive ``location:broadcast {handle, slug: "*keep-alive*"}`` every 2.5 s, and
``code-channel:sub``. Each received frame is parsed as one JSON document (``JSON.parse``):
a frame holding two messages would fail here as it would in the browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

KEEP_ALIVE = 2.5
WAIT = 5.0
Message = dict[str, Any]


class AcClient:
    """One browser tab's socket to a room."""

    def __init__(
        self,
        url: str,
        *,
        handle: str | None = None,
        slug: str = "field",
        code_channel: str | None = "AbC1",
        keep_alive: float = KEEP_ALIVE,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        self.handle = handle
        self.slug = slug
        self.code_channel = code_channel
        self.keep_alive = keep_alive
        self.ssl_context = ssl_context
        self.ws: ClientConnection | None = None
        self.queue: list[tuple[str, Any]] = []
        self.messages: list[Message] = []
        self.closed: asyncio.Future[tuple[int, str]] | None = None
        self.id: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._arrived = asyncio.Event()

    # -- what socket.mjs does -----------------------------------------------------------

    def send(self, type_: str, content: Any = None) -> None:
        if self.ws is not None and self.closed is not None and not self.closed.done():
            self.spawn(self.ws.send(json.dumps({"type": type_, "content": content})))
        else:
            self.queue.append((type_, content))

    async def connect(self) -> AcClient:
        self.closed = asyncio.get_running_loop().create_future()
        self.ws = await connect(self.url, ssl=self.ssl_context, max_size=None)
        self._tasks.append(asyncio.get_running_loop().create_task(self._read()))
        # A browser's send() on a socket the server closed meanwhile is silently lost.
        with contextlib.suppress(ConnectionClosed):
            # onopen: the held messages, in order, one frame each.
            for type_, content in self.queue:
                await self.ws.send(json.dumps({"type": type_, "content": content}))
            self.queue.clear()
            # connectCallback: location, keep-alives, code channel.
            if self.handle:
                await self._raw({"type": "location:broadcast", "content": self._where(self.slug)})
                self._tasks.append(asyncio.get_running_loop().create_task(self._keep_alive()))
            if self.code_channel:
                await self._raw({"type": "code-channel:sub", "content": self.code_channel})
        return self

    def _where(self, slug: str) -> Message:
        return {"handle": self.handle, "slug": slug}

    async def _raw(self, message: Message) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps(message))

    async def _keep_alive(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(self.keep_alive)
                await self._raw(
                    {"type": "location:broadcast", "content": self._where("*keep-alive*")}
                )

    async def _read(self) -> None:
        assert self.ws is not None and self.closed is not None
        try:
            async for raw in self.ws:
                message = json.loads(raw)  # one message per frame, as JSON.parse needs
                if message.get("type") == "connected":
                    self.id = json.loads(message["content"])["id"]
                self.messages.append(message)
                self._arrived.set()
        except ConnectionClosed:
            pass
        finally:
            rcvd = self.ws.protocol.close_rcvd
            if not self.closed.done():
                self.closed.set_result((rcvd.code, rcvd.reason) if rcvd else (1006, ""))
            self._arrived.set()

    def spawn(self, coro: Any) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    # -- what a test asks -------------------------------------------------------------

    async def expect(
        self, type_: str, where: Callable[[Message], bool] = lambda m: True, wait: float = WAIT
    ) -> Message:
        """The first message of ``type_`` matching ``where`` (waits, boundedly)."""
        deadline = time.monotonic() + wait
        while True:
            for m in self.messages:
                if m.get("type") == type_ and where(m):
                    return m
            left = deadline - time.monotonic()
            if left <= 0 or (self.closed is not None and self.closed.done()):
                raise AssertionError(
                    f"no {type_!r} message; got {[m.get('type') for m in self.messages]}"
                )
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    def of(self, type_: str) -> list[Message]:
        return [m for m in self.messages if m.get("type") == type_]

    async def close_code(self, wait: float = WAIT) -> tuple[int, str]:
        assert self.closed is not None
        return await asyncio.wait_for(asyncio.shield(self.closed), wait)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()


async def barrier(*clients: AcClient, tag: str = "barrier") -> None:
    """Wait until every client has seen a message sent after everything before it.

    Each client relays an unknown type (to everyone in its room, itself included); once
    a client has its own, everything it caused earlier has been relayed too."""
    for c in clients:
        token = f"{tag}-{id(c)}-{time.monotonic_ns()}"
        c.send("test:barrier", token)
        await c.expect("test:barrier", lambda m, t=token: m.get("content") == t)
