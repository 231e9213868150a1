"""Leadership (leadership.py): one node at a time runs a role; another takes over when the
leader dies (stops renewing) or steps down, and the fencing token tells them apart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.live import until

from sessionhub.broker.memory import MemoryBroker
from sessionhub.hub import Hub
from sessionhub.kinds.generic import Generic
from sessionhub.kinds.registry import Registry
from sessionhub.leadership import Leadership
from sessionhub.store import open_store

TTL = 0.3


@pytest.fixture
async def hubs(tmp_path: Path) -> AsyncIterator[tuple[Hub, Hub]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'lead.db'}"
    broker = MemoryBroker()
    a = Hub(open_store(url), broker, Registry([Generic()]))
    b = Hub(open_store(url), broker, Registry([Generic()]))
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_one_leads_and_another_takes_over_when_it_stops_renewing(
    hubs: tuple[Hub, Hub],
) -> None:
    a_hub, b_hub = hubs
    events: list[str] = []

    def role(name: str) -> Leadership:
        async def gain() -> None:
            events.append(f"{name}+")

        async def lose() -> None:
            events.append(f"{name}-")

        hub = a_hub if name == "a" else b_hub
        return Leadership(hub, "sweeps", name, ttl=TTL, on_gain=gain, on_lose=lose)

    a, b = role("a"), role("b")
    await a.start()
    await b.start()
    try:
        assert a.leading and not b.leading and events == ["a+"]
        first = a.token
        # a is frozen (killed): its renewals stop; b takes the role once the lease lapses.
        assert a._task is not None
        a._task.cancel()
        await until(lambda: b.leading, wait=5 * TTL + 2, what="the takeover")
        assert b.token is not None and first is not None and b.token > first
        # a wakes up: its next renewal finds the lease moved on, and it steps down.
        assert await a.check() is False and not a.leading
        assert events == ["a+", "b+", "a-"]
        # An orderly stop hands over at once (no wait for the ttl).
        second = b.token
        await b.close()
        assert await a.check() is True and a.leading and a.token is not None
        assert a.token > second
    finally:
        await a.close()
        await b.close()


async def test_a_failing_take_up_is_not_leadership(hubs: tuple[Hub, Hub]) -> None:
    a_hub, _ = hubs

    async def broken() -> None:
        raise RuntimeError("cannot start")

    lead = Leadership(a_hub, "connector", "a", ttl=TTL, on_gain=broken)
    try:
        assert await lead.check() is False and not lead.leading
        await asyncio.sleep(0)
    finally:
        await lead.close()
