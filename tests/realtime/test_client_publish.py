"""Clients publishing over the Centrifugo protocol: only admins, only to the topics
``SESSIONHUB_REALTIME_PUBLISH_TOPICS`` names (fnmatch patterns), the answer remembered per
topic without ever changing it."""

from __future__ import annotations

from collections.abc import Callable

from tests.live import LiveServer

from sessionhub.core.principal import Principal
from sessionhub.server.realtime import centrifugo

from .helpers import Raw


async def _connected(live: LiveServer, sub: str, *roles: str) -> Raw:
    raw = await Raw.open(live.ws_url)
    assert "connect" in await raw.call("connect", {"token": live.token(sub, *roles)})
    return raw


async def test_admins_publish_where_configured_and_nowhere_else(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server(realtime_publish_topics="user:*, bench")
    reader = await _connected(live, "alice")
    admin = await _connected(live, "root", "admin")
    bob = await _connected(live, "bob")
    try:
        assert "subscribe" in await reader.call("subscribe", {"channel": "user:alice"})
        for n in range(3):  # the same topic again and again (answered from memory after once)
            reply = await admin.call("publish", {"channel": "user:alice", "data": {"n": n}})
            assert reply.get("publish") == {}, reply
            push = await reader.push()
            assert push["push"]["pub"]["data"] == {"n": n}
        # Not an admin, or not a configured topic: 103 permission denied, every time.
        for _ in range(2):
            refused = await bob.call("publish", {"channel": "user:bob", "data": {}})
            assert refused["error"]["code"] == 103, refused
            refused = await admin.call("publish", {"channel": "sessions", "data": {}})
            assert refused["error"]["code"] == 103, refused
    finally:
        for r in (reader, admin, bob):
            await r.close()


def test_the_remembered_answers_are_bounded_and_stay_right() -> None:
    wire = centrifugo.Centrifugo.__new__(centrifugo.Centrifugo)
    wire.config = centrifugo.CentrifugoConfig(publish_topics=("user:*",))
    wire._publishable = {}
    admin, user = Principal("root", frozenset({"admin"})), Principal("bob")
    limit = centrifugo._PUBLISHABLE_MAX
    for i in range(limit + 10):
        assert wire.may_publish(admin, f"user:{i}") is True
        assert wire.may_publish(admin, f"other:{i}") is False
        assert len(wire._publishable) <= limit
    assert wire.may_publish(user, "user:1") is False  # the role is checked before the cache
    assert wire.may_publish(admin, "user:1") is True
