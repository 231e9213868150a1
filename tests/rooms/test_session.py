"""The ``room`` session of a slug: created on the first join, its players in presence (for
SDK subscribers and in the REST session), counts written in batches, ended a grace period
after the last player left (the hub's clock is injected), and one per slug across nodes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from centrifuge import Client, JoinContext, LeaveContext, SubscriptionEventHandler
from tests.conftest import FakeClock
from tests.live import until

from sessionhub.core.principal import SYSTEM_PRINCIPAL
from sessionhub.relay.rooms import RoomConfig, RoomService

from .client import AcClient, barrier
from .conftest import RoomServer
from .test_socket import open_client


class Presence(SubscriptionEventHandler):
    def __init__(self) -> None:
        self.joins: list[str] = []
        self.leaves: list[str] = []

    async def on_join(self, ctx: JoinContext) -> None:
        self.joins.append(ctx.info.user)

    async def on_leave(self, ctx: LeaveContext) -> None:
        self.leaves.append(ctx.info.user)


async def session_of(rooms: RoomServer, slug: str) -> dict[str, Any]:
    await rooms.settle_rooms()
    state = rooms.rooms.service.rooms.get(slug)
    assert state is not None and state.session_id is not None
    return await read(rooms, state.session_id)


async def read(rooms: RoomServer, sid: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=rooms.url) as http:
        r = await http.get(f"/api/sessions/{sid}", headers=rooms.headers("root", "admin"))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_a_room_session_lives_while_anyone_plays_and_ends_after_the_grace(
    make_rooms: Callable[..., RoomServer], clients: list[AcClient]
) -> None:
    clock = FakeClock()
    rooms = make_rooms(clock=clock)
    # An SDK subscriber (admin) follows the room's presence.
    sdk = Client(rooms.ws_url, token=rooms.token("root", "admin"), timeout=5.0)
    watcher = Presence()
    await sdk.connect()
    sub = sdk.new_subscription("room:lobby", events=watcher, join_leave=True)
    await sub.subscribe()
    try:
        a = await open_client(rooms, clients, "lobby", handle="@ana")
        # (The subscriber may also see its own join: it is present on the topic too.)
        await until(lambda: watcher.joins.count("anonymous") == 1, what="the SDK sees the join")
        session = await session_of(rooms, "lobby")
        assert session["kind"] == "room" and session["state"] == "active"
        assert session["owner"] == SYSTEM_PRINCIPAL.sub
        assert session["attributes"]["slug"] == "lobby" and session["socket_path"] == "/room/lobby"
        version = session["version"]
        for i in range(25):
            a.send("piece:tick", i)
        await barrier(a)
        await rooms.call(rooms.rooms.service.flush())
        session = await read(rooms, session["id"])
        assert session["counters"] == {"messages": 26, "joins": 1, "dropped": 0}
        assert session["attributes"]["players"] == 1
        assert session["attributes"]["handles"] == ["@ana"]
        assert session["attributes"]["peak_players"] == 1
        assert session["version"] == version + 1  # one write for 26 messages and a join

        await a.close()
        await until(
            lambda: [u for u in watcher.leaves if u != "root"] == ["@ana"], what="the leave"
        )
        await rooms.settle_rooms()
        left = await read(rooms, session["id"])
        # The peak is the most players at once: it stays when they leave.
        assert left["attributes"]["players"] == 0 and left["attributes"]["peak_players"] == 1
        clock.advance(59)
        await rooms.call(rooms.runtime.scheduler.sweep())
        assert (await read(rooms, session["id"]))["state"] == "active"  # within the grace
        clock.advance(2)
        await rooms.call(rooms.runtime.scheduler.sweep())
        ended = await read(rooms, session["id"])
        assert ended["state"] == "ended" and ended["end_reason"] == "idle_timeout"

        # The next player starts the slug's next generation.
        await open_client(rooms, clients, "lobby")
        again = await session_of(rooms, "lobby")
        assert again["id"] != session["id"] and again["state"] == "active"
        assert again["attributes"]["generation"] == 1
    finally:
        await sdk.disconnect()


async def test_a_room_with_players_is_not_ended(
    make_rooms: Callable[..., RoomServer], clients: list[AcClient]
) -> None:
    clock = FakeClock()
    rooms = make_rooms(clock=clock, rooms_flush_interval=0.05)
    await open_client(rooms, clients, "busy")
    session = await session_of(rooms, "busy")
    for _ in range(3):  # quiet players: the relay's heartbeats keep the room alive
        clock.advance(40)
        await asyncio.sleep(0.15)
        await rooms.call(rooms.runtime.scheduler.sweep())
    assert (await read(rooms, session["id"]))["state"] == "active"


async def test_one_live_session_per_slug_across_nodes(rooms: RoomServer) -> None:
    """Two nodes (relays over one store) racing to start a room get one session; once it
    ends, a node that never saw it finds the next generation."""
    hub = rooms.runtime.hub

    async def race() -> tuple[str, ...]:
        nodes = [RoomService(hub, RoomConfig()) for _ in range(4)]
        return tuple(await asyncio.gather(*(n.live_session("raced") for n in nodes)))

    ids = await rooms.call(race())
    assert len(set(ids)) == 1
    await rooms.call(hub.act(SYSTEM_PRINCIPAL, ids[0], "end"))
    fresh = await rooms.call(RoomService(hub, RoomConfig()).live_session("raced"))
    assert fresh != ids[0]
    s = await rooms.call(hub.get(SYSTEM_PRINCIPAL, fresh))
    assert s.state == "active" and s.attributes["generation"] == 1
