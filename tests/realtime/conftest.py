"""A real sessionhub server on a free 127.0.0.1 port, in a background thread.

WebSocket SDKs need a real socket, so these tests run uvicorn for real: with the fast
engine (what ``sessionhub serve`` runs) or with uvicorn's own WebSocket implementation and
the ASGI route (``engine="asgi"``).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn

from sessionhub.server.app import create_app
from sessionhub.server.realtime import RealtimeService
from sessionhub.server.runtime import Runtime, build_runtime
from sessionhub.server.serving import uvicorn_config
from sessionhub.settings import Settings

SECRET = "test-secret-0123456789abcdef0123456789"
T = TypeVar("T")


class LiveServer:
    """``url``/``ws_url`` of a running server; ``call(coro)`` runs on the server's loop."""

    def __init__(self, settings: Settings, *, engine: str = "fast") -> None:
        self.settings = settings
        self.engine = engine
        self.runtime: Runtime = build_runtime(settings)
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

    @property
    def realtime(self) -> RealtimeService:
        service: RealtimeService = self.runtime.services["realtime"]
        return service

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


async def _wrap(coro: Awaitable[T]) -> T:
    return await coro


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


@pytest.fixture(params=["fast", "asgi"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    """A live server, once per engine."""
    live = LiveServer(make_settings(tmp_path), engine=request.param).start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """``make_server(engine="fast", ping_interval=1.0, realtime_queue_bytes=...)``."""
    started: list[LiveServer] = []

    def make(engine: str = "fast", **extra: Any) -> LiveServer:
        live = LiveServer(make_settings(tmp_path / str(len(started)), **extra), engine=engine)
        started.append(live.start())
        return live

    yield make
    for live in started:
        live.stop()
