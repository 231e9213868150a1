"""The Redis broker and presence across a Redis restart, in-process (what the cluster's
Redis restart test showed): pooled connections that died with the old Redis do not fail
calls one by one afterwards, and a gap that cannot be read for a moment is filled once Redis
answers - not skipped as if the history had lost it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from sessionhub.broker.redis import RedisBroker
from sessionhub.core.errors import Unavailable
from sessionhub.core.streams import ClientInfo, Publication
from sessionhub.presence.redis import RedisPresence

from .harness import until
from .services import RedisServer

pytestmark = pytest.mark.redis


async def test_reads_right_after_a_redis_restart_all_succeed(redis_server: RedisServer) -> None:
    broker = RedisBroker(redis_server.url)
    presence = RedisPresence(redis_server.url)
    await broker.start()
    await presence.start()
    try:
        # Several pooled connections, all to the Redis that is about to go.
        await asyncio.gather(*(broker.position(f"t{i}") for i in range(8)))
        await asyncio.gather(*(presence.presence(f"t{i}") for i in range(8)))
        redis_server.stop()
        redis_server.start()
        results = await asyncio.gather(
            *(broker.position(f"t{i}") for i in range(8)),
            *(presence.join(f"t{i}", ClientInfo(f"c{i}", "u"), ttl=30) for i in range(8)),
            return_exceptions=True,
        )
        assert [r for r in results if isinstance(r, BaseException)] == []
    finally:
        await broker.close()
        await presence.close()


async def test_a_gap_redis_cannot_serve_for_a_moment_is_filled_not_skipped(
    redis_server: RedisServer,
) -> None:
    a = RedisBroker(redis_server.url, clock=lambda: 1000.0)
    b = RedisBroker(redis_server.url, clock=lambda: 1000.0)
    client = aioredis.Redis.from_url(redis_server.url)
    got: list[Publication] = []
    for node in (a, b):
        await node.start()
    try:
        b.subscribe("t", got.append)
        await b.position("t")
        await a.publish(["t"], b"1")
        await until(lambda: len(got) == 1, what="the first publication")
        # 2 and 3 reach Redis's history, but B never hears of them (a message lost on its
        # way: the layout of broker/_redis_scripts.py)...
        for data in (b"2", b"3"):
            offset = await client.hincrby(f"{b.prefix}:stream:t", "o", 1)
            await client.rpush(f"{b.prefix}:history:t", b"%d 1000.0 %s" % (offset, data))
        # ...and B's first reads to fill the gap fail, as they do while Redis restarts.
        real = b._read
        failures = [2]

        async def flaky(*args: Any, **kw: Any) -> Any:
            if failures[0] > 0:
                failures[0] -= 1
                raise Unavailable("Redis is restarting")
            return await real(*args, **kw)

        b._read = flaky  # type: ignore[method-assign]
        await a.publish(["t"], b"4")  # B sees 4 after 1: a gap it cannot fill yet
        await until(lambda: len(got) == 4, what="the gap filled", within=10)
        await asyncio.sleep(0.3)
        assert [(p.offset, p.data) for p in got] == [(1, b"1"), (2, b"2"), (3, b"3"), (4, b"4")]
        assert failures == [0]
    finally:
        for node in (a, b):
            await node.close()
        await client.aclose()
