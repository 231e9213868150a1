"""Several nodes on one Redis: what the contract suites cannot see with one instance.

Two broker (or presence) instances on the same Redis are two nodes. Every wait is bounded
(``until``); "exactly once" is checked after giving a repeat time to show up (``settle``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from sessionhub.broker import open_broker
from sessionhub.broker._redis_order import Topic
from sessionhub.broker.redis import RedisBroker
from sessionhub.core.errors import Unavailable
from sessionhub.core.streams import ClientInfo, PresenceEvent, Publication, StreamPosition
from sessionhub.presence import open_presence
from sessionhub.presence.redis import RedisPresence

pytestmark = pytest.mark.redis


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    """Wait (bounded) until ``check()`` holds."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


async def settle() -> None:
    """Time for a repeat (an echo delivered twice) to show up if there were one."""
    await asyncio.sleep(0.3)


def offsets(pubs: list[Publication]) -> list[int]:
    return [p.offset for p in pubs]


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A third client, for what the nodes do not do themselves (FLUSHDB, CLIENT KILL)."""
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    await client.aclose()


@pytest.fixture
async def node(
    redis_url: str, redis_prefix: str
) -> AsyncIterator[Callable[..., Awaitable[RedisBroker]]]:
    """``await node()``: one more node of this test's cluster (its own prefix)."""
    made: list[RedisBroker] = []

    async def make(url: str = redis_url, **kw: Any) -> RedisBroker:
        kw.setdefault("prefix", redis_prefix)
        b = RedisBroker(url, **kw)
        await b.start()
        made.append(b)
        return b

    yield make
    for b in made:
        await b.close()


@pytest.fixture
async def presence_node(
    redis_url: str, redis_prefix: str
) -> AsyncIterator[Callable[..., Awaitable[RedisPresence]]]:
    made: list[RedisPresence] = []

    async def make(**kw: Any) -> RedisPresence:
        p = RedisPresence(redis_url, prefix=redis_prefix, **kw)
        await p.start()
        made.append(p)
        return p

    yield make
    for p in made:
        await p.close()


# -- broker -----------------------------------------------------------------------------------


async def test_a_publication_reaches_every_node_once_in_order(node: Any) -> None:
    a, b = await node(), await node()
    got_a: list[Publication] = []
    got_b: list[Publication] = []
    a.subscribe("t", got_a.append)
    b.subscribe("t", got_b.append)
    # Subscribe, then read the position: everything after it reaches the listener.
    await b.position("t")
    payloads = [b"plain", b"with:colons: and spaces", b"\x00\xff\n binary \r\n"]
    for data in payloads:
        await a.publish(["t", "other"], data)
    assert offsets(got_a) == [1, 2, 3]  # synchronously, from publish
    await until(lambda: len(got_b) == 3)
    await settle()
    assert offsets(got_a) == [1, 2, 3] and offsets(got_b) == [1, 2, 3]
    assert [p.data for p in got_b] == payloads and {p.topic for p in got_b} == {"t"}
    assert got_a == got_b
    pubs, pos, complete = await b.history("t")
    assert complete and pos == StreamPosition(3, got_a[0].epoch)
    assert [p.data for p in pubs] == payloads


async def test_concurrent_publishes_from_two_nodes_never_skip_or_repeat(node: Any) -> None:
    a, b = await node(), await node()
    got_a: list[Publication] = []
    got_b: list[Publication] = []
    a.subscribe("t", got_a.append)
    b.subscribe("t", got_b.append)
    await a.position("t")
    await b.position("t")

    async def burst(n: RedisBroker, name: bytes) -> list[tuple[int, bytes]]:
        out = await asyncio.gather(*(n.publish(["t"], name + b"%d" % i) for i in range(100)))
        return [(p["t"].offset, name + b"%d" % i) for i, p in enumerate(out)]

    sent = await asyncio.wait_for(asyncio.gather(burst(a, b"A"), burst(b, b"B")), 20)
    by_offset = dict(sent[0] + sent[1])
    assert sorted(by_offset) == list(range(1, 201))  # no gap, no repeat
    await until(lambda: len(got_a) >= 200 and len(got_b) >= 200, within=10)
    await settle()
    for got in (got_a, got_b):
        assert offsets(got) == list(range(1, 201))
        assert all(p.data == by_offset[p.offset] for p in got)


async def test_a_flushed_redis_gives_a_new_epoch_never_a_silent_gap(
    node: Any, redis_client: aioredis.Redis
) -> None:
    # The one test that flushes the database (others' keys in db 15 go too): a restarted
    # Redis without persistence is exactly this.
    a, b = await node(), await node()
    got_b: list[Publication] = []
    b.subscribe("t", got_b.append)
    await b.position("t")
    for i in range(3):
        await a.publish(["t"], b"%d" % i)
    old = await a.position("t")
    await until(lambda: len(got_b) == 3)
    await redis_client.flushdb()
    new = (await a.publish(["t"], b"after"))["t"]
    assert new.epoch != old.epoch and new.offset == 1
    pubs, pos, complete = await b.history("t", since=old)
    assert (pubs, pos, complete) == ([], new, False)
    # B's listener follows into the new epoch, from its first publication.
    await until(lambda: len(got_b) == 4)
    assert (got_b[-1].offset, got_b[-1].epoch, got_b[-1].data) == (1, new.epoch, b"after")


async def test_broadcast_reaches_every_node_once_without_history(node: Any) -> None:
    a, b = await node(), await node()
    got_a: list[Publication] = []
    got_b: list[Publication] = []
    a.subscribe("live", got_a.append)
    b.subscribe("live", got_b.append)
    await until(lambda: a._subscriber.is_live(a.channel("live")))
    await until(lambda: b._subscriber.is_live(b.channel("live")))
    await a.broadcast("live", b"frame:1")
    assert got_a == [Publication("live", 0, "", b"frame:1")]
    await until(lambda: len(got_b) == 1)
    await settle()
    assert got_a == got_b == [Publication("live", 0, "", b"frame:1")]
    assert (await b.position("live")).offset == 0


async def test_a_killed_pubsub_connection_reconnects_and_fills_the_gap(
    node: Any, redis_client: aioredis.Redis
) -> None:
    a = await node()
    # A slow first retry, so that B is certainly away while A publishes.
    b = await node(reconnect_backoff=(0.5, 1.0))
    got_b: list[Publication] = []
    b.subscribe("t", got_b.append)
    await b.position("t")
    await a.publish(["t"], b"1")
    await until(lambda: len(got_b) == 1)
    assert b.pubsub_connections == 1

    clients = await redis_client.client_list(_type="pubsub")
    mine = [c for c in clients if c["name"] == f"{b.prefix}-pubsub-{b.node}"]
    assert len(mine) == 1
    # CLIENT KILL TYPE pubsub, narrowed to B's connection (other tests may share the server).
    await redis_client.client_kill_filter(_id=mine[0]["id"], _type="pubsub")
    await a.publish(["t"], b"2")  # B cannot hear these: it has no connection
    await a.publish(["t"], b"3")
    await until(lambda: b.pubsub_connections == 2)
    await a.publish(["t"], b"4")  # live again
    await until(lambda: len(got_b) == 4)
    await settle()
    assert [(p.offset, p.data) for p in got_b] == [(1, b"1"), (2, b"2"), (3, b"3"), (4, b"4")]


async def _append_unannounced(
    client: aioredis.Redis, prefix: str, datas: list[bytes], *, keep: int | None = None
) -> None:
    """Append to topic ``t`` as a publish would, but announce nothing: a pub/sub message
    lost on its way (the layout: ``broker/_redis_scripts.py``)."""
    for data in datas:
        offset = await client.hincrby(f"{prefix}:stream:t", "o", 1)
        await client.rpush(f"{prefix}:history:t", b"%d 1000.0 %s" % (offset, data))
    if keep is not None:  # the history lost all but the newest ``keep``
        await client.ltrim(f"{prefix}:history:t", -keep, -1)


async def test_an_offset_jump_is_filled_from_the_history(
    node: Any, redis_client: aioredis.Redis
) -> None:
    a, b = await node(clock=lambda: 1000.0), await node(clock=lambda: 1000.0)
    got_b: list[Publication] = []
    b.subscribe("t", got_b.append)
    await b.position("t")
    await a.publish(["t"], b"1")
    await _append_unannounced(redis_client, b.prefix, [b"2", b"3"])
    await a.publish(["t"], b"4")  # B sees 4 after 1: fills 2 and 3 first
    await until(lambda: len(got_b) == 4)
    await settle()
    assert [(p.offset, p.data) for p in got_b] == [(1, b"1"), (2, b"2"), (3, b"3"), (4, b"4")]


async def test_what_the_history_lost_is_skipped_and_the_rest_delivered(
    node: Any, redis_client: aioredis.Redis
) -> None:
    kw = {"clock": lambda: 1000.0, "history_size": 2}
    a, b = await node(**kw), await node(**kw)
    got_b: list[Publication] = []
    b.subscribe("t", got_b.append)
    await b.position("t")
    await a.publish(["t"], b"1")
    await _append_unannounced(redis_client, b.prefix, [b"2", b"3", b"4"], keep=2)
    await a.publish(["t"], b"5")  # history keeps 4 and 5: 2 and 3 are gone
    await until(lambda: len(got_b) >= 2)
    await settle()
    # The jump stays visible (the realtime layer tells clients to recover); nothing repeats.
    assert [(p.offset, p.data) for p in got_b] == [(1, b"1"), (5, b"5")]


async def test_a_publish_is_one_round_trip(
    node: Any, redis_client: aioredis.Redis, redis_url: str
) -> None:
    a, b = await node(), await node()
    got: list[Publication] = []
    for topic in ("t", "u", "v"):
        a.subscribe(topic, got.append)
        b.subscribe(topic, got.append)
        await a.position(topic)
        await b.position(topic)
    await asyncio.sleep(0.2)  # the background baseline reads are done

    marker = f"end-of-test-{a.node}"
    watcher = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    seen: list[dict[str, Any]] = []
    try:
        async with watcher.monitor() as monitor:
            for i in range(10):
                await a.publish(["t", "u", "v"], b"%d" % i)
            await redis_client.echo(marker)
            for _ in range(10_000):  # MONITOR shows commands in order: the marker comes last
                cmd = await asyncio.wait_for(monitor.next_command(), 5)
                if marker in cmd["command"]:
                    break
                seen.append(dict(cmd))
    finally:
        await watcher.aclose()
    # Every command A's pool sent (its connections carry A's name; listed after the run, so
    # a connection opened meanwhile would count too).
    name = f"{a.prefix}-broker-{a.node}"
    addrs = {c["addr"] for c in await redis_client.client_list() if c["name"] == name}
    by_a = [c["command"] for c in seen if f"{c['client_address']}:{c['client_port']}" in addrs]
    assert len(by_a) == 10 and all(c.startswith("EVALSHA") for c in by_a), by_a
    await until(lambda: len(got) == 60)  # 10 publications x 3 topics x 2 nodes


async def test_a_script_unknown_to_redis_is_sent_again(
    node: Any, redis_client: aioredis.Redis
) -> None:
    a = await node()
    await a.publish(["t"], b"1")
    await redis_client.script_flush()  # as after a restart: NOSCRIPT, then EVAL
    assert (await a.publish(["t"], b"2"))["t"].offset == 2
    assert [p.data for p in (await a.history("t"))[0]] == [b"1", b"2"]


async def test_keys_expire_and_prefixes_keep_clusters_apart(
    node: Any, redis_client: aioredis.Redis
) -> None:
    a = await node(history_ttl=30.0)
    other = await node(prefix=f"{a.prefix}-other", history_ttl=30.0)
    await a.publish(["t"], b"x")
    await a.publish(["t"], b"y")
    assert (await other.publish(["t"], b"z"))["t"].offset == 1
    for key in (f"{a.prefix}:stream:t", f"{a.prefix}:history:t", f"{other.prefix}:stream:t"):
        assert 0 < await redis_client.pttl(key) <= 30_000


async def test_open_broker_and_presence_choose_redis_by_url(redis_url: str) -> None:
    b = open_broker(redis_url, history_size=7, history_ttl=9.0)
    p = open_presence(redis_url)
    assert isinstance(b, RedisBroker) and isinstance(p, RedisPresence)
    assert (b.history_size, b.history_ttl) == (7, 9.0)
    tls = open_broker("rediss://:s3cret@cache.example:6390/3")
    assert isinstance(tls, RedisBroker)
    kw = tls._pool.connection_kwargs
    assert (kw["host"], kw["port"], kw["db"], kw["password"]) == (
        "cache.example",
        6390,
        3,
        "s3cret",
    )
    assert tls._pool.connection_class.__name__ == "SSLConnection"
    for x in (b, tls):
        await x.close()
    await p.close()


# -- Redis unreachable ------------------------------------------------------------------------


class Proxy:
    """A TCP proxy to Redis that a test can take down, or turn into a black hole."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.port = 0
        self.blackhole = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while chunk := await src.read(65536):
                    if not self.blackhole:
                        dst.write(chunk)
                        await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[Proxy]:
    p = Proxy(redis_url)
    await p.start()
    yield p
    p.blackhole = False
    await p.stop()


def via(proxy: Proxy, redis_url: str) -> str:
    return f"redis://127.0.0.1:{proxy.port}{urlsplit(redis_url).path}"


FAST = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5, "health_check_interval": 0.5}


async def test_unreachable_redis_raises_unavailable_then_recovers(
    node: Any, proxy: Proxy, redis_url: str
) -> None:
    a = await node(via(proxy, redis_url), reconnect_backoff=(0.05, 0.2), **FAST)
    b = await node()
    got_a: list[Publication] = []
    a.subscribe("t", got_a.append)
    await a.position("t")
    await b.publish(["t"], b"1")
    await until(lambda: len(got_a) == 1)

    await proxy.stop()
    started = time.monotonic()
    for call in (a.publish(["t"], b"lost"), a.history("t"), a.position("t")):
        with pytest.raises(Unavailable, match=r"Redis at 127\.0\.0\.1"):
            await call
    assert time.monotonic() - started < 10
    await b.publish(["t"], b"2")  # while A is cut off

    await proxy.start()
    deadline = time.monotonic() + 10
    while True:  # the pool reconnects by itself: the first call may still meet a dead one
        try:
            await a.position("t")
            break
        except Unavailable:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    await until(lambda: a.pubsub_connections >= 2, within=10)
    await b.publish(["t"], b"3")
    await until(lambda: len(got_a) == 3)
    await settle()
    assert [p.data for p in got_a] == [b"1", b"2", b"3"]


async def test_a_silent_redis_times_out_instead_of_hanging(
    node: Any, proxy: Proxy, redis_url: str
) -> None:
    a = await node(via(proxy, redis_url), **FAST)
    await a.position("t")
    proxy.blackhole = True
    started = time.monotonic()
    with pytest.raises(Unavailable):
        await asyncio.wait_for(a.publish(["t"], b"x"), 10)
    assert time.monotonic() - started < 5


async def test_an_unreachable_broker_fails_fast_with_a_clear_message() -> None:
    b = RedisBroker("redis://127.0.0.1:1/15", socket_timeout=0.5, socket_connect_timeout=0.5)
    await b.start()
    try:
        with pytest.raises(Unavailable, match=r"Redis at 127\.0\.0\.1:1/15 is unavailable"):
            await asyncio.wait_for(b.publish(["t"], b"x"), 5)
    finally:
        await b.close()


# -- presence ---------------------------------------------------------------------------------


async def test_presence_joined_on_one_node_is_seen_on_another(presence_node: Any) -> None:
    a, b = await presence_node(), await presence_node()
    events_a: list[PresenceEvent] = []
    events_b: list[PresenceEvent] = []
    a.watch("t", events_a.append)
    b.watch("t", events_b.append)
    info = ClientInfo("c1", "alice", b'{"device":"x:y"}')
    assert await a.join("t", info, ttl=30) is True
    assert await b.join("t", info, ttl=30) is False  # a renewal, from any node
    await until(lambda: len(events_b) == 1)
    assert events_b == [PresenceEvent("t", True, info)]
    assert await b.presence("t") == {"c1": info}
    assert await b.leave("t", "c1") is True
    await until(lambda: len(events_a) == 2)
    await settle()
    assert (
        events_a
        == events_b
        == [
            PresenceEvent("t", True, info),
            PresenceEvent("t", False, info, "left"),
        ]
    )


async def test_a_lapsed_lease_is_lost_exactly_once_across_nodes(presence_node: Any) -> None:
    clock = Clock()
    a, b = await presence_node(clock=clock), await presence_node(clock=clock)
    events_a: list[PresenceEvent] = []
    events_b: list[PresenceEvent] = []
    a.watch("t", events_a.append)
    b.watch("t", events_b.append)
    await a.join("t", ClientInfo("c1", "alice"), ttl=10)  # A's node "dies": never renews
    await b.join("t", ClientInfo("c2", "bob"), ttl=30)
    clock.advance(11)
    removed = await asyncio.gather(a.expire(), b.expire(), a.expire(), b.expire())
    assert sum(removed) == 1
    await until(lambda: len(events_a) == 3 and len(events_b) == 3)
    await settle()
    for events in (events_a, events_b):
        lost = [e for e in events if e.reason == "lost"]
        assert [(e.info.client, e.joined) for e in lost] == [("c1", False)]
    assert list(await a.presence("t")) == ["c2"]


# -- the ordering of one topic on one node (pure: no Redis needed, kept beside its users) -----


async def test_a_topic_delivers_in_offset_order_exactly_once() -> None:
    got: list[int] = []
    t = Topic("t", b"t", [lambda p: got.append(p.offset)])

    def pub(offset: int, epoch: str = "e1") -> Publication:
        return Publication("t", offset, epoch, b"")

    assert t.offer(pub(3)) is True  # no baseline yet: waits
    # The baseline: 3 arrived after it, so it is delivered, once 2 is here too.
    assert t.note(StreamPosition(1, "e1")) is True
    assert got == [] and t.behind
    t.offer(pub(2))
    assert got == [2, 3] and not t.behind
    t.offer(pub(3))  # an echo
    t.offer(pub(5))  # overtook 4
    assert got == [2, 3] and t.behind
    t.offer(pub(4))
    assert got == [2, 3, 4, 5]
    t.offer(pub(8))
    t.skip()  # 6 and 7 are gone from the history
    assert got == [2, 3, 4, 5, 8]
    t.offer(pub(1, "e2"))  # the stream was reset
    t.offer(pub(9, "e1"))  # a late message of the old epoch is stale
    assert got == [2, 3, 4, 5, 8, 1] and t.epoch == "e2"
