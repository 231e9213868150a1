"""The realtime endpoint with the official ``centrifuge-python`` SDK, against a real server
(both WebSocket engines: the fast one ``sessionhub serve`` uses, and the ASGI route)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from centrifuge import (
    Client,
    ClientEventHandler,
    ClientState,
    DisconnectedContext,
    JoinContext,
    LeaveContext,
    PublicationContext,
    SubscribedContext,
    SubscriptionEventHandler,
    SubscriptionState,
    UnsubscribedContext,
)
from centrifuge.exceptions import ReplyError
from tests.live import LiveServer

from .helpers import Proxy, until

pytestmark = pytest.mark.slow


class Events(SubscriptionEventHandler):
    """Records what a subscription sees."""

    def __init__(self) -> None:
        self.pubs: list[tuple[int, Any]] = []
        self.subscribed: list[SubscribedContext] = []
        self.unsubscribed: list[UnsubscribedContext] = []
        self.joins: list[str] = []
        self.leaves: list[str] = []

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.pubs.append((ctx.pub.offset, ctx.pub.data))

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.subscribed.append(ctx)

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        self.unsubscribed.append(ctx)

    async def on_join(self, ctx: JoinContext) -> None:
        self.joins.append(ctx.info.user)

    async def on_leave(self, ctx: LeaveContext) -> None:
        self.leaves.append(ctx.info.user)


class ClientEvents(ClientEventHandler):
    def __init__(self) -> None:
        self.disconnects: list[DisconnectedContext] = []

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.disconnects.append(ctx)


def client(url: str, token: str, **kw: Any) -> Client:
    return Client(url, token=token, proxy=None, timeout=5.0, max_reconnect_delay=0.5, **kw)


async def subscribe(c: Client, topic: str, **kw: Any) -> Events:
    ev = Events()
    sub = c.new_subscription(topic, events=ev, **kw)
    await sub.subscribe()
    await until(lambda: bool(ev.subscribed or ev.unsubscribed), what=f"subscribe {topic}")
    return ev


async def test_connect_with_a_good_token(server: LiveServer) -> None:
    c = client(server.ws_url, server.token("alice"))
    await c.connect()
    await c.ready(timeout=5)
    assert c.state == ClientState.CONNECTED
    assert c.client_id and server.realtime.clients[c.client_id].user == "alice"
    await c.disconnect()


async def test_connect_with_a_bad_token_is_final(server: LiveServer) -> None:
    events = ClientEvents()
    c = client(server.ws_url, "not-a-jwt.at.all", events=events)
    await c.connect()
    await until(lambda: bool(events.disconnects), what="disconnect")
    assert events.disconnects[0].code == 3500  # invalid token: final, no reconnect
    assert c.state == ClientState.DISCONNECTED


async def test_connect_with_an_expired_token_fetches_a_new_one(server: LiveServer) -> None:
    expired = server.token("alice", ttl=timedelta(seconds=-120))
    fresh = server.token("alice")
    asked: list[bool] = []

    async def get_token() -> str:
        asked.append(True)
        return fresh

    c = client(server.ws_url, expired, get_token=get_token)
    await c.connect()
    await c.ready(timeout=10)
    assert asked, "error 109 (token expired) makes the SDK ask for a new token"
    assert c.state == ClientState.CONNECTED
    await c.disconnect()


async def test_subscribe_allowed_and_refused(server: LiveServer) -> None:
    c = client(server.ws_url, server.token("alice"))
    await c.connect()
    mine = await subscribe(c, "user:alice")
    theirs = await subscribe(c, "user:bob")
    everything = await subscribe(c, "sessions")
    assert mine.subscribed and not mine.unsubscribed
    # A refusal is the permission error on that subscription, not a disconnect.
    assert [u.code for u in theirs.unsubscribed] == [103]
    assert [u.code for u in everything.unsubscribed] == [103]
    assert c.state == ClientState.CONNECTED
    assert c.get_subscription("user:alice").state == SubscriptionState.SUBSCRIBED  # type: ignore[union-attr]
    await c.disconnect()


async def test_session_topic_follows_ownership(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.post("/api/sessions", json={}, headers=server.headers("alice"))
        sid = r.json()["id"]
    owner = client(server.ws_url, server.token("alice"))
    other = client(server.ws_url, server.token("bob"))
    admin = client(server.ws_url, server.token("root", "admin"))
    for c in (owner, other, admin):
        await c.connect()
    assert (await subscribe(owner, f"session:{sid}")).subscribed
    assert [u.code for u in (await subscribe(other, f"session:{sid}")).unsubscribed] == [103]
    assert (await subscribe(admin, f"session:{sid}")).subscribed
    assert [u.code for u in (await subscribe(owner, "session:nope")).unsubscribed] == [103]
    for c in (owner, other, admin):
        await c.disconnect()


async def test_deleting_a_session_ends_its_topic_after_the_last_publication(
    server: LiveServer,
) -> None:
    h = server.headers("alice")
    async with httpx.AsyncClient(base_url=server.url, headers=h) as http:
        sid = (await http.post("/api/sessions", json={})).json()["id"]
        c = client(server.ws_url, server.token("alice"))
        await c.connect()
        session = await subscribe(c, f"session:{sid}")
        user = await subscribe(c, "user:alice")
        # Deletion is the retention sweep's last step (delete_after); run it directly.
        hub = server.runtime.hub
        await server.call(hub.delete(await server.call(hub.store.get(sid))))
        await until(lambda: bool(session.unsubscribed), what="the server's unsubscribe")
    # The deletion is delivered first, then the subscription ends with 2001 (final).
    assert [d["type"] for _, d in session.pubs] == ["session.deleted"]
    assert [(u.code, u.reason) for u in session.unsubscribed] == [(2001, "session deleted")]
    # The user's topic carries the same event and stays.
    await until(lambda: len(user.pubs) == 1, what="the user topic's publication")
    assert user.pubs[0][1]["type"] == "session.deleted" and not user.unsubscribed
    await until(lambda: server.realtime.stats()["subscriptions"] == 1, what="one subscription")
    await c.disconnect()


async def test_publications_arrive_in_order_as_rest_calls_return(server: LiveServer) -> None:
    c = client(server.ws_url, server.token("alice"))
    await c.connect()
    ev = await subscribe(c, "user:alice")
    h = server.headers("alice")
    async with httpx.AsyncClient(base_url=server.url, headers=h) as http:
        sid = (await http.post("/api/sessions", json={})).json()["id"]
        for i in range(5):
            r = await http.patch(f"/api/sessions/{sid}", json={"metadata": {"n": i}})
            assert r.status_code == 200
        r = await http.post(f"/api/sessions/{sid}/actions/end", json={})
        assert r.status_code == 200
    await until(lambda: len(ev.pubs) == 7, what="7 publications")
    assert [o for o, _ in ev.pubs] == list(range(1, 8))
    versions = [d["version"] for _, d in ev.pubs]
    assert versions == list(range(1, 8))
    assert ev.pubs[0][1]["type"] == "session.created"
    assert [d["data"]["session"]["metadata"].get("n") for _, d in ev.pubs[1:6]] == list(range(5))
    assert all(d["session_id"] == sid for _, d in ev.pubs)
    await c.disconnect()


async def test_presence_join_and_leave(server: LiveServer) -> None:
    a = client(server.ws_url, server.token("root", "admin"))
    b = client(server.ws_url, server.token("alice"))
    await a.connect()
    await b.connect()
    seen = await subscribe(a, "user:alice", join_leave=True)
    await until(lambda: seen.joins == ["root"], what="own join")
    sub_b = b.new_subscription("user:alice", events=Events())
    await sub_b.subscribe()
    await until(lambda: seen.joins == ["root", "alice"], what="join of alice")
    presence = await a.presence("user:alice")
    assert sorted(i.user for i in presence.clients.values()) == ["alice", "root"]
    stats = await a.presence_stats("user:alice")
    assert (stats.num_clients, stats.num_users) == (2, 2)
    await sub_b.unsubscribe()
    await until(lambda: seen.leaves == ["alice"], what="leave after unsubscribe")
    await sub_b.subscribe()
    await until(lambda: seen.joins[-1:] == ["alice"] and len(seen.joins) == 3, what="rejoin")
    await b.disconnect()  # a connection that goes away leaves every topic
    await until(lambda: seen.leaves == ["alice", "alice"], what="leave after disconnect")
    assert next(iter((await a.presence("user:alice")).clients.values())).user == "root"
    await a.disconnect()


async def test_presence_history_and_publish_need_permission(server: LiveServer) -> None:
    c = client(server.ws_url, server.token("alice"))
    await c.connect()
    await c.ready()
    for call in (
        c.presence("user:bob"),
        c.presence_stats("sessions"),
        c.history("user:bob", limit=10),
        c.publish("user:alice", {"forged": True}),
    ):
        with pytest.raises(ReplyError) as err:
            await call
        assert err.value.code == 103
    assert c.state == ClientState.CONNECTED
    await c.disconnect()


async def test_history_returns_publications_and_position(server: LiveServer) -> None:
    for i in range(4):
        await server.publish("user:alice", b'{"n":%d}' % i)
    c = client(server.ws_url, server.token("alice"))
    await c.connect()
    await c.ready()
    h = await c.history("user:alice", limit=2)
    assert [(p.offset, p.data) for p in h.publications] == [(3, {"n": 2}), (4, {"n": 3})]
    assert h.offset == 4 and h.epoch
    only_position = await c.history("user:alice")
    assert only_position.publications == [] and only_position.offset == 4
    await c.disconnect()


async def _recovery_run(server: LiveServer, missed: int) -> Events:
    proxy = await Proxy(server.port).start()
    c = client(proxy.ws_url, server.token("alice"))
    await c.connect()
    ev = await subscribe(c, "user:alice")
    for i in range(3):
        await server.publish("user:alice", b'{"n":%d}' % i)
    await until(lambda: len(ev.pubs) == 3, what="first publications")
    proxy.cut()  # the network goes away...
    await until(lambda: c.state == ClientState.CONNECTING, what="client notices")
    for i in range(3, 3 + missed):  # ...and these happen meanwhile
        await server.publish("user:alice", b'{"n":%d}' % i)
    proxy.restore()
    await until(lambda: len(ev.subscribed) == 2, what="resubscribed")
    await server.publish("user:alice", b'{"n":"live"}')
    await until(lambda: ev.pubs[-1][1] == {"n": "live"}, what="live publication")
    await c.disconnect()
    await proxy.close()
    return ev


async def test_recovery_delivers_exactly_what_was_missed(server: LiveServer) -> None:
    ev = await _recovery_run(server, missed=4)
    again = ev.subscribed[1]
    assert again.was_recovering and again.recovered
    assert [d for _, d in ev.pubs] == [{"n": i} for i in range(7)] + [{"n": "live"}]
    assert [o for o, _ in ev.pubs] == list(range(1, 9))


async def test_recovery_out_of_the_window_says_recovered_false(make_server: Any) -> None:
    live = make_server(history_size=3)
    ev = await _recovery_run(live, missed=5)
    again = ev.subscribed[1]
    assert again.was_recovering and not again.recovered
    # Nothing of the missed stretch is replayed; the stream continues live after it.
    assert [d for _, d in ev.pubs] == [{"n": 0}, {"n": 1}, {"n": 2}, {"n": "live"}]
    assert ev.pubs[-1][0] == 9
