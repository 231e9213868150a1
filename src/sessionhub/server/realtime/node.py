"""The realtime node: every socket of this process, whatever its wire format.

Registry. Each connection (Centrifugo, KATO ``/ws``, the frame relay, SSE, ...) registers
here; the node counts them per wire and per peer address (a per-address limit refuses a
storm from one host), runs one liveness tick for all of them and exports one set of metrics.

Fan-out. The node subscribes to a broker topic while at least one local connection follows
it. Each publication is turned into its frame once per wire format that follows the topic
(an ``Encoder``: the same bytes for every connection of that format); connections whose
format needs per-connection framing (SSE ids carry every topic's position) get
``Conn.deliver`` instead. A publication after a quiet spell (none in the last
``burst_window`` seconds) is written to every subscriber at once, so a lone event costs one
pass and one write per subscriber. In a burst the same object is appended to every
subscriber's queue instead and one callback flushes every queue that received something, so
a burst leaves each connection in one write. Under sustained load that callback waits, after
the previous pass ended, a quarter of the time that pass took (at most ``burst_window``):
a pass over a thousand subscribers takes milliseconds, the publishers answer its writes with
the next publications, and without the pause those would be split over twice as many writes
(a syscall per subscriber each; measured in ``bench/fanout.py``'s window mode). A connection
whose unsent bytes exceed ``max_queue_bytes`` is disconnected with code 3008 (slow) and never
holds the others up: nothing here waits on a socket.

Continuity. The node remembers each followed topic's last offset and epoch; a publication
that does not follow on (a broker link that lost messages, a new epoch) is a gap, and every
connection on that topic is told to recover (``Conn.topic_gap``) rather than carry on past
a hole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from ...core import codes
from ...core.errors import Unauthenticated
from ...core.principal import Principal
from ...core.streams import PresenceEvent, Publication
from ...core.topics import ends_topic
from ...hub import Hub
from ...tasks import every
from .conn import Conn, Encoder
from .socket import Handshake, Out, RawWriter, Sink

log = logging.getLogger("sessionhub.realtime")

#: Under load, the share of the last pass's duration (a flush, or a lone publication's
#: writes) the next flush waits after it ended (at most ``burst_window``). A quarter: at
#: N = 1000 it merged the publications a pass set off into the next one's writes (0.24 ->
#: 0.13 writes per delivery), at N = 100 it cost nothing measurable; a half began to leave
#: the core idle.
FLUSH_PAUSE = 0.25

#: Who connected without credentials where that is allowed (compared by identity).
ANONYMOUS = Principal("anonymous")

#: Opens a connection of one wire format for an accepted handshake.
Factory = Callable[["RealtimeNode", Sink, Handshake], Conn]
Writer = RawWriter | None


@dataclass(slots=True)
class _Topic:
    name: str
    #: Encoder (None: per-connection ``deliver``) -> connections receiving live
    #: publications (a dict: ordered, O(1) removal), each with its engine's raw writer.
    groups: dict[Encoder | None, dict[Conn, Writer]] = field(default_factory=dict)
    #: Connections whose subscribe is being answered: publications go to their backlog.
    pending: dict[Conn, list[Publication]] = field(default_factory=dict)
    #: Connections that asked for join/leave pushes, with the encoder of those pushes.
    presence: dict[Conn, Callable[[PresenceEvent], Out | None]] = field(default_factory=dict)
    #: The last offset and epoch delivered (continuity check); None before the first.
    offset: int = -1
    epoch: str = ""
    unsubscribe: Callable[[], None] | None = None
    unwatch: Callable[[], None] | None = None
    #: ``(name,)``: the ``Conn.topics`` of every connection that follows this topic alone,
    #: one tuple for all of them rather than 48 bytes each.
    alone: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.alone = (self.name,)

    def follow(self, conn: Conn) -> None:
        """Add this topic to ``conn.topics`` (a tuple: ``unregister`` iterates a snapshot)."""
        topics = conn.topics
        if not topics:
            conn.topics = self.alone
        elif self.name not in topics:
            conn.topics = (*topics, self.name)

    def empty(self) -> bool:
        return not self.pending and not any(self.groups.values())


@dataclass(frozen=True, slots=True)
class Route:
    """A WebSocket path pattern (``/stream/{session_id}``) and the wire that serves it."""

    pattern: str
    factory: Factory
    wire: str
    regex: re.Pattern[str]

    @classmethod
    def make(cls, pattern: str, factory: Factory, wire: str) -> Route:
        rx = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(pattern))
        return cls(pattern, factory, wire, re.compile(f"^{rx}$"))


class RealtimeNode:
    """One process's realtime state: connections, topic fan-out, liveness, metrics."""

    def __init__(
        self,
        hub: Hub,
        auth: Any,
        *,
        ping_interval: float = 25.0,
        max_queue_bytes: int = 1 << 20,
        max_per_peer: int = 4096,
        close_timeout: float = 5.0,
        handshake_timeout: float = 10.0,
        burst_window: float = 0.002,
        recover_limit: int = 1000,
    ) -> None:
        self.hub = hub
        self.auth = auth
        self.ping_interval = ping_interval
        self.lease_ttl = max(3 * ping_interval, 1.0)
        self.max_queue_bytes = max_queue_bytes
        self.max_per_peer = max_per_peer
        self.close_timeout = close_timeout
        self.handshake_timeout = handshake_timeout
        #: Publications replayed at most when a client recovers (the history size).
        self.recover_limit = recover_limit
        self.routes: list[Route] = []
        self.clients: dict[str, Conn] = {}
        self._all: dict[Conn, None] = {}
        self._per_peer: dict[str, int] = {}
        self._topics: dict[str, _Topic] = {}
        self._dirty: list[Conn] = []
        self._flush_handle: asyncio.Handle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        #: Publications closer together than this are a burst: coalesced per loop turn.
        self.burst_window = burst_window
        self._last_fanout = -1e9
        #: How long the last pass took (a flush, or a lone publication's writes), seconds;
        #: sets the pause before the next flush.
        self._flush_took = 0.0
        #: Called on every tick (wires with node-wide timers, e.g. KATO's updates).
        self.on_tick: list[Callable[[], Coroutine[Any, Any, None]]] = []
        # counters
        self.publications_total = 0
        self.deliveries_total = 0
        self.stats_slow = 0
        self.stats_recovered = 0
        self.stats_unrecovered = 0
        self.stats_refused = 0
        self.stats_gaps = 0
        self._rate_at = time.monotonic()
        self._rate_count = 0
        self._rate = 0.0

    # -- routes -------------------------------------------------------------------------------

    def route(self, pattern: str, factory: Factory, *, wire: str) -> None:
        """Serve WebSocket upgrades of ``pattern`` with ``factory``."""
        self.routes.append(Route.make(pattern, factory, wire))

    def match(self, path: str) -> tuple[Route, dict[str, str]] | None:
        for r in self.routes:
            m = r.regex.match(path)
            if m is not None:
                return r, m.groupdict()
        return None

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

    def admit(self, peer: str) -> bool:
        """Whether one more connection from ``peer`` is allowed (the per-address limit)."""
        if peer and self._per_peer.get(peer, 0) >= self.max_per_peer:
            self.stats_refused += 1
            return False
        return True

    def register(self, conn: Conn) -> None:
        self._all[conn] = None
        peer = conn.handshake.peer
        if peer:
            self._per_peer[peer] = self._per_peer.get(peer, 0) + 1

    def unregister(self, conn: Conn) -> bool:
        """Forget ``conn`` (and detach it from every topic); False if it was not known."""
        known = conn in self._all
        self._all.pop(conn, None)
        if self.clients.get(conn.client) is conn:
            del self.clients[conn.client]
        if not known:
            return False
        peer = conn.handshake.peer
        if peer and peer in self._per_peer:
            left = self._per_peer[peer] - 1
            if left > 0:
                self._per_peer[peer] = left
            else:
                del self._per_peer[peer]
        for topic in conn.topics:  # a tuple: detach rebinds it, this pass keeps the old one
            self.detach(conn, topic)
        return True

    def authenticate(self, handshake: Handshake, *, anonymous: bool) -> Principal | tuple[int, str]:
        """Who opened ``handshake`` (its token or API key), or the close code and reason to
        refuse it with. Without credentials: ``ANONYMOUS`` (this very object, which no token
        can produce) if ``anonymous`` is allowed, else refused."""
        authorization, api_key = handshake.credentials()
        if not authorization and not api_key:
            if anonymous:
                return ANONYMOUS
            return codes.INVALID_TOKEN.code, "token required: ?token=<jwt> or Authorization"
        try:
            principal: Principal = self.auth.authenticate(authorization, api_key)
        except Unauthenticated as exc:
            return codes.INVALID_TOKEN.code, exc.detail[:100]
        return principal

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def connections(self, wire: str | None = None) -> list[Conn]:
        return [c for c in self._all if wire is None or c.wire == wire]

    # -- topics -------------------------------------------------------------------------------

    def _topic(self, name: str) -> _Topic:
        t = self._topics.get(name)
        if t is None:
            t = self._topics[name] = _Topic(name)
            t.unsubscribe = self.hub.broker.subscribe(name, self._on_publication)
        return t

    def attach(self, conn: Conn, topic: str, backlog: list[Publication]) -> None:
        """Register ``conn`` as pending on ``topic``: publications go to ``backlog``."""
        t = self._topic(topic)
        t.pending[conn] = backlog
        t.follow(conn)

    def live(self, conn: Conn, topic: str, encoder: Encoder | None) -> None:
        """Deliver ``topic`` to ``conn`` from now on: framed by ``encoder`` (shared by every
        connection of that wire), or through ``conn.deliver`` when ``encoder`` is None."""
        t = self._topic(topic)
        t.pending.pop(conn, None)
        t.groups.setdefault(encoder, {})[conn] = conn.writer if encoder is not None else None
        t.follow(conn)

    def watch(self, conn: Conn, topic: str, encode: Callable[[PresenceEvent], Out | None]) -> None:
        """Send ``conn`` the join/leave events of ``topic``, framed by ``encode``."""
        t = self._topic(topic)
        if t.unwatch is None:
            t.unwatch = self.hub.presence.watch(topic, self._on_presence)
        t.presence[conn] = encode
        t.follow(conn)

    def detach(self, conn: Conn, topic: str) -> None:
        if topic in conn.topics:
            conn.topics = tuple(t for t in conn.topics if t != topic)
        t = self._topics.get(topic)
        if t is None:
            return
        t.pending.pop(conn, None)
        for group in t.groups.values():
            group.pop(conn, None)
        t.presence.pop(conn, None)
        if not t.presence and t.unwatch is not None:
            t.unwatch()
            t.unwatch = None
        if t.empty():
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
        for backlog in t.pending.values():
            backlog.append(pub)
        if pub.offset:  # broadcasts (offset 0) carry no position
            gap = t.offset >= 0 and (pub.epoch != t.epoch or pub.offset != t.offset + 1)
            t.offset, t.epoch = pub.offset, pub.epoch
            if gap and pub.offset > 0:
                self.stats_gaps += 1
                for conn in [c for g in t.groups.values() for c in g]:
                    conn.topic_gap(pub.topic)
                return
        groups = t.groups
        if not groups:
            return
        ended = ends_topic(pub.topic, pub.data)
        quiet = self._quiet()
        for encoder, active in list(groups.items()):
            if not active:
                continue
            if encoder is None:
                self.deliveries_total += len(active)
                for conn in list(active):
                    conn.deliver(pub)
            else:
                self._fan_out(active, encoder(pub), quiet)
        if ended:
            # The last publication a session topic will ever carry: delivered above; now
            # end the subscriptions (no one may subscribe to a deleted session's topic again).
            for conn in [c for g in groups.values() for c in g]:
                conn.topic_ended(pub.topic)

    def _quiet(self) -> bool:
        # Measured from the end of the previous fan-out (direct or flushed): a pass over
        # many subscribers can take longer than the window, and timing from its start
        # would call every publication of a steady stream "quiet" and write it on its own.
        return (
            self._flush_handle is None and time.monotonic() - self._last_fanout >= self.burst_window
        )

    def _fan_out(self, active: dict[Conn, Writer], item: Out, quiet: bool) -> None:
        self.deliveries_total += len(active)
        if quiet:
            # The first publication after a quiet spell goes out at once: one write per
            # subscriber, no queue pass first (the queues are empty: a queued item always
            # has a flush pending). What matters here is latency, so the loop is one call
            # into the engine per subscriber; an engine without a raw writer goes through
            # the connection. A slow reader is found by the engine (``Sink`` notes) or
            # here, and disconnected after the loop: the loop must not change ``active``.
            framed = item.framed
            slow: list[Conn] | None = None
            started = time.monotonic()
            for conn, writer in active.items():
                if writer is not None:
                    writer.write(framed)
                elif conn.send_now(item):
                    slow = slow or []
                    slow.append(conn)
            for conn in slow or ():
                conn.drop_if_slow()
            self._last_fanout = time.monotonic()
            # A pass like a flush's: what it sets off is paced by its own duration (not by
            # an earlier burst's), a long pass over many subscribers as a long flush.
            self._flush_took = self._last_fanout - started
            return
        dirty = self._dirty
        # In a burst, the hot loop is one list append per subscriber (the same object for
        # all) and every queue leaves in one write at the next flush.
        for conn in active:
            q = conn.queue
            if q:
                q.append(item)
            else:
                conn.queue = [item]
                dirty.append(conn)
        if self._flush_handle is None:
            self._schedule_flush()

    def _on_presence(self, event: PresenceEvent) -> None:
        t = self._topics.get(event.topic)
        if t is None or not t.presence:
            return
        framed: dict[Callable[[PresenceEvent], Out | None], Out | None] = {}
        for conn, encode in list(t.presence.items()):
            if encode not in framed:
                framed[encode] = encode(event)
            item = framed[encode]
            if item is not None:
                conn.enqueue(item)

    def mark_dirty(self, conn: Conn) -> None:
        self._dirty.append(conn)
        if self._flush_handle is None:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        """The flush of every dirty queue: next loop turn, or, right after a long pass, once
        ``FLUSH_PAUSE`` of its duration (at most ``burst_window``) has passed since it ended,
        so that what its writes set off joins the next one (module docstring)."""
        loop = asyncio.get_running_loop()
        pause = min(self.burst_window, FLUSH_PAUSE * self._flush_took)
        wait = self._last_fanout + pause - time.monotonic()
        if wait > 0.0002:  # a shorter timer is no pause (uvloop's count in milliseconds)
            self._flush_handle = loop.call_later(wait, self._flush)
        else:
            self._flush_handle = loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        started = time.monotonic()
        dirty, self._dirty = self._dirty, []
        # The subscribers of a topic queued the same frames in the same order: one join
        # serves them all (a list compares its items by identity first, and ``Out`` by
        # identity only), and their transports hold one buffer instead of one each.
        joined: list[Out] | None = None
        joined_data = b""
        for conn in dirty:
            q = conn.queue
            writer = conn.writer
            if writer is None or conn._batches or conn.closed or not q:
                conn.flush()  # replies to seal, an engine without a raw writer, or nothing
                continue
            # The hot path of a burst: shared frames only, one write of all of them. The
            # engine reports a slow reader itself (see ``Conn.writer``).
            conn.queue = ()
            if len(q) == 1:
                data = q[0].framed
            else:
                if q != joined:
                    joined, joined_data = q, b"".join([o.framed for o in q])
                data = joined_data
            try:
                writer.write(data)
            except Exception:  # a transport that closed under us
                conn.disconnect(codes.WRITE_ERROR)
        self._last_fanout = time.monotonic()
        self._flush_took = self._last_fanout - started

    # -- liveness -----------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        await every(self.ping_interval, self.tick, "realtime tick")

    async def tick(self) -> None:
        """Every connection's liveness check, then node-wide timers and lease expiry."""
        now = time.time()
        work = []
        for conn in list(self._all):
            if not conn.closed:
                job = conn.tick(now)
                if job is not None:
                    work.append(job)
        for job in work:
            await job
        for fn in list(self.on_tick):
            try:
                await fn()
            except Exception:
                log.exception("realtime timer failed")
        await self.hub.presence.expire()
        await self.hub.broker.expire()

    # -- numbers ------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters for metrics and the dashboards."""
        now = time.monotonic()
        if now - self._rate_at >= 1.0:
            self._rate = (self.deliveries_total - self._rate_count) / (now - self._rate_at)
            self._rate_at, self._rate_count = now, self.deliveries_total
        by_wire: dict[str, int] = {}
        sse = 0
        for c in self._all:
            if c.transport == "sse":
                sse += 1
            else:
                by_wire[c.wire] = by_wire.get(c.wire, 0) + 1
        return {
            "connections": sum(by_wire.values()),
            "sse_streams": sse,
            "by_wire": by_wire,
            "subscriptions": sum(len(g) for t in self._topics.values() for g in t.groups.values()),
            "topics": len(self._topics),
            "messages_per_second": round(self._rate, 1),
            "publications_total": self.publications_total,
            "deliveries_total": self.deliveries_total,
            "slow_disconnects": self.stats_slow,
            "recovered": self.stats_recovered,
            "unrecovered": self.stats_unrecovered,
            "refused": self.stats_refused,
            "gaps": self.stats_gaps,
        }
