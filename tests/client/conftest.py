"""A real sessionhub server (uvicorn in a thread, the fast WebSocket engine) for the client
tests, reusing the realtime tests' ``LiveServer``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.live import LiveServer, make_settings


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server per test module (starting one costs a few hundred ms)."""
    server = LiveServer(make_settings(tmp_path_factory.mktemp("client"))).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """``fresh_server(history_size=2)``: a server of its own, for tests that change settings."""
    started: list[LiveServer] = []

    def make(**extra: Any) -> LiveServer:
        server = LiveServer(make_settings(tmp_path / str(len(started)), **extra)).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
