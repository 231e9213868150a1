"""The room socket over real sockets, against ``sessionhub serve``'s engine, with a client
that behaves as Aesthetic Computer's browser client (``tests/rooms/client.py``)."""

from __future__ import annotations

import asyncio
import json

from .client import AcClient, barrier
from .conftest import RoomServer


async def open_client(
    rooms: RoomServer, clients: list[AcClient], slug: str, **kw: object
) -> AcClient:
    c = rooms.client(slug, **kw)  # type: ignore[arg-type]
    clients.append(c)
    await c.connect()
    await c.expect("connected")
    return c


async def test_connected_joined_left_count_players_per_slug(
    rooms: RoomServer, slug: str, clients: list[AcClient]
) -> None:
    a = await open_client(rooms, clients, slug)
    hello = a.of("connected")[0]
    assert isinstance(hello["content"], str)  # a JSON string, as upstream
    content = json.loads(hello["content"])
    assert content["playerCount"] == 1 and content["id"] == hello["id"] and content["ip"]
    b = await open_client(rooms, clients, slug)
    assert json.loads(b.of("connected")[0]["content"])["playerCount"] == 2
    joined = await a.expect("joined")
    assert joined["id"] == b.id
    assert json.loads(joined["content"]) == {"text": f"{b.id} has joined. Connections open: 2"}
    c = await open_client(rooms, clients, slug + "-b")
    assert json.loads(c.of("connected")[0]["content"])["playerCount"] == 1
    await b.close()
    left = await a.expect("left")
    assert left == {"type": "left", "content": {"count": 1}, "id": b.id}
    await barrier(a, c)
    assert not c.of("joined") and not c.of("left")  # another slug hears nothing
    assert len(a.of("joined")) == 1  # ... and alpha nothing of beta


async def test_unknown_types_go_to_everyone_with_the_senders_id(
    rooms: RoomServer, slug: str, clients: list[AcClient]
) -> None:
    a = await open_client(rooms, clients, slug)
    b = await open_client(rooms, clients, slug)
    other = await open_client(rooms, clients, slug + "-b")
    a.send("piece:chat", {"text": "hi"})
    for c in (a, b):
        got = await c.expect("piece:chat")
        assert got == {"type": "piece:chat", "content": {"text": "hi"}, "id": a.id}
    # A client's own id field is replaced by the sender's, as upstream.
    assert b.ws is not None
    await b.ws.send(json.dumps({"type": "note", "content": 1, "id": "forged", "extra": True}))
    got = await a.expect("note")
    assert got == {"type": "note", "content": 1, "id": b.id, "extra": True}
    await barrier(other)
    assert not other.of("piece:chat") and not other.of("note")


async def test_login_location_and_code_channel_are_consumed_not_relayed(
    rooms: RoomServer, slug: str, clients: list[AcClient]
) -> None:
    # A logged-in tab: location:broadcast and its keep-alive every 2.5 s, code-channel:sub.
    a = await open_client(rooms, clients, slug, handle="@jeffrey", keep_alive=0.2)
    b = await open_client(rooms, clients, slug)
    a.send("login", {"user": {"sub": "auth0|jeffrey"}})
    a.send("location:broadcast", {"handle": "@jeffrey", "slug": "field"})
    await asyncio.sleep(0.5)  # a couple of keep-alives
    await barrier(a, b)
    seen = {m["type"] for m in b.messages}
    assert not seen & {"login", "location:broadcast", "code-channel:sub"}
    players = await rooms.call(rooms.runtime.hub.presence.presence(f"room:{slug}"))
    about = {
        json.loads(i.conn_info or b"{}")["id"]: (i.user, json.loads(i.conn_info or b"{}")["handle"])
        for i in players.values()
    }
    assert about[a.id] == ("auth0|jeffrey", "@jeffrey")


async def test_world_labels(rooms: RoomServer, slug: str, clients: list[AcClient]) -> None:
    a = rooms.client(slug)
    clients.append(a)
    # Queued before the socket opens, as a piece's boot does: handled after `connected`.
    a.send("world:field:join", {"handle": "@a", "pos": {"x": 1, "y": 2}})
    await a.connect()
    listed = await a.expect("world:field:list")
    assert a.messages[0]["type"] == "connected"
    assert listed["content"] == {str(a.id): {"handle": "@a", "pos": {"x": 1, "y": 2}}}
    b = await open_client(rooms, clients, slug)
    b.send("world:field:join", {"handle": "@b", "pos": {"x": 0, "y": 0}})
    listed = await b.expect("world:field:list")
    assert set(listed["content"]) == {str(a.id), str(b.id)}  # everyone, the joiner too
    join = await a.expect("world:field:join")
    assert join == {
        "type": "world:field:join",
        "content": {"handle": "@b", "pos": {"x": 0, "y": 0}},
        "id": b.id,
    }
    b.send("world:field:move", {"pos": {"x": 5, "y": 6}})
    b.send("world:field:show", "painting-1")
    b.send("world:field:persist", {"k": 1})
    b.send("world:field:write", "hello")
    for label in ("move", "show", "persist", "write"):
        got = await a.expect(f"world:field:{label}")
        assert got["id"] == b.id
    await b.expect("world:field:write")  # write goes to everyone, the sender included
    await barrier(b)
    assert not [
        m
        for m in b.messages
        if m["type"]
        in ("world:field:move", "world:field:show", "world:field:persist", "world:field:join")
    ]
    c = await open_client(rooms, clients, slug)
    c.send("world:field:join", {"handle": "c"})
    state = (await c.expect("world:field:list"))["content"][str(b.id)]
    assert state == {"handle": "@b", "pos": {"x": 5, "y": 6}, "showing": "painting-1"}
    b.send("world:field:hide", None)
    await a.expect("world:field:hide")
    d = await open_client(rooms, clients, slug)
    d.send("world:field:join", {"handle": "d"})
    assert (await d.expect("world:field:list"))["content"][str(b.id)]["showing"] is None


async def test_a_dropped_at_handle_is_a_ghost_then_kicked(
    make_rooms: object, clients: list[AcClient]
) -> None:
    rooms = make_rooms(rooms_ghost_seconds=0.4)  # type: ignore[operator]
    a = await open_client(rooms, clients, "alpha")
    a.send("world:field:join", {"handle": "@a"})
    b = await open_client(rooms, clients, "alpha")
    b.send("world:field:join", {"handle": "@b"})
    await a.expect("world:field:join")
    await a.close()
    ghost = await b.expect("world:field:ghost")
    assert ghost == {"type": "world:field:ghost", "content": {}, "id": a.id}
    kick = await b.expect("world:field:kick")
    assert kick == {"type": "world:field:kick", "content": {}, "id": a.id}
    assert not b.of("left")  # a ghost does not "leave" (upstream)
    c = await open_client(rooms, clients, "alpha")
    c.send("world:field:join", {"handle": "c"})
    assert str(a.id) not in (await c.expect("world:field:list"))["content"]


async def test_a_ghost_that_comes_back_is_not_kicked(
    make_rooms: object, clients: list[AcClient]
) -> None:
    rooms = make_rooms(rooms_ghost_seconds=0.4)  # type: ignore[operator]
    a = await open_client(rooms, clients, "alpha")
    a.send("world:field:join", {"handle": "@a"})
    b = await open_client(rooms, clients, "alpha")
    b.send("world:field:join", {"handle": "@b"})
    await a.expect("world:field:join")
    await a.close()
    await b.expect("world:field:ghost")
    again = await open_client(rooms, clients, "alpha")
    again.send("world:field:join", {"handle": "@a"})
    listed = (await again.expect("world:field:list"))["content"]
    assert str(a.id) not in listed and str(again.id) in listed  # the ghost is replaced
    await b.expect("world:field:join", lambda m: m["id"] == again.id)
    await asyncio.sleep(0.6)  # past the ghost time
    assert not b.of("world:field:kick")


async def test_the_last_one_in_a_world_and_plain_handles_just_leave(
    rooms: RoomServer, slug: str, clients: list[AcClient]
) -> None:
    a = await open_client(rooms, clients, slug)
    a.send("world:field:join", {"handle": "@a"})
    b = await open_client(rooms, clients, slug)
    b.send("world:field:join", {"handle": "guest"})
    await a.expect("world:field:join")
    await b.close()  # not an @handle: no ghost
    assert (await a.expect("left"))["id"] == b.id
    c = await open_client(rooms, clients, slug)
    c.send("world:other:join", {"handle": "@c"})
    await c.expect("world:other:list")
    await c.close()  # alone in its world: no ghost either
    assert (await a.expect("left", lambda m: m["id"] == c.id))["content"] == {"count": 1}
    assert not a.of("world:other:ghost")
