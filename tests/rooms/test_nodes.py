"""Players on different nodes play together: two relays (two nodes' ``RoomService``) over
one hub's broker and presence, exactly as two processes share Redis. Transport-free: each
player is a callback that records what it would be sent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from sessionhub.kinds.registry import Registry
from sessionhub.kinds.room import Room
from sessionhub.presence.memory import MemoryPresence
from sessionhub.relay.rooms import Player, RoomConfig, RoomService, RoomState
from sessionhub.server.runtime import Runtime


class Mono:
    """A monotonic clock for presence leases, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Tab:
    """A player's socket as the relay sees it: what it was sent."""

    def __init__(self, node: RoomService, slug: str) -> None:
        self.node, self.slug = node, slug
        self.got: list[dict[str, Any]] = []
        self.room: RoomState | None = None
        self.player: Player | None = None
        self.closed: tuple[int, str] | None = None

    def _deliver(self, item: object) -> None:
        assert isinstance(item, bytes)
        self.got.append(orjson.loads(item))

    async def join(self) -> Tab:
        self.room, self.player = await self.node.join(
            self.slug,
            client=f"c{id(self)}",
            address="10.0.0.1",
            deliver=self._deliver,
            direct=self._deliver,
            close=lambda code, reason: setattr(self, "closed", (code, reason)),
        )
        return self

    @property
    def id(self) -> int:
        assert self.player is not None
        return self.player.id

    async def say(self, type_: str, content: Any = None) -> None:
        assert self.room is not None and self.player is not None
        payload = orjson.dumps({"type": type_, "content": content})
        await self.node.receive(self.room, self.player, payload)

    async def leave(self) -> None:
        assert self.room is not None and self.player is not None
        await self.node.leave(self.room, self.player)

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [m for m in self.got if m["type"] == type_]


@pytest.fixture
async def nodes(runtime: Runtime) -> AsyncIterator[tuple[RoomService, RoomService, Mono]]:
    mono = Mono()
    runtime.hub.presence = MemoryPresence(clock=mono)
    if "room" not in runtime.hub.kinds:  # until kinds/registry.py lists it
        runtime.hub.kinds = Registry([*runtime.hub.kinds.values(), Room()])
    await runtime.hub.start()
    config = RoomConfig(ghost_seconds=0.3, sync_wait=1.0)
    one, two = RoomService(runtime.hub, config), RoomService(runtime.hub, config)
    await one.start()
    await two.start()
    try:
        yield one, two, mono
    finally:
        await one.close()
        await two.close()
        await runtime.hub.close()


async def settle(*services: RoomService) -> None:
    for _ in range(20):
        pending = [t for s in services for t in s.pending() if not t.done()]
        if not pending:
            return
        await asyncio.wait(pending, timeout=1.0)


async def test_players_on_two_nodes_share_one_room(
    nodes: tuple[RoomService, RoomService, Mono],
) -> None:
    one, two, _ = nodes
    a = await Tab(one, "x").join()
    await a.say("world:field:join", {"handle": "@a", "pos": {"x": 1}})
    b = await Tab(two, "x").join()  # node two starts following "x": it asks node one
    assert json.loads(b.of("connected")[0]["content"])["playerCount"] == 2
    assert a.of("joined")[0]["id"] == b.id
    await b.say("world:field:join", {"handle": "bee"})  # no @: it leaves, no ghost
    assert set(b.of("world:field:list")[0]["content"]) == {str(a.id), str(b.id)}
    assert a.of("world:field:join")[0]["id"] == b.id
    await b.say("world:field:move", {"pos": {"x": 9}})
    assert a.of("world:field:move")[0] == {
        "type": "world:field:move",
        "content": {"pos": {"x": 9}},
        "id": b.id,
    }
    assert not b.of("world:field:move")
    # Node one's replica followed node two's move: a newcomer there sees it.
    c = await Tab(one, "x").join()
    await c.say("world:field:join", {"handle": "c"})
    assert c.of("world:field:list")[0]["content"][str(b.id)]["pos"] == {"x": 9}
    await a.say("chat", "hi")
    assert [m["id"] for t in (a, b, c) for m in t.of("chat")] == [a.id] * 3
    elsewhere = await Tab(two, "y").join()
    await b.leave()
    assert a.of("left")[-1] == {"type": "left", "content": {"count": 2}, "id": b.id}
    await settle(one, two)
    assert [m["type"] for m in elsewhere.got] == ["connected"]


async def test_a_ghost_on_one_node_comes_back_on_the_other(
    nodes: tuple[RoomService, RoomService, Mono],
) -> None:
    one, two, _ = nodes
    a = await Tab(one, "g").join()
    await a.say("world:field:join", {"handle": "@a"})
    b = await Tab(two, "g").join()
    await b.say("world:field:join", {"handle": "@b"})
    await a.leave()
    assert b.of("world:field:ghost")[0]["id"] == a.id and not b.of("left")
    back = await Tab(two, "g").join()  # the same handle, on the other node
    await back.say("world:field:join", {"handle": "@a"})
    assert str(a.id) not in back.of("world:field:list")[0]["content"]
    await asyncio.sleep(0.5)  # past the ghost time: node one cancelled its kick
    await settle(one, two)
    assert not b.of("world:field:kick")


async def test_a_node_that_dies_takes_its_players_with_it(
    nodes: tuple[RoomService, RoomService, Mono], runtime: Runtime
) -> None:
    one, two, mono = nodes
    a = await Tab(one, "d").join()
    await a.say("world:field:join", {"handle": "@a"})
    b = await Tab(two, "d").join()
    await b.say("world:field:join", {"handle": "@b"})
    # Node one stops renewing its leases (it died); node two's player renews its own.
    mono.now += one.lease_ttl - 1
    await two.renew(b.room, b.player)  # type: ignore[arg-type]
    mono.now += 2
    await runtime.hub.presence.expire()
    await settle(one, two)
    assert b.of("left")[-1] == {"type": "left", "content": {"count": 1}, "id": a.id}
    late = await Tab(two, "d").join()
    await late.say("world:field:join", {"handle": "late"})
    assert str(a.id) not in late.of("world:field:list")[0]["content"]
