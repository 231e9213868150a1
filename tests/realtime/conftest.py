"""Live servers for the realtime tests (``tests/live.py``), once per WebSocket engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.live import LiveServer, make_settings

__all__ = ["LiveServer", "make_settings"]


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
