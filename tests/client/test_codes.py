"""The client's reactions to codes, against a scripted WebSocket server on 127.0.0.1: the
reconnect decision for every disconnect code of the shared table, and how a subscription
reacts to a gap it sees and to unsubscribe pushes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from tests.live import until
from websockets.asyncio.server import ServerConnection, serve

from sessionhub.client import (
    Backoff,
    Disconnected,
    Publication,
    RealtimeClient,
    Recovery,
    Unsubscribed,
    should_reconnect,
)
from sessionhub.core import codes

Script = Callable[[ServerConnection, dict[str, Any], int], Awaitable[None]]
QUICK = Backoff(base=0.01, cap=0.02)


class Fake:
    """Answers ``connect``; every command also goes to ``script(ws, msg, connection no)``."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.received: list[dict[str, Any]] = []
        self.url = ""

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        n = self.connections
        async for frame in ws:
            for line in str(frame).split("\n"):
                msg = orjson.loads(line)
                self.received.append(msg)
                if "connect" in msg:
                    result = {"client": f"c{n}", "version": "fake", "ping": 25, "pong": True}
                    await ws.send(orjson.dumps({"id": msg["id"], "connect": result}).decode())
                await self.script(ws, msg, n)


@asynccontextmanager
async def fake_server(script: Script) -> AsyncIterator[Fake]:
    fake = Fake(script)
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        fake.url = f"ws://127.0.0.1:{port}/connection/websocket"
        yield fake


def send(ws: ServerConnection, obj: dict[str, Any]) -> Awaitable[None]:
    return ws.send(orjson.dumps(obj).decode())


DISCONNECTS = [c for c in codes.ALL if c.family is codes.Family.DISCONNECT]


@pytest.mark.parametrize("code", DISCONNECTS, ids=lambda c: f"{c.code}-{c.name}")
async def test_reconnect_decision_follows_the_shared_table(code: codes.Code) -> None:
    async def script(ws: ServerConnection, msg: dict[str, Any], n: int) -> None:
        if "connect" in msg and n == 1:
            push = {"disconnect": {"code": code.code, "reason": code.message}}
            await send(ws, {"push": push})
            await ws.close(code.code, code.message)

    async with fake_server(script) as fake:
        rt = RealtimeClient(fake.url, "token", backoff=QUICK, max_attempts=3)
        try:
            await rt.connect()
            if code.retry:
                await until(lambda: rt.connections == 2, what="a reconnect")
                assert rt.closes[0] == (code.code, code.message)
            else:
                with pytest.raises(Disconnected) as stop:
                    await asyncio.wait_for(rt.wait_closed(), 10)
                assert (stop.value.code, stop.value.reason) == (code.code, code.message)
                assert fake.connections == 1 and rt.attempts == 1
            assert should_reconnect(code.code) is code.retry
        finally:
            await rt.aclose()


@pytest.mark.parametrize(
    ("number", "reconnects"),
    [(1001, True), (1011, True), (3999, False), (4000, True), (4499, True), (4500, False)],
)
def test_codes_outside_the_table_follow_its_ranges(number: int, reconnects: bool) -> None:
    assert codes.lookup(number) is None
    assert should_reconnect(number) is reconnects


async def test_a_gap_seen_by_the_client_is_recovered_and_unsubscribe_pushes() -> None:
    def pub(offset: int) -> dict[str, Any]:
        return {"push": {"channel": "t", "pub": {"data": {"n": offset}, "offset": offset}}}

    async def script(ws: ServerConnection, msg: dict[str, Any], n: int) -> None:
        if "subscribe" in msg and not msg["subscribe"].get("recover"):
            result = {"recoverable": True, "positioned": True, "epoch": "e", "offset": 0}
            await send(ws, {"id": msg["id"], "subscribe": result})
            await send(ws, pub(1))
            await send(ws, pub(3))  # 2 never came
        elif "subscribe" in msg and msg["subscribe"]["offset"] == 1:
            result = {"epoch": "e", "offset": 3, "was_recovering": True, "recovered": True}
            result["publications"] = [
                {"data": {"n": 2}, "offset": 2},
                {"data": {"n": 3}, "offset": 3},
            ]
            await send(ws, {"id": msg["id"], "subscribe": result})
            # The server asks to resubscribe (2500)...
            unsub = {"code": codes.UNSUBSCRIBE_INSUFFICIENT.code, "reason": "insufficient state"}
            await send(ws, {"push": {"channel": "t", "unsubscribe": unsub}})
        elif "subscribe" in msg and msg["subscribe"]["offset"] == 3:
            result = {"epoch": "e", "offset": 3, "was_recovering": True, "recovered": True}
            await send(ws, {"id": msg["id"], "subscribe": result})
            await send(ws, pub(3))  # a repeat: dropped
            await send(ws, pub(4))
            # ...then ends the subscription for good (2000).
            unsub = {"code": codes.UNSUBSCRIBE_SERVER.code, "reason": "server unsubscribe"}
            await send(ws, {"push": {"channel": "t", "unsubscribe": unsub}})
        elif "unsubscribe" in msg:
            await send(ws, {"id": msg["id"], "unsubscribe": {}})

    async with fake_server(script) as fake:
        async with RealtimeClient(fake.url, "token", backoff=QUICK) as rt:
            sub = await rt.subscribe("t")
            items: list[Publication | Recovery] = []
            with pytest.raises(Unsubscribed) as ended:
                for _ in range(20):
                    items.append(await sub.get(10))
            assert ended.value.code == codes.UNSUBSCRIBE_SERVER.code
        shown = [
            (i.offset, i.data["n"]) if isinstance(i, Publication) else ("recovery", i.missed)
            for i in items
        ]
        assert shown == [(1, 1), ("recovery", 2), (2, 2), (3, 3), ("recovery", 0), (4, 4)]
        sent = [m for m in fake.received if "subscribe" in m or "unsubscribe" in m]
        assert [next(k for k in m if k != "id") for m in sent] == [
            "subscribe",
            "unsubscribe",  # the client dropped the gapped stream before recovering
            "subscribe",
            "subscribe",
        ]
        assert sent[2]["subscribe"] == {"channel": "t", "recover": True, "offset": 1, "epoch": "e"}


def test_backoff_is_bounded_and_jittered() -> None:
    b = Backoff(base=0.1, cap=1.0, jitter=0.5, rng=lambda: 1.0)
    assert [b.delay(n) for n in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
    assert Backoff(base=0.1, cap=1.0, jitter=0.5, rng=lambda: 0.0).delay(100) == 1.0
    with pytest.raises(ValueError):
        Backoff(jitter=2)
