"""Liveness and limits of the room socket: pings, floods, oversized frames, tokens, rooms
per address, and the upstream shared path - each without disturbing the other players."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
from collections.abc import Callable

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from .client import AcClient, barrier
from .conftest import RoomServer
from .test_socket import open_client


class SilentSocket:
    """A raw WebSocket client that completes the handshake and then never answers a ping
    (a tab whose machine went to sleep)."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 101"), head

    def read_until_closed(self, wait: float) -> bytes:
        """Everything the server sends until it closes the connection (bounded)."""
        self.sock.settimeout(wait)
        data = b""
        try:
            while chunk := self.sock.recv(65536):
                data += chunk
        except TimeoutError:
            pass
        return data

    def close(self) -> None:
        self.sock.close()


async def test_a_client_that_answers_no_ping_is_dropped(
    make_rooms: Callable[..., RoomServer], clients: list[AcClient]
) -> None:
    rooms = make_rooms(rooms_ping_interval=0.2)
    a = await open_client(rooms, clients, "alpha")
    silent = SilentSocket(rooms.port, "/room/alpha")
    try:
        await a.expect("joined")
        data = await asyncio.get_running_loop().run_in_executor(None, silent.read_until_closed, 3.0)
        # A ping frame (0x89) came, then a close frame (0x88) with 3012 (no pong).
        assert b"\x89\x00" in data
        assert b"\x88" in data and (3012).to_bytes(2, "big") in data.split(b"\x88", 1)[1][:4]
        left = await a.expect("left")
        assert left["content"] == {"count": 1}
    finally:
        silent.close()
    await asyncio.sleep(0.45)  # more pings: the client that answers them stays
    await barrier(a)


async def test_excess_messages_are_dropped_and_a_flood_disconnects(
    make_rooms: Callable[..., RoomServer], clients: list[AcClient]
) -> None:
    rooms = make_rooms(rooms_rate=20.0, rooms_burst=10, rooms_flood=50)
    a = await open_client(rooms, clients, "alpha")
    b = await open_client(rooms, clients, "alpha")
    assert a.ws is not None
    for i in range(30):  # over the burst, under the flood: dropped, still connected
        await a.ws.send(json.dumps({"type": "spam", "content": i}))
    await asyncio.sleep(0.6)  # the bucket refills
    await barrier(a, b)
    relayed = len(b.of("spam"))
    assert 8 <= relayed <= 12  # the burst (one token went to code-channel:sub)
    assert rooms.rooms.service.dropped_total >= 30 - relayed - 2
    with contextlib.suppress(ConnectionClosed):  # the server hangs up mid-flood
        for i in range(400):
            await a.ws.send(json.dumps({"type": "flood", "content": i}))
    # 3013, unless the close frame was lost to the reset of a socket still being written to
    assert (await a.close_code())[0] in (3013, 1006)
    assert rooms.rooms.sockets.floods == 1
    await b.expect("left", lambda m: m["id"] == a.id)
    c = await open_client(rooms, clients, "alpha")
    await barrier(b, c)  # the others play on
    assert len(b.of("flood")) < 60


async def test_an_oversized_frame_closes_only_its_sender(
    make_rooms: Callable[..., RoomServer], clients: list[AcClient]
) -> None:
    rooms = make_rooms(rooms_max_message=1024)
    a = await open_client(rooms, clients, "alpha")
    b = await open_client(rooms, clients, "alpha")
    assert a.ws is not None
    await a.ws.send(json.dumps({"type": "big", "content": "x" * 2000}))
    assert (await a.close_code())[0] == 1009
    await b.expect("left", lambda m: m["id"] == a.id)
    b.send("fine", "x" * 900)
    assert (await b.expect("fine"))["id"] == b.id
    assert not b.of("big")


async def test_a_token_is_required_when_configured(
    make_rooms: Callable[..., RoomServer], clients: list[AcClient]
) -> None:
    rooms = make_rooms(rooms_require_token=True)
    anonymous = rooms.client("alpha")
    clients.append(anonymous)
    await anonymous.connect()
    assert (await anonymous.close_code())[0] == 3500
    forged = AcClient(rooms.room_url("alpha", token="not-a-token"))
    clients.append(forged)
    await forged.connect()
    assert (await forged.close_code())[0] == 3500
    member = AcClient(rooms.room_url("alpha", token=rooms.token("alice")))
    clients.append(member)
    await member.connect()
    await member.expect("connected")
    players = await rooms.call(rooms.runtime.hub.presence.presence("room:alpha"))
    assert [i.user for i in players.values()] == ["alice"]


async def test_rooms_per_address_are_limited(
    make_rooms: Callable[..., RoomServer], clients: list[AcClient]
) -> None:
    rooms = make_rooms(rooms_rooms_per_address=2)
    await open_client(rooms, clients, "one")
    await open_client(rooms, clients, "one")  # the same room again is fine
    await open_client(rooms, clients, "two")
    third = rooms.client("three")
    clients.append(third)
    await third.connect()
    assert (await third.close_code())[0] == 3504


async def test_the_upstream_path_is_one_shared_room(
    rooms: RoomServer, slug: str, clients: list[AcClient]
) -> None:
    old = AcClient(rooms.socket_url("/"))
    clients.append(old)
    await old.connect()
    await old.expect("connected")
    also = await open_client(rooms, clients, "%2A")  # /room/* is the same shared room
    await old.expect("joined", lambda m: m["id"] == also.id)
    slugged = await open_client(rooms, clients, slug)
    await barrier(old, slugged)
    assert not slugged.of("joined")


@pytest.mark.parametrize("name", ["field", "prompt~hello", "@jeffrey:piece"])
async def test_the_lookup_names_this_servers_room_socket(rooms: RoomServer, name: str) -> None:
    async with httpx.AsyncClient(base_url=rooms.url) as http:
        r = await http.get(
            f"/session/{name}", params={"service": "monolith", "forceProduction": "1"}
        )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.headers["cache-control"] == "no-cache, no-store, must-revalidate"
    body = r.json()
    assert body["state"] == "Ready"
    assert body["url"].startswith(f"http://127.0.0.1:{rooms.port}/room/")
    assert body["udp"] == body["url"]  # the same host and port carry the data channels


async def test_two_slugs_get_two_urls_and_public_url_wins(rooms: RoomServer) -> None:
    rooms.settings.public_url = "https://session.example.org:8443/"
    try:
        async with httpx.AsyncClient(base_url=rooms.url) as http:
            one = (await http.get("/session/one")).json()
            two = (await http.get("/session/two")).json()
            bad = await http.get("/session/" + "x" * 200)
    finally:
        rooms.settings.public_url = ""
    assert one["url"] == "https://session.example.org:8443/room/one"
    assert two["url"] == "https://session.example.org:8443/room/two"
    assert bad.status_code == 422
