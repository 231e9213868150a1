"""Resuming after a real restart, with every form of position: never a silent gap.

A real ``sessionhub serve`` (memory broker, SQLite) is SIGKILLed and started again on the
same data and port: the broker's history is gone and every topic has a new epoch, so a
position from before the restart can prove nothing. Each way of coming back must say so
(``unrecovered`` on SSE, ``recovered: false`` on the WebSocket, ``Recovery(False)`` in the
Python client) or, for a position the new epoch does know, deliver exactly what was missed:

* SSE ``Last-Event-ID``: ``<offset>:<epoch>`` (old and new epoch), a bare ``<offset>``,
  junk (``garbage``, ``-1:x``, ``sessions@3``) and the several-topic form;
* the WebSocket ``subscribe`` with ``recover``: with the old epoch, without one, and with
  the new one;
* the client library: a ``RealtimeClient`` live across the restart (it reconnects by
  itself), one subscribing ``since`` an old position, and ``follow()`` of a session changed
  on both sides of the restart (it reloads the snapshot instead of carrying on past a hole).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from tests.processes import SECRET, Server

from sessionhub.auth import Authenticator
from sessionhub.client import (
    Backoff,
    Publication,
    RealtimeClient,
    Recovery,
    SessionHubClient,
    SessionUpdate,
    follow,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

AUTH = Authenticator(secret=SECRET)
ALICE = AUTH.issue("alice", [])
HEADERS = {"Authorization": f"Bearer {ALICE}"}


@dataclass
class Event:
    kind: str
    data: Any
    id: str | None


async def sse_events(
    url: str, topics: str, last_id: str | None, count: int, wait: float = 10.0
) -> list[Event]:
    """The first ``count`` events of a stream (``Last-Event-ID`` sent if given); fewer if
    no more came within ``wait`` seconds (the caller's assertion then shows what did)."""
    headers = dict(HEADERS)
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    out: list[Event] = []
    async with (
        httpx.AsyncClient(base_url=url, timeout=wait) as http,
        http.stream("GET", "/api/stream", params={"topics": topics}, headers=headers) as r,
    ):
        assert r.status_code == 200, await r.aread()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await _read(r, out, count)
    return out


async def _read(r: httpx.Response, out: list[Event], count: int) -> None:
    """Parse ``text/event-stream`` lines into ``out`` until it holds ``count`` events."""
    kind, data, ident = "message", "", None
    async for line in r.aiter_lines():
        if line.startswith(":") or line.startswith("retry:"):
            continue
        if not line:
            if data:
                out.append(Event(kind, orjson.loads(data), ident))
                if len(out) >= count:
                    return
            kind, data, ident = "message", "", None
            continue
        name, _, value = line.partition(": ")
        if name == "event":
            kind = value
        elif name == "data":
            data += value
        elif name == "id":
            ident = value


async def ws_subscribe(port: int, params: dict[str, Any]) -> dict[str, Any]:
    """Connect as alice and subscribe with ``params``; the subscribe reply's result."""
    url = f"ws://127.0.0.1:{port}/connection/websocket"
    async with websockets.connect(url, open_timeout=5) as ws:
        await ws.send(orjson.dumps({"id": 1, "connect": {"token": ALICE}}).decode())
        await asyncio.wait_for(ws.recv(), 5)
        await ws.send(orjson.dumps({"id": 2, "subscribe": params}).decode())
        for _ in range(20):  # bounded: the reply comes among at most a few pushes
            for line in str(await asyncio.wait_for(ws.recv(), 5)).split("\n"):
                msg = orjson.loads(line)
                if msg.get("id") == 2:
                    result: dict[str, Any] = msg["subscribe"]
                    return result
    raise AssertionError("no subscribe reply")


async def change(url: str, sid: str, n: int) -> int:
    """``n`` changes of session ``sid``; its version after them."""
    version = 0
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=10) as http:
        for i in range(n):
            r = await http.patch(f"/api/sessions/{sid}", json={"metadata": {"step": i}})
            assert r.status_code == 200, r.text
            version = r.json()["version"]
    return version


class Collector:
    """Everything a subscription yields, in order, from a task of its own."""

    def __init__(self, source: AsyncIterator[Any]) -> None:
        self.items: list[Any] = []
        self.error: BaseException | None = None
        self._task = asyncio.ensure_future(self._run(source))

    async def _run(self, source: AsyncIterator[Any]) -> None:
        try:
            async for item in source:
                self.items.append(item)
        except Exception as exc:
            self.error = exc

    async def wait_for(self, pred: Any, what: str, wait: float = 15.0) -> None:
        async with asyncio.timeout(wait):
            while not pred(self.items):  # bounded by the timeout
                assert self.error is None, self.error
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task


async def test_every_position_form_after_a_sigkill_and_restart(
    tmp_path: Path, servers: list[Server]
) -> None:
    data = tmp_path / "data"
    env = {"SESSIONHUB_LOG_LEVEL": "warning", "SESSIONHUB_PING_INTERVAL": "2"}
    first = Server(data, None, tmp_path / "first.log", env=env)
    servers.append(first)
    await first.wait_ready()
    ws_url = f"ws://127.0.0.1:{first.port}/connection/websocket"

    async with SessionHubClient(first.url, token=ALICE) as api:
        sid = (await api.create_session("generic"))["id"]
    await change(first.url, sid, 2)  # user:alice and session:<sid> at offset 3
    (subscribed,) = await sse_events(first.url, "user:alice", None, 1)
    assert subscribed.kind == "subscribed" and subscribed.data["offset"] == 3
    old_epoch = subscribed.data["epoch"]

    # Clients that live through the restart.
    backoff = Backoff(base=0.1, cap=0.5, jitter=0.1)
    rt = RealtimeClient(ws_url, ALICE, backoff=backoff, max_attempts=50, command_timeout=5)
    await rt.connect()
    live_sub = await rt.subscribe("user:alice", since=(3, old_epoch))
    live = Collector(live_sub)
    await live.wait_for(lambda items: len(items) >= 1, "the first recovery")
    assert live.items[0] == Recovery("user:alice", True, 0, 3, old_epoch)
    api = SessionHubClient(first.url, token=ALICE)
    rt_follow = RealtimeClient(ws_url, ALICE, backoff=backoff, max_attempts=50, command_timeout=5)
    await rt_follow.connect()
    followed = Collector(follow(api, rt_follow, sid))
    await followed.wait_for(lambda items: len(items) >= 1, "the snapshot")
    await change(first.url, sid, 1)  # version 4, seen live by both
    await live.wait_for(lambda items: len(items) >= 2, "a live publication")
    await followed.wait_for(lambda items: items[-1].version == 4, "version 4")

    first.kill()
    second = Server(data, None, tmp_path / "second.log", env=env, port=first.port)
    servers.append(second)
    await second.wait_ready()
    # Versions 5..7 in a new epoch. (What the outbox republished - events committed before
    # the kill but not yet marked published - comes first, under new offsets: the same
    # session and version, so subscribers drop it as a repeat.)
    final = await change(second.url, sid, 3)
    new = (await sse_events(second.url, "user:alice", None, 1))[0].data
    assert new["epoch"] != old_epoch and new["offset"] >= 3
    top = new["offset"]

    # -- SSE -------------------------------------------------------------------------------
    for last_id, reason in [
        (f"3:{old_epoch}", "no longer kept"),  # the old epoch: its history is gone
        ("3", "without an epoch"),  # the bare offset issue 13 found passing as recovered
        ("garbage", "not a position"),
        ("-1:x", "not a position"),
        ("sessions@3", "not a position"),
    ]:
        got = await sse_events(second.url, "user:alice", last_id, 2)
        assert [e.kind for e in got] == ["unrecovered", "subscribed"], (last_id, got)
        assert reason in got[0].data["reason"], (last_id, got[0].data)
        assert got[1].data["recovered"] is False and got[1].data["epoch"] == new["epoch"]
    several = f"user:alice@3:{old_epoch} session:{sid}@3:{old_epoch}"
    got = await sse_events(second.url, f"user:alice,session:{sid}", several, 4)
    assert [e.kind for e in got] == ["unrecovered", "subscribed", "unrecovered", "subscribed"]
    assert {e.data["topic"] for e in got} == {"user:alice", f"session:{sid}"}
    # A position the new epoch knows: exactly what followed it.
    got = await sse_events(second.url, "user:alice", f"1:{new['epoch']}", top)
    assert [e.kind for e in got] == ["subscribed"] + ["pub"] * (top - 1)
    assert got[0].data["recovered"] is True and got[0].data["missed"] == top - 1
    assert [e.data["offset"] for e in got[1:]] == list(range(2, top + 1))

    # -- the WebSocket protocol -----------------------------------------------------------
    old = await ws_subscribe(
        second.port, {"channel": "user:alice", "recover": True, "offset": 3, "epoch": old_epoch}
    )
    assert old["was_recovering"] and old["recovered"] is False and old["epoch"] == new["epoch"]
    bare = await ws_subscribe(second.port, {"channel": "user:alice", "recover": True, "offset": 3})
    assert bare["recovered"] is False
    ok = await ws_subscribe(
        second.port,
        {"channel": "user:alice", "recover": True, "offset": 1, "epoch": new["epoch"]},
    )
    assert ok["recovered"] is True
    assert [p["offset"] for p in ok["publications"]] == list(range(2, top + 1))

    # -- the client library ---------------------------------------------------------------
    def told_of_the_gap(items: list[Any]) -> bool:
        return any(isinstance(i, Recovery) and not i.recovered for i in items)

    await live.wait_for(told_of_the_gap, "the reconnect's Recovery(False)")
    await followed.wait_for(lambda items: items[-1].version == final, f"version {final}")
    final = await change(second.url, sid, 1)  # and live again after the gap
    await live.wait_for(
        lambda items: isinstance(items[-1], Publication) and items[-1].data["version"] == final,
        f"version {final} live",
    )
    recoveries = [i for i in live.items if isinstance(i, Recovery)]
    assert recoveries[-1].recovered is False and recoveries[-1].epoch == new["epoch"]
    # Each change once, even if the outbox published some again after the restart.
    seen = [
        (p.data["session_id"], p.data["version"]) for p in live.items if isinstance(p, Publication)
    ]
    assert len(seen) == len(set(seen)), seen
    # Nothing of the new epoch reached the subscriber before it was told of the gap.
    gap = live.items.index(recoveries[-1])
    assert all(isinstance(i, Recovery) or i.epoch == old_epoch for i in live.items[:gap])
    fresh = RealtimeClient(ws_url, ALICE, backoff=backoff, command_timeout=5)
    await fresh.connect()
    sub = await fresh.subscribe("user:alice", since=(3, old_epoch))
    first_item = await sub.get(5)
    assert isinstance(first_item, Recovery) and first_item.recovered is False
    await fresh.aclose()

    await followed.wait_for(lambda items: items[-1].version == final, f"version {final}")
    updates: list[SessionUpdate] = followed.items
    versions = [u.version for u in updates]
    assert versions == sorted(set(versions)), versions  # no repeats, in order
    # Every jump over a missed version is a reloaded snapshot (event None), never silent.
    for prev, cur in itertools.pairwise(updates):
        assert cur.version == prev.version + 1 or cur.event is None, (prev.version, cur)

    await live.stop()
    await followed.stop()
    await rt.aclose()
    await rt_follow.aclose()
    await api.aclose()


async def test_a_republished_event_reaches_a_subscriber_once(tmp_path: Path) -> None:
    """What a crash does to a subscriber (issue 13, finding 6): the same event published
    again under a new offset. Its identity is (session_id, version): the client library
    delivers it once; an event of a newer version, or of another session, still arrives."""
    from tests.live import LiveServer, make_settings

    live = LiveServer(make_settings(tmp_path)).start()
    try:
        rt = RealtimeClient(live.ws_url, live.token("alice"), command_timeout=5)
        await rt.connect()
        sub = await rt.subscribe("user:alice")

        def event(sid: str, version: int) -> bytes:
            return orjson.dumps({"type": "session.updated", "session_id": sid, "version": version})

        for sid, version in [("s1", 1), ("s1", 2), ("s1", 2), ("s2", 1), ("s1", 1), ("s1", 3)]:
            await live.publish("user:alice", event(sid, version))
        got = [await sub.get(5) for _ in range(4)]
        assert [(p.data["session_id"], p.data["version"]) for p in got] == [
            ("s1", 1),
            ("s1", 2),
            ("s2", 1),
            ("s1", 3),
        ]
        assert [p.offset for p in got] == [1, 2, 4, 6]  # the repeats had offsets of their own
        await rt.aclose()
    finally:
        live.stop()
