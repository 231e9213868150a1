"""Helpers for realtime tests: a raw protocol client, a TCP proxy that can be cut (and
``until``, re-exported from ``tests/live.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from tests.live import until
from websockets.asyncio.client import ClientConnection

__all__ = ["Proxy", "Raw", "until"]


class Raw:
    """A bare JSON-protocol client, to check the wire format itself."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0
        self.backlog: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, url: str) -> Raw:
        return cls(await websockets.connect(url, max_size=None, compression=None))

    async def send(self, *commands: dict[str, Any]) -> list[int]:
        """Send commands in one frame; ids are filled in and returned."""
        ids = []
        lines = []
        for cmd in commands:
            if cmd:
                self.next_id += 1
                cmd = {"id": self.next_id, **cmd}
                ids.append(self.next_id)
            lines.append(orjson.dumps(cmd).decode())
        await self.ws.send("\n".join(lines))
        return ids

    async def frame(self, wait: float = 10.0) -> list[dict[str, Any]]:
        data = await asyncio.wait_for(self.ws.recv(), wait)
        assert isinstance(data, str), "JSON protocol frames are text"
        return [orjson.loads(line) for line in data.split("\n") if line.strip()]

    async def reply(self, cid: int, wait: float = 10.0) -> dict[str, Any]:
        """The reply to command ``cid``; pushes and pings seen meanwhile go to ``backlog``."""
        for i, msg in enumerate(self.backlog):
            if msg.get("id") == cid:
                return self.backlog.pop(i)
        deadline = time.monotonic() + wait
        while True:
            msgs = await self.frame(max(0.01, deadline - time.monotonic()))
            for j, msg in enumerate(msgs):
                if msg.get("id") == cid:
                    self.backlog.extend(msgs[j + 1 :])  # what shared its frame comes later
                    return msg
                self.backlog.append(msg)

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        (cid,) = await self.send({method: params or {}})
        return await self.reply(cid)

    async def push(self, wait: float = 10.0) -> dict[str, Any]:
        """The next message without an id (a push or a ping)."""
        for i, msg in enumerate(self.backlog):
            if "id" not in msg:
                return self.backlog.pop(i)
        while True:
            msgs = await self.frame(wait)
            for j, msg in enumerate(msgs):
                if "id" not in msg:
                    self.backlog.extend(msgs[j + 1 :])
                    return msg
                self.backlog.append(msg)

    async def close_code(self, wait: float = 10.0) -> int | None:
        """Read until the server closes; the close code it sent."""
        with contextlib.suppress(websockets.ConnectionClosed):
            async with asyncio.timeout(wait):
                while True:
                    await self.ws.recv()
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()


class Proxy:
    """A TCP proxy on 127.0.0.1 that can cut the network (drop every connection and refuse
    new ones) and restore it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = True
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._pairs.append((writer, uw))
        await asyncio.gather(self._pipe(reader, uw), self._pipe(ur, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    def cut(self) -> None:
        self.up = False
        for a, b in self._pairs:
            a.transport.abort()
            b.transport.abort()
        self._pairs.clear()

    def restore(self) -> None:
        self.up = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def node_or_skip() -> str:
    """The ``node`` binary, once the Node SDK packages are installed (``npm install``, which
    ``make test`` runs); else the test is skipped with what is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed; the JS SDK test needs Node.js 18+")
    root = Path(__file__).resolve().parents[2]
    for pkg in ("centrifuge", "ws"):
        if not (root / "node_modules" / pkg / "package.json").exists():
            pytest.skip(f"npm package {pkg!r} missing: run `npm install` (make test does)")
    return node
