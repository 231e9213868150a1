"""The realtime client against a real server: ordered publications, typed refusals,
reconnect-and-recover across an outage, an explicit unrecovered gap, final codes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from tests.live import LiveServer, until
from tests.realtime.helpers import Proxy

from sessionhub.client import (
    Backoff,
    Disconnected,
    PermissionDenied,
    Publication,
    RealtimeClient,
    Recovery,
    SessionHubClient,
    Subscription,
    follow,
)
from sessionhub.core import codes
from sessionhub.core.codes import Code

pytestmark = pytest.mark.slow

FAST = Backoff(base=0.02, cap=0.2, jitter=0.5)


def force_disconnect(live: LiveServer, client_id: str, code: Code) -> None:
    """End one connection from the server side, on the server's loop."""
    assert live.loop is not None
    live.loop.call_soon_threadsafe(live.realtime.clients[client_id].disconnect, code)


async def take(sub: Subscription, n: int) -> list[Publication | Recovery]:
    return [await sub.get(10) for _ in range(n)]


def pubs(items: list[Publication | Recovery]) -> list[Publication]:
    assert all(isinstance(i, Publication) for i in items), items
    return [i for i in items if isinstance(i, Publication)]


async def test_publications_arrive_in_order(live: LiveServer) -> None:
    async with (
        RealtimeClient(live.ws_url, live.token("rt-order")) as rt,
        SessionHubClient(live.url, token=live.token("rt-order")) as rest,
    ):
        assert rt.client_id and rt.connected
        sub = await rt.subscribe("user:rt-order")
        s = await rest.create_session()
        for i in range(3):
            await rest.update(s["id"], metadata={"i": i})
        await rest.act(s["id"], "end")
        got = pubs(await take(sub, 5))
        assert [p.data["version"] for p in got] == [1, 2, 3, 4, 5]
        assert got[0].data["type"] == "session.created"
        assert got[-1].data["data"]["session"]["state"] == "ended"
        offsets = [p.offset for p in got]
        assert offsets == list(range(offsets[0], offsets[0] + 5))
        assert sub.offset == offsets[-1] and sub.epoch == got[0].epoch != ""


async def test_refused_subscribe_is_typed_and_the_connection_stays(live: LiveServer) -> None:
    async with (
        RealtimeClient(live.ws_url, live.token("rt-carol")) as rt,
        SessionHubClient(live.url, token=live.token("rt-carol")) as rest,
    ):
        with pytest.raises(PermissionDenied) as denied:
            await rt.subscribe("user:someone-else")
        assert denied.value.code == codes.PERMISSION_DENIED.code
        assert denied.value.entry is codes.PERMISSION_DENIED and not denied.value.temporary
        # Same connection, still usable.
        sub = await rt.subscribe("user:rt-carol")
        await rest.create_session()
        (pub,) = pubs(await take(sub, 1))
        assert pub.data["owner"] == "rt-carol" and rt.connections == 1 and rt.attempts == 1
        assert (
            "client"
            in (await rt.call("presence", {"channel": "user:rt-carol"}))["presence"][
                rt.client_id or ""
            ]
        )


async def test_reconnect_code_reconnects_and_recovers_what_was_missed(live: LiveServer) -> None:
    proxy = await Proxy(live.port).start()
    rt = RealtimeClient(proxy.ws_url, live.token("rt-dave"), backoff=FAST, max_attempts=100)
    try:
        await rt.connect()
        sub = await rt.subscribe("user:rt-dave")
        async with SessionHubClient(live.url, token=live.token("rt-dave")) as rest:
            s = await rest.create_session()
            (first,) = pubs(await take(sub, 1))
            # Refuse new connections, then have the server drop ours with 3011 (reconnect):
            # the client keeps trying while three changes happen without it.
            proxy.up = False
            first_id = rt.client_id or ""
            force_disconnect(live, first_id, codes.FORCE_RECONNECT)
            await until(lambda: not rt.connected, what="the disconnect")
            assert rt.closes[0][0] == codes.FORCE_RECONNECT.code
            for i in range(3):
                await rest.update(s["id"], metadata={"i": i})
            await until(lambda: rt.attempts >= 3, what="reconnect attempts")
            proxy.restore()
            recovery, *missed = await take(sub, 4)
            assert isinstance(recovery, Recovery) and recovery.recovered and recovery.missed == 3
            assert [p.data["version"] for p in pubs(missed)] == [2, 3, 4]
            assert [p.offset for p in pubs(missed)] == [first.offset + i for i in (1, 2, 3)]
            assert rt.connections == 2 and rt.client_id != first_id and sub.recovered is True
            # And live publications carry on after the recovered ones, no gap, no repeat.
            await rest.act(s["id"], "end")
            (live_pub,) = pubs(await take(sub, 1))
            assert live_pub.data["version"] == 5 and live_pub.offset == first.offset + 4
    finally:
        await rt.aclose()
        await proxy.close()


async def test_unrecoverable_gap_is_surfaced_not_skipped(
    fresh_server: Callable[..., LiveServer],
) -> None:
    live = fresh_server(history_size=2)
    proxy = await Proxy(live.port).start()
    rt = RealtimeClient(proxy.ws_url, live.token("rt-erin"), backoff=FAST, max_attempts=100)
    try:
        await rt.connect()
        sub = await rt.subscribe("user:rt-erin")
        async with SessionHubClient(live.url, token=live.token("rt-erin")) as rest:
            s = await rest.create_session()
            await take(sub, 1)
            proxy.cut()  # the network fails: no close code at all (1006), so reconnect
            for i in range(4):  # more than the 2 publications the topic keeps
                await rest.update(s["id"], metadata={"i": i})
            proxy.restore()
            recovery = await sub.get(10)
            assert isinstance(recovery, Recovery) and recovery.recovered is False
            assert sub.recovered is False and recovery.missed == 0
            assert rt.closes[0][0] == 1006
            await rest.act(s["id"], "end")
            (pub,) = pubs(await take(sub, 1))
            assert pub.data["version"] == 6 and pub.offset == recovery.offset + 1
    finally:
        await rt.aclose()
        await proxy.close()


async def test_a_bad_token_is_final_and_never_retried(live: LiveServer) -> None:
    rt = RealtimeClient(live.ws_url, "not-a-token", backoff=FAST, max_attempts=5)
    with pytest.raises(Disconnected) as stop:
        await rt.connect()
    assert stop.value.code == codes.INVALID_TOKEN.code == 3500
    assert stop.value.reconnect is False and not stop.value.gave_up
    assert rt.attempts == 1 and rt.connections == 0
    with pytest.raises(Disconnected):
        await rt.subscribe("user:x")
    await rt.aclose()


async def test_a_final_disconnect_ends_subscriptions(live: LiveServer) -> None:
    rt = RealtimeClient(live.ws_url, live.token("rt-frank"), backoff=FAST)
    try:
        await rt.connect()
        sub = await rt.subscribe("user:rt-frank")
        force_disconnect(live, rt.client_id or "", codes.FORCE_DISCONNECT)
        with pytest.raises(Disconnected) as stop:
            await sub.get(10)
        assert stop.value.code == codes.FORCE_DISCONNECT.code and not stop.value.reconnect
        with pytest.raises(Disconnected):
            await asyncio.wait_for(rt.wait_closed(), 10)
        assert rt.attempts == 1
    finally:
        await rt.aclose()


async def test_follow_is_gapless_and_skips_repeats(live: LiveServer) -> None:
    async with (
        RealtimeClient(live.ws_url, live.token("rt-gina")) as rt,
        SessionHubClient(live.url, token=live.token("rt-gina")) as rest,
    ):
        s = await rest.create_session()
        await rest.update(s["id"], metadata={"n": 1})
        updates = follow(rest, rt, s["id"])
        first = await anext(updates)
        assert first.event is None and first.version == 2
        await rest.update(s["id"], metadata={"n": 2})
        await rest.act(s["id"], "end")
        second, third = await anext(updates), await anext(updates)
        assert (second.version, third.version) == (3, 4)
        assert third.session["state"] == "ended" and third.event is not None
        await updates.aclose()
        assert "session:" + s["id"] not in rt._subs


async def test_give_up_after_max_attempts() -> None:
    # Nothing listens on this port: every attempt fails, and the client stops, bounded.
    rt = RealtimeClient("ws://127.0.0.1:9/connection/websocket", "t", backoff=FAST, max_attempts=3)
    with pytest.raises(Disconnected) as stop:
        await asyncio.wait_for(rt.connect(), 20)
    assert stop.value.gave_up and stop.value.attempts == 3 and rt.attempts == 4
    await rt.aclose()
