"""The wire format itself, with a bare WebSocket client: batching, pings, codes, recovery
edge cases, the gapless bootstrap from a REST snapshot, and a reader that stalls."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from typing import Any

import httpx
import orjson
import pytest
import websockets
from fastapi import WebSocket
from tests.live import LiveServer, make_settings

from sessionhub.core import codes
from sessionhub.settings import Settings

from .helpers import Raw, until

pytestmark = pytest.mark.slow


async def connected(live: LiveServer, sub: str = "alice", *roles: str) -> Raw:
    raw = await Raw.open(live.ws_url)
    reply = await raw.call("connect", {"token": live.token(sub, *roles)})
    assert "connect" in reply, reply
    return raw


async def test_connect_reply_and_batched_replies(server: LiveServer) -> None:
    raw = await Raw.open(server.ws_url)
    reply = await raw.call("connect", {"token": server.token("alice"), "name": "raw"})
    result = reply["connect"]
    assert result["client"] and result["version"]
    assert result["ping"] == 25 and result["pong"] is True
    assert result["expires"] is True and result["ttl"] > 0
    # Three commands in one frame: three replies, in one frame, in order.
    ids = await raw.send(
        {"subscribe": {"channel": "user:alice"}},
        {"presence_stats": {"channel": "user:alice"}},
        {"history": {"channel": "user:alice", "limit": 5}},
    )
    frame = await raw.frame()
    assert [m["id"] for m in frame] == ids
    sub = frame[0]["subscribe"]
    assert sub["recoverable"] is True and sub["positioned"] is True
    assert sub["offset"] == 0 and sub["epoch"]
    assert frame[2]["history"]["epoch"] == sub["epoch"]
    await raw.close()


async def test_errors_keep_the_connection(server: LiveServer) -> None:
    raw = await connected(server)
    cases: list[tuple[dict[str, Any], int]] = [
        ({"subscribe": {"channel": "user:bob"}}, 103),
        ({"subscribe": {"channel": "has space"}}, 102),
        ({"subscribe": {}}, 107),
        ({"rpc": {"method": "x"}}, 104),
        ({"frobnicate": {}}, 104),
        ({"publish": {"channel": "user:alice", "data": {}}}, 103),
    ]
    for cmd, code in cases:
        (cid,) = await raw.send(cmd)
        assert (await raw.reply(cid))["error"]["code"] == code, cmd
    (cid,) = await raw.send({"subscribe": {"channel": "user:alice"}})
    assert "subscribe" in await raw.reply(cid)
    (cid,) = await raw.send({"subscribe": {"channel": "user:alice"}})
    assert (await raw.reply(cid))["error"]["code"] == 105
    await raw.close()


async def test_a_command_before_connect_is_a_final_bad_request(server: LiveServer) -> None:
    raw = await Raw.open(server.ws_url)
    await raw.send({"subscribe": {"channel": "user:alice"}})
    push = await raw.push()
    assert push["push"]["disconnect"]["code"] == codes.BAD_REQUEST_DISCONNECT.code == 3501
    assert push["push"]["disconnect"]["reconnect"] is False
    assert await raw.close_code() == 3501


async def test_malformed_json_is_a_bad_request(server: LiveServer) -> None:
    raw = await connected(server)
    await raw.ws.send("{nope")
    assert await raw.close_code() == 3501


async def test_server_pings_and_drops_a_client_that_never_pongs(make_server: Any) -> None:
    live = make_server(ping_interval=0.3)
    polite = await connected(live)
    silent = await connected(live)
    assert (await polite.push()) == {}  # a ping is the empty object
    await polite.ws.send("{}")
    assert (await silent.push()) == {}
    # The silent one is dropped at the next ping with "no pong", the polite one is not.
    assert await silent.close_code() == codes.NO_PONG.code == 3012
    assert (await polite.push()) == {}
    await polite.ws.send("{}")
    assert polite.ws.close_code is None
    await polite.close()


async def test_a_connection_that_never_connects_goes_stale(make_server: Any) -> None:
    live = make_server(ping_interval=0.3)
    raw = await Raw.open(live.ws_url)
    assert await raw.close_code() == codes.STALE.code


async def test_recovering_a_deleted_sessions_topic_ends_with_2001(server: LiveServer) -> None:
    """An admin who was away while a session was deleted recovers its last publication,
    and then the subscription ends as it does for those who were there."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.post("/api/sessions", json={}, headers=server.headers("alice"))
        sid = r.json()["id"]
    raw = await connected(server, "root", "admin")
    topic = f"session:{sid}"
    first = (await raw.call("subscribe", {"channel": topic}))["subscribe"]
    await raw.call("unsubscribe", {"channel": topic})
    hub = server.runtime.hub
    await server.call(hub.delete(await server.call(hub.store.get(sid))))
    since = {"offset": first.get("offset", 0), "epoch": first["epoch"]}
    reply = await raw.call("subscribe", {"channel": topic, "recover": True, **since})
    sub = reply["subscribe"]
    assert sub["recovered"] is True
    assert [p["data"]["type"] for p in sub["publications"]] == ["session.deleted"]
    push = await raw.push()
    assert push["push"] == {
        "channel": topic,
        "unsubscribe": {"code": 2001, "reason": "session deleted"},
    }
    assert server.realtime.stats()["subscriptions"] == 0
    await raw.close()


async def test_recover_from_another_epoch_is_not_recovered(server: LiveServer) -> None:
    await server.publish("user:alice", b'{"n":1}')
    raw = await connected(server)
    reply = await raw.call(
        "subscribe", {"channel": "user:alice", "recover": True, "offset": 0, "epoch": "gone"}
    )
    sub = reply["subscribe"]
    assert sub["was_recovering"] is True and sub["recovered"] is False
    assert "publications" not in sub and sub["offset"] == 1
    # With flag 2 the same request is refused with 112 instead.
    await raw.call("unsubscribe", {"channel": "user:alice"})
    reply = await raw.call(
        "subscribe",
        {"channel": "user:alice", "recover": True, "offset": 0, "epoch": "gone", "flag": 2},
    )
    assert reply["error"]["code"] == 112
    reply = await raw.call(
        "history", {"channel": "user:alice", "since": {"offset": 0, "epoch": "x"}}
    )
    assert reply["error"]["code"] == 112
    await raw.close()


async def test_snapshot_then_stream_is_gapless(server: LiveServer) -> None:
    """A REST snapshot tells the stream position; subscribing from it misses nothing."""
    h = server.headers("alice")
    async with httpx.AsyncClient(base_url=server.url, headers=h) as http:
        sid = (await http.post("/api/sessions", json={})).json()["id"]
        await http.patch(f"/api/sessions/{sid}", json={"metadata": {"n": 1}})
        snap = (await http.get(f"/api/sessions/{sid}")).json()
        listing = (await http.get("/api/sessions")).json()
        # Changes after the snapshot, before the subscription:
        await http.patch(f"/api/sessions/{sid}", json={"metadata": {"n": 2}})
        await http.patch(f"/api/sessions/{sid}", json={"metadata": {"n": 3}})
    stream = snap["stream"]
    assert stream["topic"] == f"session:{sid}" and stream["offset"] == snap["version"] == 2
    raw = await connected(server)
    reply = await raw.call(
        "subscribe",
        {
            "channel": stream["topic"],
            "recover": True,
            "offset": stream["offset"],
            "epoch": stream["epoch"],
        },
    )
    sub = reply["subscribe"]
    assert sub["recovered"] is True
    assert [p["data"]["version"] for p in sub["publications"]] == [3, 4]
    assert [p["offset"] for p in sub["publications"]] == [3, 4]
    ls = listing["stream"]
    reply = await raw.call(
        "subscribe",
        {"channel": ls["topic"], "recover": True, "offset": ls["offset"], "epoch": ls["epoch"]},
    )
    assert ls["topic"] == "user:alice"
    assert [p["data"]["version"] for p in reply["subscribe"]["publications"]] == [3, 4]
    await raw.close()


def _stalled_client(port: int, token: str) -> socket.socket:
    """A WebSocket client that connects, subscribes, and then never reads again: a small
    receive buffer so the server notices quickly."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    for cmd in (
        {"id": 1, "connect": {"token": token}},
        {"id": 2, "subscribe": {"channel": "user:alice"}},
    ):
        payload = orjson.dumps(cmd)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert 125 < len(payload) < 65536 or len(payload) <= 125
        head = (
            bytes((0x81, 0x80 | len(payload)))
            if len(payload) <= 125
            else bytes((0x81, 0x80 | 126)) + len(payload).to_bytes(2, "big")
        )
        s.sendall(head + mask + masked)
    return s


def _read_until_close(s: socket.socket) -> int | None:
    """Read what the server sent, frame by frame, up to its close frame; that frame's code."""
    s.settimeout(10)
    buf = b""
    pos = 0
    while True:
        while pos + 2 <= len(buf):
            op, n = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
            hdr = 2
            if n == 126:
                n, hdr = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif n == 127:
                n, hdr = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if pos + hdr + n > len(buf):
                break
            if op == 0x8:
                return int.from_bytes(buf[pos + hdr : pos + hdr + 2], "big")
            pos += hdr + n
        try:
            chunk = s.recv(1 << 20)
        except (ConnectionResetError, TimeoutError):
            return None
        if not chunk:
            return None
        buf += chunk


@pytest.mark.parametrize("engine", ["fast", "asgi"])
@pytest.mark.parametrize(
    "path",
    [
        # burst_window 0: every publication takes the latency path (written at once, a
        # slow reader found by the engine); a huge window: all but the first are queued
        # and coalesced per loop turn (a slow reader found at flush).
        pytest.param(0.0, id="direct"),
        pytest.param(1e9, id="coalesced"),
    ],
)
async def test_a_stalled_reader_is_dropped_and_never_slows_the_others(
    make_server: Any, engine: str, path: float
) -> None:
    live = make_server(engine, realtime_queue_bytes=256 * 1024, realtime_close_timeout=30.0)
    live.realtime.burst_window = path
    readers = [await connected(live) for _ in range(3)]
    for r in readers:
        assert "subscribe" in await r.call("subscribe", {"channel": "user:alice"})
    stalled = await asyncio.to_thread(_stalled_client, live.port, live.token("alice"))
    await until(lambda: live.realtime.stats()["subscriptions"] == 4, what="4 subscriptions")
    body = b'{"pad":"' + b"x" * 16000 + b'"}'
    count = 400  # ~6.4 MB: far more than the stalled socket's buffers hold

    async def drain(r: Raw) -> list[int]:
        offsets: list[int] = []
        while len(offsets) < count:
            msg = await r.push()
            if msg:
                offsets.append(msg["push"]["pub"]["offset"])
            else:
                await r.ws.send("{}")
        return offsets

    drains = [asyncio.create_task(drain(r)) for r in readers]
    for _ in range(count):
        await live.publish("user:alice", body)
    results = await asyncio.wait_for(asyncio.gather(*drains), 30)
    for offsets in results:
        assert offsets == list(range(1, count + 1))
    stats = live.realtime.stats()
    assert stats["slow_disconnects"] == 1
    assert stats["connections"] == 3
    # When it reads again, it finds what fitted, then the close frame: 3008 "slow".
    code = await asyncio.to_thread(_read_until_close, stalled)
    stalled.close()
    assert code == codes.SLOW.code == 3008
    for r in readers:
        await r.close()


async def test_metrics_export_the_realtime_counters(server: LiveServer) -> None:
    readers = [await connected(server) for _ in range(2)]
    for r in readers:
        assert "subscribe" in await r.call("subscribe", {"channel": "user:alice"})
    for n in range(3):
        await server.publish("user:alice", b'{"n":%d}' % n)
    for r in readers:
        assert [(await r.push())["push"]["pub"]["offset"] for _ in range(3)] == [1, 2, 3]
    async with httpx.AsyncClient(base_url=server.url) as http:
        text = (await http.get("/metrics")).text
    assert 'sessionhub_realtime_connections{transport="websocket"} 2.0' in text
    assert "sessionhub_realtime_subscriptions 2.0" in text
    assert "sessionhub_realtime_publications_total 3.0" in text
    assert "sessionhub_realtime_deliveries_total 6.0" in text
    assert "sessionhub_realtime_slow_disconnects_total 0.0" in text
    for r in readers:
        await r.close()


def _get(s: socket.socket) -> bytes:
    """One keep-alive GET, its whole response read; b"" if the server had closed."""
    s.sendall(b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += s.recv(65536)
    return head


async def test_idle_keep_alive_connections_last_as_configured(make_server: Any) -> None:
    """The server, not a client about to reuse it, must not be first to close an idle
    connection: it keeps one open for SESSIONHUB_HTTP_KEEP_ALIVE (75 s by default, longer
    than uvicorn's 5 s and than clients' own pool limits)."""
    assert Settings().http_keep_alive == 75.0
    short = make_server(http_keep_alive=1.0)
    longer = make_server(http_keep_alive=4.0)

    def idle_then_reuse(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            assert _get(s).startswith(b"HTTP/1.1 200")
            time.sleep(2.0)
            try:
                return _get(s)
            except ConnectionError:
                return b""

    closed, kept = await asyncio.gather(
        asyncio.to_thread(idle_then_reuse, short.port),
        asyncio.to_thread(idle_then_reuse, longer.port),
    )
    assert closed == b"", "an idle connection outlived a 1 s keep-alive"
    assert kept.startswith(b"HTTP/1.1 200"), "a 4 s keep-alive closed after 2 s"


async def test_other_websocket_paths_reach_the_asgi_app(tmp_path: Any) -> None:
    """The fast engine serves /connection/websocket only; other paths are uvicorn's."""

    live = LiveServer(make_settings(tmp_path), engine="fast")

    @live.app.websocket("/echo-test")
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("echo:" + await ws.receive_text())
        await ws.close()

    live.start()
    try:
        async with websockets.connect(f"ws://127.0.0.1:{live.port}/echo-test") as ws:
            await ws.send("hi")
            assert await ws.recv() == "echo:hi"
        raw = await connected(live)
        assert raw.ws.response is not None
        assert raw.ws.response.headers.get("server") == "sessionhub"
        await raw.close()
    finally:
        live.stop()
