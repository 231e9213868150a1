"""The screen-share relay on a real server (both WebSocket engines): sharer, viewers, slow
viewer, counting."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import orjson
import pytest
from tests.live import LiveServer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sessionhub.core.principal import Principal
from sessionhub.relay.frames import (
    CLOSE_ENDED,
    CLOSE_FORBIDDEN,
    CLOSE_NOT_ACTIVE,
    CLOSE_NOT_FOUND,
    CLOSE_REPLACED,
    CLOSE_UNAUTHENTICATED,
    FrameRelay,
    Viewer,
)
from sessionhub.server.runtime import Runtime

Token = Callable[..., str]

FRAME_BYTES = 256 * 1024
FRAMES = 100  # 25 MB: more than loopback socket buffers hold, so a stalled viewer must skip


def frame(n: int) -> bytes:
    return struct.pack(">I", n) + bytes(FRAME_BYTES - 4)


def number(data: bytes) -> int:
    value: int = struct.unpack(">I", data[:4])[0]
    return value


class Server(LiveServer):
    """The live server (``tests/live.py``) with the base URLs these tests build on."""

    @property
    def http(self) -> str:
        return self.url

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@pytest.fixture(params=["fast", "asgi"])
def server(request: pytest.FixtureRequest, runtime: Runtime) -> Iterator[Server]:
    """A live server on the runtime of the test's ``token`` fixture, once per engine."""
    live = Server(runtime.settings, engine=request.param, runtime=runtime).start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http) as c:
        yield c


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _share(http: httpx.AsyncClient, token: str, **body: object) -> str:
    r = await http.post("/api/screen_share/start", json=body, headers=_h(token))
    assert r.status_code == 200, r.text
    sid: str = r.json()["session_id"]
    return sid


async def joined(ws: ClientConnection) -> dict[str, object]:
    """The server's first message: the ready notice, sent once the connection has joined."""
    message = await asyncio.wait_for(ws.recv(), 10)
    assert isinstance(message, str), message
    ready: dict[str, object] = orjson.loads(message)
    assert ready["type"] == "ready"
    return ready


async def _closed_with(ws: ClientConnection) -> int | None:
    """Read until the server closes; the close code it sent."""
    try:
        for _ in range(10_000):
            await ws.recv()
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
    raise AssertionError("the server did not close the connection")


async def test_slow_viewer_gets_the_newest_frame_and_frames_are_counted(
    server: Server, http: httpx.AsyncClient, token: Token
) -> None:
    owner = token("user")
    sid = await _share(http, owner, quality="high")
    url = f"{server.ws}/stream/{sid}"
    async with (
        connect(f"{url}?role=sharer", additional_headers=_h(owner)) as sharer,
        connect(f"{url}?token={owner}", max_size=2 * FRAME_BYTES) as fast,
        # Reads nothing until the end, and buffers at most one message client-side.
        connect(
            f"{url}?token={token('root', 'admin')}", max_size=2 * FRAME_BYTES, max_queue=1
        ) as slow,
    ):
        ready = [await joined(ws) for ws in (sharer, fast, slow)]
        assert [r["role"] for r in ready] == ["sharer", "viewer", "viewer"]
        assert (ready[1]["width"], ready[1]["height"], ready[1]["fps"]) == (1920, 1080, 60)
        fast_seen: list[int] = []

        async def read_fast() -> None:
            while not fast_seen or fast_seen[-1] != FRAMES:
                fast_seen.append(number(await fast.recv()))

        reader = asyncio.create_task(read_fast())
        # Frames arrive in order over the sharer's one connection.
        status = None
        for n in range(1, FRAMES + 1):
            await sharer.send(frame(n))
        await asyncio.wait_for(reader, 30)
        # The live count includes frames not yet flushed to the database.
        r = await http.get(f"/api/screen_share/status/{sid}", headers=_h(owner))
        status = r.json()
        assert status["frames_captured"] == FRAMES

        slow_seen: list[int] = []
        for _ in range(FRAMES):
            slow_seen.append(number(await asyncio.wait_for(slow.recv(), 30)))
            if slow_seen[-1] == FRAMES:
                break
    assert fast_seen == sorted(fast_seen) and fast_seen[-1] == FRAMES
    assert slow_seen == sorted(slow_seen) and len(set(slow_seen)) == len(slow_seen)
    assert slow_seen[-1] == FRAMES, "the slow viewer ends on the newest frame"
    assert len(slow_seen) < FRAMES, "the slow viewer skipped frames instead of queueing them"

    r = await http.post("/api/screen_share/stop", json={"session_id": sid}, headers=_h(owner))
    assert r.json()["frames_captured"] == FRAMES
    history = (await http.get("/api/sessions/history", headers=_h(owner))).json()
    assert history["history"][0]["frames_captured"] == FRAMES


async def test_who_may_connect(server: Server, http: httpx.AsyncClient, token: Token) -> None:
    owner, bob, carol = token("user"), token("bob"), token("carol")
    sid = await _share(http, owner, viewers=["carol"])
    url = f"{server.ws}/stream/{sid}"
    cases = [
        (f"{url}", CLOSE_UNAUTHENTICATED),
        (f"{url}?token=garbage.garbage.garbage", CLOSE_UNAUTHENTICATED),
        (f"{url}?token={bob}", CLOSE_FORBIDDEN),  # not admitted
        (f"{url}?role=sharer&token={carol}", CLOSE_FORBIDDEN),  # only the owner shares
        (f"{server.ws}/stream/screen_00000000?token={owner}", CLOSE_NOT_FOUND),
        (f"{url}?role=director&token={owner}", 4400),
    ]
    for address, code in cases:
        async with connect(address) as ws:
            assert await _closed_with(ws) == code, address

    async with (
        connect(f"{url}?role=sharer&token={owner}") as sharer,
        connect(f"{url}?token={carol}") as viewer,
    ):
        await joined(sharer)
        await joined(viewer)
        await sharer.send(b"hello")
        assert await asyncio.wait_for(viewer.recv(), 10) == b"hello"
        # Admitting bob lets him in; he is sent the newest frame at once.
        r = await http.post(
            f"/api/screen_share/{sid}/viewers", json={"user_id": "bob"}, headers=_h(owner)
        )
        assert r.json()["viewers"] == ["bob", "carol"]
        async with connect(f"{url}?token={bob}") as late:
            await joined(late)
            assert await asyncio.wait_for(late.recv(), 10) == b"hello"
            # Removing carol disconnects her; bob stays.
            r = await http.delete(f"/api/screen_share/{sid}/viewers/carol", headers=_h(owner))
            assert r.json()["viewers"] == ["bob"]
            assert await _closed_with(viewer) == CLOSE_FORBIDDEN
            r = await http.post(
                f"/api/screen_share/{sid}/viewers", json={"user_id": "eve"}, headers=_h(bob)
            )
            assert r.status_code == 404  # bob may view, not manage (nor see the session)
            # Stopping the share ends every connection with 1000.
            r = await http.post(
                "/api/screen_share/stop", json={"session_id": sid}, headers=_h(owner)
            )
            assert r.json()["frames_captured"] == 1
            assert await _closed_with(late) == CLOSE_ENDED
            assert await _closed_with(sharer) == CLOSE_ENDED
    async with connect(f"{url}?token={owner}") as ws:
        assert await _closed_with(ws) == CLOSE_NOT_ACTIVE


async def test_a_new_sharer_connection_replaces_the_old(
    server: Server, http: httpx.AsyncClient, token: Token
) -> None:
    owner = token("user")
    sid = await _share(http, owner)
    url = f"{server.ws}/stream/{sid}?role=sharer&token={owner}"
    async with connect(url) as first:
        await joined(first)
        await first.send(b"a")
        for _ in range(500):  # until the relay has counted it
            status = (await http.get(f"/api/screen_share/status/{sid}", headers=_h(owner))).json()
            if status["frames_captured"] == 1:
                break
            await asyncio.sleep(0.01)
        async with connect(url) as second:
            await joined(second)
            assert await _closed_with(first) == CLOSE_REPLACED
            await second.send(b"b")
            async with connect(f"{server.ws}/stream/{sid}?token={owner}") as viewer:
                await joined(viewer)
                received = [await asyncio.wait_for(viewer.recv(), 10)]
                if received[-1] != b"b":  # joined before "b" was relayed: it comes next
                    received.append(await asyncio.wait_for(viewer.recv(), 10))
                assert received[-1] == b"b"
    status = (await http.get(f"/api/screen_share/status/{sid}", headers=_h(owner))).json()
    assert status["frames_captured"] == 2


async def test_viewer_slot_keeps_only_the_newest_frame() -> None:
    sent: list[bytes] = []
    full = True  # the viewer's socket is full: frames wait in the slot

    def send(data: bytes) -> bool:
        sent.append(data)
        return not full

    viewer = Viewer(Principal("v"), send)
    viewer.offer(b"\x00")  # taken at once; the socket is full after it
    for n in range(1, 6):
        viewer.offer(bytes([n]))
    assert sent == [b"\x00"]
    full = False
    viewer.drained()  # the socket took everything: only the newest frame follows
    assert sent == [b"\x00", bytes([5])]
    assert (viewer.offered, viewer.skipped, viewer.taken) == (6, 4, 2)
    viewer.offer(b"\x06")  # room on the socket: sent at once
    assert sent[-1] == b"\x06"
    viewer.close(CLOSE_ENDED, "done")
    viewer.offer(b"\x07")
    viewer.drained()
    assert sent[-1] == b"\x06" and viewer.closed


async def test_counts_are_flushed_in_batches_not_per_frame(
    client: httpx.AsyncClient, auth: Callable[..., dict[str, str]], runtime: Runtime
) -> None:
    relay: FrameRelay = runtime.relay
    sid = (await client.post("/api/screen_share/start", json={}, headers=auth("user"))).json()[
        "session_id"
    ]
    room, sharer = await relay.join_sharer(Principal("user"), sid)
    before = (await runtime.hub.store.get(sid)).version  # type: ignore[union-attr]
    for i in range(500):
        await relay.frame(room, sharer, bytes([i % 256]))
    s = await runtime.hub.store.get(sid)
    assert s is not None and s.version == before  # no write per frame
    assert relay.unflushed(sid) == 500
    assert await relay.flush() == 500
    s = await runtime.hub.store.get(sid)
    assert s is not None and s.version == before + 1 and s.counters["frames_captured"] == 500
    relay.leave(room, sharer)
