"""The rooms' data channels: geckos.io signalling on the HTTP port (shapes, CORS), and
``tv`` / ``fairy:point`` / relay semantics between aiortc peers, per room, with the limits.
The real ``@geckos.io/client`` in Chromium is ``test_browser.py``."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from tests.conftest import service_unavailable

from .conftest import RoomServer, start_room_server

aiortc = pytest.importorskip("aiortc", reason="the data channels need aiortc (pip install aiortc)")

from .geckos_peer import GeckosPeer  # noqa: E402

CORS = {
    "access-control-allow-origin": "*",
    "access-control-allow-methods": "OPTIONS, GET, POST",
    "access-control-allow-headers": "content-type, authorization",
}


@pytest.fixture(scope="module")
def udp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoomServer]:
    """One server for the module (each test uses rooms of its own)."""
    live = start_room_server(
        tmp_path_factory.mktemp("udp"), rooms_ice_addresses="127.0.0.1", rooms_datagram_rate=200.0
    )
    yield live
    live.stop()


@pytest.fixture
async def http(udp: RoomServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=udp.url, timeout=10) as client:
        yield client


@pytest.fixture
async def peers(http: httpx.AsyncClient) -> AsyncIterator[list[GeckosPeer]]:
    made: list[GeckosPeer] = []
    yield made
    for p in made:
        await p.close(http)


async def join(
    udp: RoomServer, http: httpx.AsyncClient, peers: list[GeckosPeer], slug: str
) -> GeckosPeer:
    peer = GeckosPeer(f"{udp.url}/room/{slug}")
    peers.append(peer)
    try:
        return await peer.connect(http)
    except TimeoutError:
        service_unavailable("a loopback WebRTC connection", "the data channel did not open")
        raise


async def test_signalling_answers_as_geckos_does(udp: RoomServer, http: httpx.AsyncClient) -> None:
    r = await http.post("/room/alpha/.wrtc/v2/connections")
    assert r.status_code == 200
    for k, v in CORS.items():
        assert r.headers[k] == v
    body = r.json()
    assert body["userData"] == {}
    assert re.fullmatch(r"[A-Za-z0-9]{24}", body["id"])
    offer = body["localDescription"]
    assert offer["type"] == "offer"
    sdp = offer["sdp"]
    assert "a=candidate:" in sdp and " 127.0.0.1 " in sdp  # a loopback host candidate
    assert "webrtc-datachannel" in sdp and "a=max-message-size:" in sdp
    pid = body["id"]
    pre = await http.options(f"/.wrtc/v2/connections/{pid}/remote-description")
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "*"
    assert (await http.get(f"/.wrtc/v2/connections/{pid}/additional-candidates")).json() == []
    bad = await http.post(f"/.wrtc/v2/connections/{pid}/remote-description", json={"type": "offer"})
    assert bad.status_code == 422 and bad.headers["access-control-allow-origin"] == "*"
    assert (await http.post(f"/.wrtc/v2/connections/{pid}/close")).status_code == 200
    gone = await http.get(f"/.wrtc/v2/connections/{pid}/additional-candidates")
    assert gone.status_code == 404 and gone.headers["access-control-allow-origin"] == "*"
    assert (await http.get("/.wrtc/v2/connections/short/additional-candidates")).status_code == 400
    old = await http.post("/.wrtc/v1/connections")  # older clients' prefix
    assert old.status_code == 200
    await http.post(f"/.wrtc/v1/connections/{old.json()['id']}/close")


async def test_tv_fairy_point_and_others_in_one_room_only(
    udp: RoomServer, http: httpx.AsyncClient, peers: list[GeckosPeer]
) -> None:
    a, b = await join(udp, http, peers, "alpha"), await join(udp, http, peers, "alpha")
    other = await join(udp, http, peers, "beta")
    a.emit("tv", '{"frame":1}')  # the Aesthetic Computer client sends JSON strings
    assert await b.wait_for("tv") == ['{"frame":1}']
    assert await a.wait_for("tv") == ['{"frame":1}']  # the sender too
    b.emit("fairy:point", {"x": 0.5, "y": 0.25})
    assert await a.wait_for("fairy:point") == [{"x": 0.5, "y": 0.25}]
    a.emit("piece:ping", 7)  # an unknown event: the room, as tv
    await b.wait_for("piece:ping")
    a.emit("tv", "reliable", reliable=True)  # ten copies, one delivery
    a.emit("disconnected", True)  # geckos' own event names are never relayed
    a.raw("plain text")
    await b.wait_for("rawMessage")
    await b.wait_for("tv", 2)
    await asyncio.sleep(0.3)
    assert b.of("tv") == ['{"frame":1}', "reliable"]
    assert not b.of("disconnected") and not b.of("fairy:point")
    assert other.got == []


async def test_oversized_and_excess_datagrams_are_dropped(
    make_rooms: Callable[..., RoomServer], peers: list[GeckosPeer]
) -> None:
    udp = make_rooms(
        rooms_ice_addresses="127.0.0.1",
        rooms_max_datagram=200,
        rooms_datagram_rate=10.0,
        rooms_datagram_burst=5,
    )
    async with httpx.AsyncClient(base_url=udp.url, timeout=10) as http:
        a, b = await join(udp, http, peers, "lim"), await join(udp, http, peers, "lim")
        a.emit("tv", "x" * 400)
        for i in range(20):
            a.emit("tv", i)
        await asyncio.sleep(0.3)
        got = b.of("tv")
        assert "x" * 400 not in got and 4 <= len(got) <= 8
        assert udp.rooms.datagrams.dropped >= 13
        for p in peers:
            await p.close(http)
        peers.clear()


async def test_the_shared_path_follows_a_players_identity_into_its_room(
    udp: RoomServer, http: httpx.AsyncClient, peers: list[GeckosPeer]
) -> None:
    from .client import AcClient

    tab = AcClient(udp.room_url("field"), handle="@ana")
    await tab.connect()
    try:
        tab.send("login", {"user": {"sub": "auth0|ana"}})
        here = await join(udp, http, peers, "field")
        shared = GeckosPeer(udp.url)  # the bare /.wrtc/v2, as the upstream client signals
        peers.append(shared)
        await shared.connect(http)
        await asyncio.sleep(0.2)
        shared.emit("udp:identity", '{"user": {"sub": "auth0|ana"}, "handle": "@ana"}')
        await asyncio.sleep(0.2)
        shared.emit("tv", "from the shared path")
        assert await here.wait_for("tv") == ["from the shared path"]
    finally:
        await tab.close()
