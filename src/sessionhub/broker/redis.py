"""The Redis broker: any number of nodes share per-topic offsets, epochs and history.

- ``publish`` is one Lua script (``_redis_scripts.PUBLISH``) for all its topics: one round
  trip, atomic, so offsets never skip or repeat whichever node publishes; the script also
  PUBLISHes each publication (offset, epoch, data) on the topic's channel.
- Each node has one pub/sub connection (``_redis_pubsub.Subscriber``), subscribed to the
  channels of the topics it has listeners for. Listeners are called in offset order, exactly
  once (``_redis_order.Topic``): on the publishing node from ``publish`` once the script
  returned (its own echo from pub/sub is then a repeat and dropped), elsewhere when the
  message arrives. A gap (a message missed while the connection was down, or overtaken) is
  filled from the history before what follows is delivered; what the history lost is
  skipped, and the listeners see the offset jump.
- ``broadcast`` is a plain PUBLISH: no offset, no history.
- Redis unreachable: calls raise ``Unavailable`` after the timeouts, never hang; the pool
  and the pub/sub connection come back by themselves.

Single Redis (or a Sentinel-managed primary); Redis Cluster is not supported: one publish
touches the keys of all its topics at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection

from ..core.errors import Unavailable
from ..core.streams import Publication, StreamPosition
from ..redis_calls import Calls, Script, redis_pool
from ._redis_order import Topic
from ._redis_pubsub import Subscriber
from ._redis_scripts import PUBLISH, READ
from .base import Listener

log = logging.getLogger(__name__)
T = TypeVar("T")

_PUBLISH = Script(PUBLISH)
_READ = Script(READ)


def channel_prefix(prefix: str, pool: BlockingConnectionPool) -> str:
    """What the names of pub/sub channels start with. Keys live in the URL's database, but
    pub/sub ignores databases: two clusters on one Redis server (``/1`` and ``/2``, say, with
    the default prefix) would hear each other's publications - another stream's offsets and
    epoch, which this node would take for a reset of its own. So channels carry the
    database number (when it is not 0)."""
    db = int(pool.connection_kwargs.get("db") or 0)
    return prefix if db == 0 else f"{prefix}:db{db}"


class RedisBroker:
    """``Broker`` over Redis, for many nodes (see the module doc; keys: ``_redis_scripts``).

    ``shared``: every node of a cluster uses the same Redis.

    Where a new listener starts: at the topic's position when this node began to listen (read
    right after the first ``subscribe`` of the topic, or by any ``position``/``history`` call
    made meanwhile). So "subscribe, then read the position or the history" - what the
    realtime layer does - hands the listener every publication after what the read returned,
    including those published before the SUBSCRIBE took effect (filled from the history).

    ``clock`` gives the time stored with each history entry (ages are measured with it, so
    an injected clock works against a real Redis); it is compared across nodes, so it is the
    wall clock by default. ``gap_grace``: how long a gap may close by itself (a message
    overtaken on its way) before the history is read to fill it. ``reconnect_backoff``: the
    first and the longest wait before the pub/sub connection is tried again.
    """

    shared: ClassVar[bool] = True

    def __init__(
        self,
        url: str,
        *,
        history_size: int = 1000,
        history_ttl: float = 600.0,
        prefix: str = "sessionhub",
        clock: Callable[[], float] = time.time,
        socket_timeout: float = 2.0,
        socket_connect_timeout: float = 2.0,
        health_check_interval: float = 10.0,
        max_connections: int = 32,
        gap_grace: float = 0.1,
        reconnect_backoff: tuple[float, float] = (0.05, 5.0),
    ) -> None:
        self.history_size = max(0, history_size)
        self.history_ttl = history_ttl
        self.prefix = prefix
        self.node = secrets.token_hex(8)
        self._clock = clock
        # Keys live ``history_ttl`` after the last publish (and a followed topic's stream as
        # long as it is followed: ``expire``); Redis counts in whole milliseconds.
        self._key_ttl_ms = max(1000, math.ceil(history_ttl * 1000))
        self._pool = redis_pool(
            url,
            name=f"{prefix}-broker-{self.node}",
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            health_check_interval=health_check_interval,
            max_connections=max_connections,
        )
        self._redis = Redis(connection_pool=self._pool)
        self._channels = channel_prefix(prefix, self._pool)
        # Bounds every call, pool wait included, whatever redis-py does inside.
        self._timeout = socket_timeout * 2 + socket_connect_timeout + 0.5
        self._calls = Calls(self._pool, self._timeout)
        self._gap_grace = gap_grace
        self._subscriber = Subscriber(
            self._pubsub_connection,
            on_message=self._on_message,
            on_live=self._on_live,
            ping_interval=health_check_interval,
            backoff=reconnect_backoff,
        )
        self._topics: dict[str, Topic] = {}
        self._by_channel: dict[bytes, Topic] = {}
        # Background reads (baselines, gap fills) share a few connections, so a reconnect
        # with thousands of followed topics does not open thousands of them.
        self._reads = asyncio.Semaphore(8)

    # -- names ----------------------------------------------------------------------------

    def _keys(self, topic: str) -> tuple[str, str]:
        return f"{self.prefix}:stream:{topic}", f"{self.prefix}:history:{topic}"

    def channel(self, topic: str) -> bytes:
        """The pub/sub channel of ``topic``."""
        return f"{self._channels}:pub:{topic}".encode()

    def _pubsub_connection(self) -> AbstractConnection:
        kwargs = dict(self._pool.connection_kwargs)
        kwargs["client_name"] = f"{self.prefix}-pubsub-{self.node}"
        conn: AbstractConnection = self._pool.connection_class(**kwargs)
        return conn

    def status(self) -> dict[str, int | bool]:
        """What to watch on a node (health, metrics): whether its pub/sub connection is up,
        how many times it was established (1 + reconnects), how many topics it follows."""
        return {
            "connected": self._subscriber.connected,
            "connections": self._subscriber.connections,
            "topics": len(self._topics),
        }

    @property
    def pubsub_connections(self) -> int:
        """How many times this node's pub/sub connection was established (1 + reconnects)."""
        return self._subscriber.connections

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start listening. Redis need not be up yet: the node connects when it is."""
        self._subscriber.start()
        for t in self._topics.values():  # subscribed before start
            self._kick(t, urgent=True)

    async def close(self) -> None:
        await self._subscriber.close()
        tasks = [t.repair for t in self._topics.values() if t.repair is not None]
        for t in list(self._topics.values()):
            t.close()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._topics.clear()
        self._by_channel.clear()
        await self._redis.aclose()
        await self._pool.aclose()

    # -- calls ----------------------------------------------------------------------------

    async def _call(
        self, what: str, make: Callable[[], Awaitable[T]], *, idempotent: bool = False
    ) -> T:
        """Run one call, bounded; ``Unavailable`` if Redis does not answer. A call that may
        run twice without harm (a read) is tried once more after a broken connection."""
        return await self._calls(what, make, idempotent=idempotent)

    async def _read(
        self, topic: str, since: StreamPosition | None, limit: int
    ) -> tuple[list[Publication], StreamPosition, bool]:
        args = [
            repr(self._clock()),
            self.history_ttl,
            self._key_ttl_ms,
            secrets.token_hex(8),
            self.history_size,
            "" if since is None else since.offset,
            "" if since is None else since.epoch,
            max(0, limit),
        ]
        keys = self._keys(topic)
        reply = await self._call("history", lambda: _READ(self._redis, keys, args), idempotent=True)
        epoch = reply[0].decode()
        pubs = []
        for entry in reply[3:]:
            offset, _, data = entry.split(b" ", 2)
            pubs.append(Publication(topic, int(offset), epoch, data))
        return pubs, StreamPosition(int(reply[1]), epoch), reply[2] == 1

    # -- the Broker protocol --------------------------------------------------------------

    async def publish(self, topics: Sequence[str], data: bytes) -> dict[str, StreamPosition]:
        if not topics:
            return {}
        keys: list[str] = []
        for topic in topics:
            keys.extend(self._keys(topic))
        args: list[Any] = [
            repr(self._clock()),
            self.history_size,
            self.history_ttl,
            self._key_ttl_ms,
            secrets.token_hex(8),
            data,
            *(self.channel(t) for t in topics),
        ]
        # Not retried: a publish that failed may have run (it would be published twice).
        reply = await self._call("publish", lambda: _PUBLISH(self._redis, keys, args))
        out: dict[str, StreamPosition] = {}
        waits: list[asyncio.Future[None]] = []
        for i, topic in enumerate(topics):
            pos = StreamPosition(int(reply[2 * i]), reply[2 * i + 1].decode())
            out[topic] = pos
            t = self._topics.get(topic)
            if t is None:
                continue
            if t.offer(Publication(topic, pos.offset, pos.epoch, data)):
                self._kick(t)
            fut = t.wait(pos)
            if fut is not None:
                waits.append(fut)
        if waits:
            # Overtaken by an earlier publication still on its way (a concurrent publish's
            # reply, another node's message): ours is delivered right after it, or after
            # the gap is filled from the history or given up - all bounded.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*waits), self._gap_grace + 2 * self._timeout + 1
                )
        return out

    async def position(self, topic: str) -> StreamPosition:
        return (await self.history(topic, limit=0))[1]

    async def history(
        self, topic: str, *, since: StreamPosition | None = None, limit: int = 100
    ) -> tuple[list[Publication], StreamPosition, bool]:
        t = self._topics.get(topic)
        result = await self._read(topic, since, limit)
        # A position read while this node listens is also a baseline (or reveals a gap): the
        # listeners then get everything after what the caller has just been told.
        if t is not None and self._topics.get(topic) is t and t.note(result[1]):
            self._kick(t)
        return result

    async def broadcast(self, topic: str, data: bytes) -> None:
        message = b"0:" + self.node.encode() + b":" + data
        channel = self.channel(topic)
        await self._call("broadcast", lambda: self._redis.publish(channel, message))
        t = self._topics.get(topic)
        if t is not None:
            self._deliver_broadcast(t, data)

    def subscribe(self, topic: str, listener: Listener) -> Callable[[], None]:
        t = self._topics.get(topic)
        if t is None:
            t = self._topics[topic] = Topic(topic, self.channel(topic))
            self._by_channel[t.channel] = t
            self._subscriber.add(t.channel)
            # The baseline, read now: what is published after it reaches the listeners,
            # even before the SUBSCRIBE is live (the gap is filled from the history then).
            self._kick(t, urgent=True)
        t.listeners.append(listener)
        target = t

        def unsubscribe() -> None:
            if listener in target.listeners:
                target.listeners.remove(listener)
            if not target.listeners and self._topics.get(topic) is target:
                self._drop(target)

        return unsubscribe

    async def expire(self) -> None:
        """Keep the streams of followed topics alive while they are idle (as the memory
        broker keeps a followed stream): otherwise a quiet topic would get a new epoch and
        its followers be told to recover for nothing. Everything else expires in Redis."""
        names = [self._keys(t)[0] for t in self._topics]
        try:
            for i in range(0, len(names), 500):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for name in names[i : i + 500]:
                        pipe.pexpire(name, self._key_ttl_ms)
                    await self._call("expire", pipe.execute)
        except Unavailable as exc:
            log.warning("could not refresh followed streams: %s", exc)

    # -- delivery -------------------------------------------------------------------------

    def _drop(self, t: Topic) -> None:
        del self._topics[t.name]
        self._by_channel.pop(t.channel, None)
        self._subscriber.discard(t.channel)
        t.close()

    def _deliver_broadcast(self, t: Topic, data: bytes) -> None:
        pub = Publication(t.name, 0, "", data)
        for listener in tuple(t.listeners):
            try:
                listener(pub)
            except Exception:
                log.exception("broker listener failed on %s", t.name)

    def _on_message(self, channel: bytes, message: bytes) -> None:
        t = self._by_channel.get(channel)
        if t is None:
            return  # a late message of a channel dropped meanwhile
        offset, tag, data = message.split(b":", 2)
        if offset == b"0":
            if tag.decode() != self.node:  # our own broadcast was delivered by broadcast()
                self._deliver_broadcast(t, data)
        elif t.offer(Publication(t.name, int(offset), tag.decode(), data)):
            self._kick(t)

    def _on_live(self, channel: bytes) -> None:
        t = self._by_channel.get(channel)
        if t is not None:
            # Messages published while the channel was not live never arrive: compare the
            # position now, and fill from the history what is missing.
            t.resync = True
            self._kick(t, urgent=True)

    def _kick(self, t: Topic, *, urgent: bool = False) -> None:
        """Make sure a task works on ``t``'s gap (or baseline) if it has one. An urgent kick
        (a new listener, the channel live again) does not wait, and cuts short a repair that
        is only waiting - for a gap to close by itself, or out an outage."""
        if t.closed:
            return
        if t.repair is not None and not t.repair.done():
            if not (urgent and t.waiting is t.repair):
                return
            t.repair.cancel()
        self._start(t, 0.0 if urgent else self._gap_grace)

    def _start(self, t: Topic, delay: float) -> None:
        try:
            t.repair = asyncio.get_running_loop().create_task(self._repair(t, delay))
        except RuntimeError:  # no loop yet (subscribed before start): start() kicks it
            t.repair = None

    async def _repair(self, t: Topic, delay: float) -> None:
        me = asyncio.current_task()
        if delay:
            # Most gaps close by themselves: a reply or a message overtaken by the next.
            t.waiting = me
            try:
                await asyncio.sleep(delay)
            finally:
                if t.waiting is me:
                    t.waiting = None
        lost = False
        retry: float | None = None
        try:
            for _ in range(4):  # each round fills up to the newest offset Redis has
                if t.closed:
                    return
                if t.epoch is None or t.resync:
                    t.resync = False
                    async with self._reads:
                        _, pos, _ = await self._read(t.name, None, 0)
                    if t.closed:
                        return
                    t.note(pos)
                    continue
                if not t.behind:
                    break
                since = StreamPosition(t.delivered, t.epoch)
                newest = max(t.target, *t.pending) if t.pending else t.target
                limit = max(1, min(newest - t.delivered, self.history_size))
                async with self._reads:
                    pubs, pos, complete = await self._read(t.name, since, limit)
                if t.closed:
                    return
                for pub in pubs:
                    t.offer(pub)
                t.note(pos)
                if not pubs and not complete and pos.epoch == since.epoch:
                    # The history no longer has what follows ``since``: skip to what waits.
                    # If nothing waits (the gap is known from a position read), the newest
                    # publications the history still holds are what waits - so the
                    # listeners see the jump now (and tell their clients), not only at
                    # the next publication, which may never come.
                    if not t.pending:
                        async with self._reads:
                            tail, pos, _ = await self._read(t.name, None, limit)
                        if t.closed:
                            return
                        for pub in tail:
                            t.offer(pub)
                        t.note(pos)
                    lost = True
                    break
        except Unavailable as exc:
            # Redis did not answer (restarting, say): what follows is out of reach, not
            # lost. Try again, backing off; the channel coming back cuts the wait short.
            t.failures += 1
            if t.failures == 1:
                log.warning("cannot fill a gap on %s from the history yet: %s", t.name, exc)
            retry = min(5.0, self._gap_grace * 2**t.failures)
        finally:
            if t.repair is me:
                t.repair = None
        if t.closed:
            return
        if retry is not None:
            if t.repair is None:
                self._start(t, retry)
            return
        t.failures = 0
        if lost:
            t.skip()
        if t.resync:  # the channel became live again while this ran: compare once more
            self._kick(t, urgent=True)
        elif t.behind:  # still catching up with a busy stream: go on after a pause
            self._kick(t)
