"""SSE: ``GET /api/stream`` with httpx against a real server — events, ids, permissions,
keep-alive, and resumption with ``Last-Event-ID``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from .conftest import LiveServer

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
