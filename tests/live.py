"""The one live-server harness: a real sessionhub server on a free 127.0.0.1 port, in a
background thread, as ``sessionhub serve`` runs it (uvicorn with the native realtime engine),
or with uvicorn's own WebSocket implementation and the ASGI routes (``engine="asgi"``).

Tests that need real sockets (SDKs, browsers, raw TCP) use it; everything else runs the app
in-process (``tests/inprocess.py``).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import uvicorn

from sessionhub.server.app import create_app
from sessionhub.server.realtime import RealtimeNode
from sessionhub.server.runtime import Runtime, build_runtime
from sessionhub.server.serving import uvicorn_config
from sessionhub.settings import Settings

SECRET = "test-secret-0123456789abcdef0123456789"
T = TypeVar("T")


class LiveServer:
    """``url``/``ws_url`` of a running server; ``call(coro)`` runs on the server's loop."""

    def __init__(
        self, settings: Settings, *, engine: str = "fast", runtime: Runtime | None = None
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.runtime: Runtime = runtime or build_runtime(settings)
        self.app = create_app(runtime=self.runtime)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._sock = sock
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/connection/websocket"
        # What `sessionhub serve` runs; the "asgi" engine swaps in uvicorn's own WebSocket.
        overrides = {} if engine == "fast" else {"ws": "websockets-sansio"}
        config = uvicorn_config(self.app, settings, **overrides)
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="live-server", daemon=True)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        try:
            loop.run_until_complete(self.server.serve(sockets=[self._sock]))
        finally:
            loop.close()

    def start(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(20)
        self._sock.close()

    @property
    def realtime(self) -> RealtimeNode:
        return self.runtime.realtime

    def token(self, sub: str, *roles: str, **kw: Any) -> str:
        return self.runtime.auth.issue(sub, roles, **kw)

    def headers(self, sub: str, *roles: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub, *roles)}"}

    async def call(self, coro: Awaitable[T]) -> T:
        """Run ``coro`` on the server's event loop and wait for it from the test's loop."""
        assert self.loop is not None
        fut = asyncio.run_coroutine_threadsafe(_wrap(coro), self.loop)
        return await asyncio.wrap_future(fut)

    async def publish(self, topic: str, data: bytes) -> None:
        await self.call(self.runtime.hub.broker.publish([topic], data))

    async def settle(self) -> None:
        """Wait until the consumers have read the event log to its end (so what they
        publish - live counts, notifications - has been published)."""
        await self.call(self.runtime.consumers.drain())

    def socket_url(self, path: str, token: str | None = None, **query: str) -> str:
        """``ws://127.0.0.1:<port><path>?token=...``: a WebSocket URL of this server."""
        params = {**({"token": token} if token else {}), **query}
        tail = "&".join(f"{k}={v}" for k, v in params.items())
        return f"ws://127.0.0.1:{self.port}{path}" + (f"?{tail}" if tail else "")


def make_settings(tmp_path: Path, **extra: Any) -> Settings:
    s = Settings(
        data_dir=tmp_path / "data",
        jwt_secret=SECRET,
        sweep_interval=3600.0,
        ping_interval=float(extra.pop("ping_interval", 25.0)),
        history_size=int(extra.pop("history_size", 1000)),
        http_keep_alive=float(extra.pop("http_keep_alive", 75.0)),
    )
    s.extra.update(extra)
    return s


async def _wrap(coro: Awaitable[T]) -> T:
    return await coro


async def until(pred: Callable[[], bool], wait: float = 10.0, what: str = "condition") -> None:
    """Wait (bounded) until ``pred()`` holds."""
    deadline = time.monotonic() + wait
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
