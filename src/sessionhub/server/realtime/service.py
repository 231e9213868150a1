"""The realtime node: connection registry, fan-out from the broker, pings, presence leases.

Fan-out. The service subscribes to a broker topic while at least one local connection
follows it. Each publication is turned into its push message once (:class:`Out`, framed
once). A publication after a quiet spell (none in the last ``burst_window`` seconds) is
written to every subscriber at once, so a lone event costs one pass and one write per
subscriber. In a burst the same object is appended to every subscriber's queue instead and
one callback per event-loop turn flushes every queue that received something, so a burst
leaves each connection in one write. A connection whose unsent bytes exceed
``max_queue_bytes`` is disconnected with code 3008 (slow) and never holds the others up:
nothing here waits on a socket.

Liveness. Every ``ping_interval`` seconds each connection gets ``{}`` (the same bytes for
all); one that has sent nothing since the previous ping is disconnected with 3012 (no pong).
Presence leases of live connections are renewed at the same time, so presence of a
connection that vanished without a goodbye lapses within ``lease_ttl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ...core import centrifugo as proto
from ...core import codes
from ...core.errors import NotFound
from ...core.principal import Principal
from ...core.streams import PresenceEvent, Publication
from ...core.topics import ends_topic, parse, static_permission
from ...hub import Hub
from .connection import Connection, Out, Sink, Subscription

log = logging.getLogger("sessionhub.realtime")


@dataclass(slots=True)
class _Topic:
    name: str
    #: Connections receiving live publications (a dict: ordered, O(1) removal), each with
    #: its engine's raw byte writer where it has one (see :attr:`Connection.writer`).
    active: dict[Connection, Callable[[bytes], object] | None] = field(default_factory=dict)
    #: Connections whose subscribe is being answered: publications go to their backlog.
    pending: dict[Connection, Subscription] = field(default_factory=dict)
    #: Connections that asked for join/leave pushes.
    join_leave: dict[Connection, None] = field(default_factory=dict)
    unsubscribe: Callable[[], None] | None = None
    unwatch: Callable[[], None] | None = None


class RealtimeService:
    """One node's realtime state. ``runtime.services["realtime"]``."""

    def __init__(
        self,
        hub: Hub,
        auth: Any,
        *,
        ping_interval: float = 25.0,
        max_queue_bytes: int = 1 << 20,
        max_subscriptions: int = 128,
        recover_limit: int = 1000,
        publish_topics: Iterable[str] = (),
        close_timeout: float = 5.0,
        burst_window: float = 0.002,
    ) -> None:
        self.hub = hub
        self.broker = hub.broker
        self.presence = hub.presence
        self.auth = auth
        self.ping_interval = ping_interval
        self.lease_ttl = max(3 * ping_interval, 1.0)
        self.max_queue_bytes = max_queue_bytes
        self.max_subscriptions = max_subscriptions
        self.recover_limit = recover_limit
        #: Topic patterns (fnmatch) that connected admins may publish to; none by default.
        self.publish_topics = tuple(publish_topics)
        self.close_timeout = close_timeout
        self.connections: dict[str, Connection] = {}
        self._all: dict[Connection, None] = {}
        self._topics: dict[str, _Topic] = {}
        self._dirty: list[Connection] = []
        self._flush_handle: asyncio.Handle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._ping = Out(proto.PING)
        #: Publications closer together than this are a burst: coalesced per loop turn.
        self.burst_window = burst_window
        self._last_fanout = -1e9
        # counters
        self.publications_total = 0
        self.deliveries_total = 0
        self.stats_slow = 0
        #: Open SSE streams (``GET /api/stream``), counted by the SSE route.
        self.sse_streams = 0
        self.stats_recovered = 0
        self.stats_unrecovered = 0
        self._rate_at = time.monotonic()
        self._rate_count = 0
        self._rate = 0.0

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_loop())

    async def close(self) -> None:
        for conn in list(self._all):
            conn.disconnect(codes.SHUTDOWN)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()

    def new_connection(self, sink: Sink, *, transport: str = "websocket") -> Connection:
        conn = Connection(self, sink, transport=transport)
        self._all[conn] = None
        return conn

    def connected(self, conn: Connection) -> None:
        self.connections[conn.client] = conn

    def unregister(self, conn: Connection) -> None:
        self._all.pop(conn, None)
        self.connections.pop(conn.client, None)
        topics = list(conn.subs)
        for topic in topics:
            self.detach(conn, topic)
        if topics:
            self.spawn(self._leave_all(conn.client, topics))

    async def _leave_all(self, client: str, topics: list[str]) -> None:
        for topic in topics:
            await self.presence.leave(topic, client)

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- permissions --------------------------------------------------------------------------

    async def may_read(self, principal: Principal, topic: str) -> bool:
        """Whether ``principal`` may follow ``topic`` (subscribe, history, presence)."""
        allowed = static_permission(principal, topic)
        if allowed is not None:
            return allowed
        _, session_id = parse(topic)
        if not session_id:
            return False
        try:
            await self.hub.get(principal, session_id)
        except NotFound:
            return False
        return True

    def may_publish(self, principal: Principal, topic: str) -> bool:
        """Clients publish only where configured (no topic by default), and only admins:
        session events come from the hub, never from a client."""
        return principal.is_admin and any(
            fnmatch.fnmatchcase(topic, p) for p in self.publish_topics
        )

    # -- topics -------------------------------------------------------------------------------

    def _topic(self, name: str) -> _Topic:
        t = self._topics.get(name)
        if t is None:
            t = self._topics[name] = _Topic(name)
            t.unsubscribe = self.broker.subscribe(name, self._on_publication)
            t.unwatch = self.presence.watch(name, self._on_presence)
        return t

    def attach(self, conn: Connection, sub: Subscription) -> None:
        """Register ``sub`` as pending: publications from now on go to its backlog."""
        conn.subs[sub.topic] = sub
        self._topic(sub.topic).pending[conn] = sub

    def mark_active(self, conn: Connection, sub: Subscription) -> None:
        t = self._topic(sub.topic)
        t.pending.pop(conn, None)
        t.active[conn] = conn.writer
        if sub.join_leave:
            t.join_leave[conn] = None

    def detach(self, conn: Connection, topic: str) -> None:
        conn.subs.pop(topic, None)
        t = self._topics.get(topic)
        if t is None:
            return
        t.active.pop(conn, None)
        t.pending.pop(conn, None)
        t.join_leave.pop(conn, None)
        if not t.active and not t.pending:
            if t.unsubscribe is not None:
                t.unsubscribe()
            if t.unwatch is not None:
                t.unwatch()
            del self._topics[topic]

    # -- fan-out ------------------------------------------------------------------------------

    def _on_publication(self, pub: Publication) -> None:
        t = self._topics.get(pub.topic)
        if t is None:
            return
        self.publications_total += 1
        for sub in t.pending.values():
            sub.backlog.append(pub)
        active = t.active
        if not active:
            return
        if ends_topic(pub.topic, pub.data):
            # The last publication a session topic will ever carry: deliver it, then end
            # the subscriptions (no one may subscribe to a deleted session's topic again).
            self._fan_out(active, pub)
            for conn in list(active):
                self.unsubscribe(conn.client, pub.topic, codes.SESSION_DELETED)
            return
        self._fan_out(active, pub)

    def _fan_out(
        self, active: dict[Connection, Callable[[bytes], object] | None], pub: Publication
    ) -> None:
        item = Out(proto.pub_push(pub.topic, pub.data, pub.offset))
        self.deliveries_total += len(active)
        now = time.monotonic()
        quiet = self._flush_handle is None and now - self._last_fanout >= self.burst_window
        self._last_fanout = now
        if quiet:
            # The first publication after a quiet spell goes out at once: one write per
            # subscriber, no queue pass first (the queues are empty: a queued item always
            # has a flush pending). What matters here is latency, so the loop is one call
            # into the engine per subscriber; an engine without a raw writer goes through
            # the connection. A slow reader is found by the engine (``Sink`` notes) or
            # here, and disconnected after the loop: the loop must not change ``active``.
            framed = item.framed
            slow: list[Connection] | None = None
            for conn, write in active.items():
                if write is not None:
                    write(framed)
                elif conn.send_now(item):
                    slow = slow or []
                    slow.append(conn)
            for conn in slow or ():
                conn.drop_if_slow()
            return
        dirty = self._dirty
        # In a burst, the hot loop is one list append per subscriber (the same object for
        # all) and every queue leaves in one write at the end of the loop turn.
        for conn in active:
            q = conn.queue
            if not q:
                dirty.append(conn)
            q.append(item)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _on_presence(self, event: PresenceEvent) -> None:
        t = self._topics.get(event.topic)
        if t is None or not t.join_leave:
            return
        info = proto.client_info(event.info.client, event.info.user, event.info.conn_info)
        payload = (proto.join_push if event.joined else proto.leave_push)(event.topic, info)
        item = Out(payload)
        for conn in list(t.join_leave):
            conn.enqueue(item)

    def mark_dirty(self, conn: Connection) -> None:
        self._dirty.append(conn)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()

    # -- liveness -----------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            try:
                await self.tick()
            except Exception:
                log.exception("realtime tick failed")

    async def tick(self) -> None:
        """Ping everyone, drop the silent, expired and never-connected, renew leases."""
        now = time.monotonic()
        wall = time.time()
        renew: list[Connection] = []
        for conn in list(self._all):
            if conn.principal is None:
                if now - conn.opened_at >= self.ping_interval:
                    conn.disconnect(codes.STALE)
                continue
            if conn.expires_at is not None and wall >= conn.expires_at:
                conn.disconnect(codes.CONNECTION_EXPIRED)
                continue
            if conn.awaiting_pong:
                conn.disconnect(codes.NO_PONG)
                continue
            conn.awaiting_pong = True
            conn.enqueue(self._ping)
            if conn.subs:
                renew.append(conn)
        for conn in renew:
            for topic, sub in list(conn.subs.items()):
                if sub.active and not conn.closed:
                    await self.presence.join(topic, conn.info(), ttl=self.lease_ttl)
        await self.presence.expire()
        await self.broker.expire()

    # -- server-side actions ------------------------------------------------------------------

    def unsubscribe(
        self, client: str, topic: str, code: codes.Code = codes.UNSUBSCRIBE_SERVER
    ) -> bool:
        """End one client's subscription from the server side (code 2000 by default)."""
        conn = self.connections.get(client)
        if conn is None or topic not in conn.subs:
            return False
        self.detach(conn, topic)
        conn.enqueue(Out(proto.unsubscribe_push(topic, code)))
        self.spawn(self.presence.leave(topic, client))
        return True

    def stats(self) -> dict[str, Any]:
        """Counters for metrics and the dashboard."""
        now = time.monotonic()
        if now - self._rate_at >= 1.0:
            self._rate = (self.deliveries_total - self._rate_count) / (now - self._rate_at)
            self._rate_at, self._rate_count = now, self.deliveries_total
        return {
            "connections": len(self._all),
            "sse_streams": self.sse_streams,
            "subscriptions": sum(len(c.subs) for c in self._all),
            "topics": len(self._topics),
            "messages_per_second": round(self._rate, 1),
            "publications_total": self.publications_total,
            "deliveries_total": self.deliveries_total,
            "slow_disconnects": self.stats_slow,
            "recovered": self.stats_recovered,
            "unrecovered": self.stats_unrecovered,
        }
