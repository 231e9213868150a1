"""Live servers with the rooms feature (the runtime installs it; ``runtime.rooms``)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import FakeClock
from tests.live import LiveServer, make_settings

from sessionhub.server.compat import aesthetic
from sessionhub.server.runtime import build_runtime

from .client import AcClient


class RoomServer(LiveServer):
    """A live server (``sessionhub serve``'s engine) with rooms and their URLs at hand."""

    rooms: aesthetic.Rooms

    def room_url(self, slug: str, token: str | None = None) -> str:
        return self.socket_url(f"/room/{slug}", token)

    def client(self, slug: str, **kw: Any) -> AcClient:
        return AcClient(self.room_url(slug), **kw)

    async def settle_rooms(self) -> None:
        """Wait for the relay's background work (leaves, kicks, sessions) to finish."""
        await self.call(_drain(self.rooms))


async def _drain(rooms: aesthetic.Rooms) -> None:
    import asyncio

    for _ in range(50):
        pending = [t for t in rooms.service.pending() if not t.done()]
        if not pending:
            return
        await asyncio.wait(pending, timeout=1.0)


def start_room_server(
    tmp_path: Path, *, clock: FakeClock | None = None, **extra: Any
) -> RoomServer:
    settings = make_settings(tmp_path, **extra)
    runtime = build_runtime(settings, clock=clock) if clock else build_runtime(settings)
    assert runtime.rooms is not None
    live = RoomServer(settings, runtime=runtime)
    live.rooms = runtime.rooms
    return live.start()  # type: ignore[return-value]


@pytest.fixture
def make_rooms(tmp_path: Path) -> Iterator[Callable[..., RoomServer]]:
    """``make_rooms(rooms_ping_interval=0.3, ...)``: a started server; stopped at the end."""
    started: list[RoomServer] = []

    def make(clock: FakeClock | None = None, **extra: Any) -> RoomServer:
        live = start_room_server(tmp_path / f"s{len(started)}", clock=clock, **extra)
        started.append(live)
        return live

    yield make
    for live in started:
        live.stop()


@pytest.fixture(scope="module")
def rooms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoomServer]:
    """One server for a module's tests with the default settings; each test plays in
    rooms of its own (``slug``), so they cannot see each other."""
    live = start_room_server(tmp_path_factory.mktemp("rooms"))
    yield live
    live.stop()


@pytest.fixture
def slug(request: pytest.FixtureRequest) -> str:
    """A room name of this test's own."""
    return "t-" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:100]


@pytest.fixture
async def clients() -> AsyncIterator[list[AcClient]]:
    """Clients a test opens; closed at the end."""
    made: list[AcClient] = []
    yield made
    for c in made:
        await c.close()
