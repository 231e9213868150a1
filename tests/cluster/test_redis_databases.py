"""Two clusters on one Redis server, in two databases with the same (default) prefix, stay
apart: pub/sub ignores databases, so the channel names carry the database number."""

from __future__ import annotations

import asyncio

import pytest

from sessionhub.broker.redis import RedisBroker
from sessionhub.core.streams import ClientInfo, PresenceEvent, Publication
from sessionhub.presence.redis import RedisPresence

from .harness import until
from .services import RedisServer

pytestmark = pytest.mark.redis


async def test_brokers_and_presence_in_two_databases_do_not_hear_each_other(
    redis_server: RedisServer,
) -> None:
    base = f"redis://127.0.0.1:{redis_server.port}"
    one, two = RedisBroker(f"{base}/1"), RedisBroker(f"{base}/2")
    p_one, p_two = RedisPresence(f"{base}/1"), RedisPresence(f"{base}/2")
    got: dict[str, list[Publication]] = {"one": [], "two": []}
    heard: dict[str, list[PresenceEvent]] = {"one": [], "two": []}
    for b in (one, two, p_one, p_two):
        await b.start()
    try:
        one.subscribe("user:alice", got["one"].append)
        two.subscribe("user:alice", got["two"].append)
        p_one.watch("user:alice", heard["one"].append)
        p_two.watch("user:alice", heard["two"].append)
        await one.position("user:alice")
        await two.position("user:alice")
        await until(lambda: one._subscriber.is_live(one.channel("user:alice")), what="live")
        await until(lambda: two._subscriber.is_live(two.channel("user:alice")), what="live")
        for i in range(3):
            await one.publish(["user:alice"], b"one-%d" % i)
        await two.publish(["user:alice"], b"two-0")
        await p_two.join("user:alice", ClientInfo("c2", "alice"), ttl=30)
        await asyncio.sleep(0.5)  # what crosses over would have arrived by now
        assert [p.data for p in got["one"]] == [b"one-0", b"one-1", b"one-2"]
        assert [p.data for p in got["two"]] == [b"two-0"]
        assert [(p.offset, p.epoch) for p in got["two"]] == [(1, got["two"][0].epoch)]
        assert heard["one"] == [] and [e.info.client for e in heard["two"]] == ["c2"]
        assert one.channel("t") != two.channel("t") and p_one.channel != p_two.channel
    finally:
        for b in (one, two, p_one, p_two):
            await b.close()
