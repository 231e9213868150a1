"""The frame relay across nodes, in one process: two ``FrameRelay``s over one hub and broker
are two nodes. A viewer that joins on the node without the sharer is sent the newest frame
at once, and the node without the sharer can have every frame counted before it answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sessionhub.core.principal import Principal
from sessionhub.relay.frames import FrameRelay
from sessionhub.server.runtime import Runtime

OWNER = Principal("ana")


@pytest.fixture
async def nodes(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[FrameRelay, FrameRelay, str]]:
    # One in-memory broker, two relays: as if the broker were shared by two nodes.
    monkeypatch.setattr(type(runtime.hub.broker), "shared", True)
    await runtime.start()
    a, b = (
        FrameRelay(runtime.hub, flush_interval=3600),
        FrameRelay(runtime.hub, flush_interval=3600),
    )
    await a.start()
    await b.start()
    s, _ = await runtime.hub.create(OWNER, "screen_share")
    try:
        yield a, b, s.id
    finally:
        await a.close()
        await b.close()
        await runtime.close()


async def eventually(check: object, what: str) -> None:
    for _ in range(500):
        if callable(check) and check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


async def test_a_late_viewer_on_another_node_is_sent_the_newest_frame(
    nodes: tuple[FrameRelay, FrameRelay, str],
) -> None:
    a, b, sid = nodes
    room, sharer = await a.join_sharer(OWNER, sid)
    for n in range(3):
        await a.frame(room, sharer, b"frame-%d" % n)
    got: list[bytes] = []
    _, viewer = await b.join_viewer(OWNER, sid, lambda f: got.append(f) or True)
    await eventually(lambda: got, "the newest frame on the other node")
    assert got == [b"frame-2"]
    assert viewer.offered == 1


async def test_frames_counted_on_the_sharers_node_are_flushed_for_another(
    nodes: tuple[FrameRelay, FrameRelay, str], runtime: Runtime
) -> None:
    a, b, sid = nodes
    room, sharer = await a.join_sharer(OWNER, sid)
    for n in range(5):
        await a.frame(room, sharer, b"f%d" % n)
    assert a.unflushed(sid) == 5 and b.unflushed(sid) == 0
    assert await b.count_everywhere(sid) == 5
    stored = await runtime.hub.get(OWNER, sid)
    assert stored.counters["frames_captured"] == 5 and a.unflushed(sid) == 0
    # Nobody counts anything any more: the answer is 0 after the bounded wait, not a hang.
    b.ask_timeout = 0.2
    a.leave(room, sharer)
    assert await b.count_everywhere(sid) == 0


async def test_on_one_node_nobody_is_asked(runtime: Runtime) -> None:
    """With a broker no other node shares, the count is flushed here and nobody is waited
    for (a stop answers at once even when no sharer is connected anywhere)."""
    await runtime.start()
    try:
        relay = runtime.relay
        relay.ask_timeout = 30.0  # would show as a hang if it were waited for
        s, _ = await runtime.hub.create(OWNER, "screen_share")
        async with asyncio.timeout(5):
            assert await relay.count_everywhere(s.id) == 0
    finally:
        await runtime.close()
