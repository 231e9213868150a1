"""SSE: ``GET /api/stream`` with httpx against a real server — events, ids, permissions,
keep-alive, and resumption with ``Last-Event-ID``."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from tests.live import LiveServer

from .helpers import until

pytestmark = pytest.mark.slow


@dataclass
class Event:
    kind: str
    data: Any
    id: str | None


class Reader:
    """Parses a ``text/event-stream`` response into events (and counts comments)."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()
        self.comments = 0
        self.last_id: str | None = None

    async def next(self, wait: float = 10.0) -> Event:
        async with asyncio.timeout(wait):
            kind, data, ident = "message", "", None
            async for line in self.lines:
                if line.startswith(":"):
                    self.comments += 1
                    continue
                if not line:
                    if data or kind != "message":
                        if ident is not None:
                            self.last_id = ident
                        return Event(kind, orjson.loads(data) if data else None, ident)
                    continue
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    kind = value
                elif field == "data":
                    data += value
                elif field == "id":
                    ident = value
            raise AssertionError("stream ended")

    async def until(self, kind: str) -> Event:
        for _ in range(100):
            ev = await self.next()
            if ev.kind == kind:
                return ev
        raise AssertionError(f"no {kind} event")


@asynccontextmanager
async def sse(
    live: LiveServer, topics: str, headers: dict[str, str] | None = None, **params: str
) -> AsyncIterator[tuple[httpx.Response, Reader]]:
    async with (
        httpx.AsyncClient(base_url=live.url, timeout=10) as http,
        http.stream(
            "GET", "/api/stream", params={"topics": topics, **params}, headers=headers
        ) as r,
    ):
        yield r, Reader(r)


@pytest.fixture
def live(server: LiveServer) -> LiveServer:
    return server


async def test_events_arrive_with_offsets_as_ids(make_server: Any) -> None:
    live = make_server()
    async with sse(live, "user:alice", live.headers("alice")) as (r, events):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        sub = await events.until("subscribed")
        epoch = sub.data["epoch"]
        assert sub.data == {
            "topic": "user:alice",
            "offset": 0,
            "epoch": epoch,
            "recovered": None,
            "missed": 0,
        }
        assert sub.id == f"0:{epoch}"
        async with httpx.AsyncClient(base_url=live.url, headers=live.headers("alice")) as http:
            sid = (await http.post("/api/sessions", json={})).json()["id"]
            await http.post(f"/api/sessions/{sid}/actions/end", json={})
        first = await events.until("pub")
        second = await events.until("pub")
        assert (first.id, second.id) == (f"1:{epoch}", f"2:{epoch}")
        assert first.data["topic"] == "user:alice" and first.data["offset"] == 1
        assert first.data["data"]["type"] == "session.created"
        assert second.data["data"]["data"]["session"]["state"] == "ended"


async def test_resume_with_last_event_id_gets_exactly_the_missed(make_server: Any) -> None:
    live = make_server()
    h = live.headers("alice")
    async with sse(live, "user:alice", h) as (_, events):
        await events.until("subscribed")
        for i in range(2):
            await live.publish("user:alice", b'{"n":%d}' % i)
        await events.until("pub")
        last = (await events.until("pub")).id
    for i in range(2, 5):  # while away
        await live.publish("user:alice", b'{"n":%d}' % i)
    assert last is not None
    async with sse(live, "user:alice", {**h, "Last-Event-ID": last}) as (_, events):
        sub = await events.until("subscribed")
        assert sub.data["recovered"] is True and sub.data["missed"] == 3
        got = [(await events.until("pub")).data["data"]["n"] for _ in range(3)]
        assert got == [2, 3, 4]
        await live.publish("user:alice", b'{"n":"live"}')
        assert (await events.until("pub")).data["data"] == {"n": "live"}


async def test_resume_out_of_the_window_says_so(make_server: Any) -> None:
    live = make_server(history_size=2)
    h = live.headers("alice")
    async with sse(live, "user:alice", h) as (_, events):
        await events.until("subscribed")
        await live.publish("user:alice", b'{"n":0}')
        last = (await events.until("pub")).id
    for i in range(1, 6):
        await live.publish("user:alice", b'{"n":%d}' % i)
    assert last is not None
    async with sse(live, "user:alice", {**h, "Last-Event-ID": last}) as (_, events):
        lost = await events.next()
        assert lost.kind == "unrecovered"
        assert lost.data["since"]["offset"] == 1 and lost.data["offset"] == 6
        sub = await events.next()
        assert sub.kind == "subscribed" and sub.data["recovered"] is False
        epoch = sub.data["epoch"]
        assert sub.id == f"6:{epoch}"
    # Another epoch (the history was lost) is just as explicit.
    async with sse(live, "user:alice", h, last_event_id="3:deadbeef") as (_, events):
        assert (await events.next()).kind == "unrecovered"


async def test_several_topics_share_one_resumable_id(make_server: Any) -> None:
    live = make_server()
    h = live.headers("root", "admin")
    topics = "user:alice,user:bob"
    async with sse(live, topics, h) as (_, events):
        await events.until("subscribed")
        await events.until("subscribed")
        await live.publish("user:alice", b'{"n":"a1"}')
        await live.publish("user:bob", b'{"n":"b1"}')
        await events.until("pub")
        last = (await events.until("pub")).id
    assert last is not None and "user:alice@1:" in last and "user:bob@1:" in last
    await live.publish("user:bob", b'{"n":"b2"}')
    await live.publish("user:alice", b'{"n":"a2"}')
    async with sse(live, topics, {**h, "Last-Event-ID": last}) as (_, events):
        got = [(await events.until("pub")).data["data"]["n"] for _ in range(2)]
        assert sorted(got) == ["a2", "b2"]


async def test_permissions_and_token_in_the_query(live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live.url) as http:
        r = await http.get(
            "/api/stream", params={"topics": "user:bob"}, headers=live.headers("alice")
        )
        assert r.status_code == 403
        assert r.headers["content-type"].startswith("application/problem+json")
        r = await http.get("/api/stream", params={"topics": "user:alice"})
        assert r.status_code == 401
        r = await http.get("/api/stream", params={"topics": "bad topic"}, headers=live.headers("a"))
        assert r.status_code == 422
    async with sse(live, "user:alice", token=live.token("alice")) as (r, events):
        assert r.status_code == 200
        assert (await events.next()).kind == "subscribed"


async def test_idle_streams_get_keep_alive_comments(make_server: Any) -> None:
    live = make_server(ping_interval=0.2)
    async with sse(live, "user:alice", live.headers("alice")) as (_, events):
        await events.until("subscribed")
        await asyncio.sleep(1.0)  # idle for several keep-alive intervals
        await live.publish("user:alice", b'{"n":1}')
        await events.until("pub")
        assert events.comments >= 2, "keep-alive comments while idle"


async def test_open_streams_are_counted_in_stats_and_metrics(make_server: Any) -> None:
    live = make_server()
    h = live.headers("alice")
    async with sse(live, "user:alice", h) as (_, one), sse(live, "user:alice", h) as (_, two):
        await one.until("subscribed")
        await two.until("subscribed")
        assert live.realtime.stats()["sse_streams"] == 2
        async with httpx.AsyncClient(base_url=live.url) as http:
            text = (await http.get("/metrics")).text
        assert 'sessionhub_realtime_connections{transport="sse"} 2.0' in text
        assert 'sessionhub_realtime_connections{transport="websocket"} 0.0' in text
    await until(lambda: live.realtime.stats()["sse_streams"] == 0, what="streams closed")


def _stalled_stream(port: int, token: str) -> socket.socket:
    """An SSE request whose reader never reads (a small buffer: the server notices soon)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(
        f"GET /api/stream?topics=user:alice&token={token} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n\r\n".encode()
    )
    return s


async def test_a_stalled_stream_is_cut_off_with_3008_and_counted(make_server: Any) -> None:
    live = make_server()
    stalled = await asyncio.to_thread(_stalled_stream, live.port, live.token("alice"))
    await until(lambda: live.realtime.stats()["sse_streams"] == 1, what="the stream to open")
    body = b'{"pad":"' + b"x" * 16000 + b'"}'
    for _ in range(600):  # ~9.6 MB: more than the socket buffers and the 1 MiB queue hold
        await live.publish("user:alice", body)
    await until(lambda: live.realtime.stats()["slow_disconnects"] == 1, what="a slow cut-off")

    def read_all() -> bytes:
        """Read up to the stream's last event (the connection itself stays open for reuse)."""
        stalled.settimeout(10)
        out = b""
        while not out.endswith(b"\r\n0\r\n\r\n"):  # the last chunk of a chunked body
            chunk = stalled.recv(1 << 20)
            if not chunk:
                break
            out += chunk
        return out

    got = await asyncio.to_thread(read_all)
    stalled.close()
    assert b'event: disconnect\ndata: {"code":3008,"reason":"slow"}' in got
    await until(lambda: live.realtime.stats()["sse_streams"] == 0, what="the stream to end")


async def test_a_stream_ends_with_3005_when_its_token_expires(make_server: Any) -> None:
    live = make_server()
    short = live.token("alice", ttl=timedelta(seconds=2))
    async with sse(live, "user:alice", token=short) as (_, events):
        await events.until("subscribed")
        await live.publish("user:alice", b'{"n":1}')
        last = (await events.until("pub")).id
        ended = await events.until("disconnect")
        assert ended.data == {"code": 3005, "reason": "connection expired"}
        with pytest.raises(AssertionError, match="stream ended"):
            await events.next(wait=5)
    await live.publish("user:alice", b'{"n":2}')
    # Back with a fresh token and the last id: nothing lost.
    fresh = live.headers("alice")
    async with sse(live, "user:alice", {**fresh, "Last-Event-ID": last or ""}) as (_, events):
        assert (await events.until("subscribed")).data["recovered"] is True
        assert (await events.until("pub")).data["data"] == {"n": 2}
