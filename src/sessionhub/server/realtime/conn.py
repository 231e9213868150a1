"""One realtime connection on the engine, whatever its wire format.

A wire module (Centrifugo, KATO's ``/ws``, the frame relay, SSE, ...) subclasses
:class:`Conn` and implements what its format decides: what a received message means
(:meth:`Conn.received`), what it says before closing (:meth:`Conn.goodbye`), what liveness
means (:meth:`Conn.tick`). Everything else is shared here: the one ordered send queue that
the node flushes once per event-loop turn (replies queued in one turn leave in one frame),
the slow-consumer policy (a connection with more than ``max_queue_bytes`` unsent is cut off
with code 3008, never allowed to hold the others up), the per-address count and the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ...core import codes
from ...core.codes import Code
from ...core.streams import Publication
from .socket import Handshake, Out, RawWriter, Sink

if TYPE_CHECKING:
    from .node import RealtimeNode

log = logging.getLogger("sessionhub.realtime")

#: Turns a publication into the frame subscribers of one wire format receive; the same
#: function object for every connection of that format, so the frame is built once.
Encoder = Callable[[Publication], Out]


class Conn:
    """State shared by every kind of realtime connection."""

    # Slots: a node holds one of these per socket, tens of thousands of them; a wire that
    # keeps a handful of fields more may leave out ``__slots__`` (it then gets a dict).
    __slots__ = (
        "_batches",
        "client",
        "closed",
        "handshake",
        "heard",
        "node",
        "opened_at",
        "queue",
        "sink",
        "topics",
        "writer",
    )

    #: Label in metrics and stats.
    wire = "websocket"
    #: ``websocket`` or ``sse``.
    transport = "websocket"
    #: Largest message a client may send on this wire (bytes).
    max_message = 1 << 20
    #: A reader that falls behind is disconnected (3008); False: the wire copes itself
    #: (the frame relay keeps only the newest frame for a slow viewer).
    drop_slow = True
    #: Whether text messages queued together may leave as one frame, newline-separated (the
    #: Centrifugo protocol allows it); False for wires whose clients parse one JSON a frame.
    joinable = True
    #: For ``drop_slow = False`` wires: unsent bytes above which the socket counts as full
    #: (``writable`` is called once it has drained below a quarter of it).
    write_limit = 64 * 1024

    def __init__(self, node: RealtimeNode, sink: Sink, handshake: Handshake) -> None:
        self.node = node
        self.sink = sink
        self.handshake = handshake
        self.client = str(uuid.uuid4())
        #: What waits for the next flush; the empty tuple when nothing does (an idle
        #: connection holds no list), a list from the first item on.
        self.queue: list[Out] | tuple[()] = ()
        self.closed = False
        self.opened_at = time.time()
        #: Set when anything arrives; the liveness check of wires without their own pings.
        self.heard = True
        #: The engine's raw writer (its transport) for the latency path of a lone
        #: publication, or None. An engine that sets it must also report a slow reader
        #: itself (the fast engine does so from ``pause_writing``) and never let it write
        #: once the connection is closed (a closed connection is detached from its topics).
        self.writer: RawWriter | None = None
        #: Topics the node delivers to this connection (live, pending or presence); a tuple,
        #: rebuilt by the node when one is added or dropped (rare): most connections follow
        #: one or two, and a tuple of one is 48 bytes where a list is 88 and a set 216.
        self.topics: tuple[str, ...] = ()
        #: Reply batches queued this turn, sealed at the flush; None when there are none
        #: (no list per idle connection).
        self._batches: list[Out] | None = None

    # -- what a wire module implements --------------------------------------------------------

    def opened(self) -> None:
        """The handshake is done: greet, authenticate, join (may spawn tasks)."""

    def received(self, payload: bytes, binary: bool) -> None:
        """One complete message from the client."""

    def goodbye(self, code: int, reason: str) -> list[Out]:
        """What to send before the close frame when the server ends the connection."""
        return []

    def tick(self, now: float) -> Coroutine[Any, Any, None] | None:
        """The node's periodic liveness check (every ping interval); may return work for
        the node to await (renewing leases). By default: a WebSocket ping, and a
        connection that sent nothing (not even a pong) since the previous tick is closed
        with 1011."""
        if not self.heard:
            self.disconnect(1011, "no answer to pings")
            return None
        self.heard = False
        self.sink.ping()
        return None

    def deliver(self, pub: Publication) -> None:
        """A publication for a topic this connection follows with a per-connection encoding."""

    def topic_ended(self, topic: str) -> None:
        """``topic`` will carry nothing more (its session was deleted)."""
        self.node.detach(self, topic)

    def topic_gap(self, topic: str) -> None:
        """The live stream of ``topic`` skipped publications (another node's broker link
        dropped some): the client must recover. By default: reconnect and recover (3010)."""
        self.disconnect(codes.INSUFFICIENT_STATE)

    def writable(self) -> None:
        """The socket drained after being full (only for ``drop_slow = False`` wires)."""

    def cleanup(self) -> None:
        """The connection is over (closed by either side): release what it holds."""

    # -- output -------------------------------------------------------------------------------

    def enqueue(self, item: Out) -> None:
        if self.closed:
            return
        q = self.queue
        if q:
            q.append(item)
        else:
            self.queue = [item]
            self.node.mark_dirty(self)

    def send(self, payload: bytes) -> None:
        """Queue one message of this connection's own (not shared with others)."""
        self.enqueue(Out(payload, shared=False))

    def reply(self, payload: bytes) -> None:
        """Queue a reply; replies queued in one loop turn leave in one frame (batching)."""
        if self.closed:
            return
        q = self.queue
        if q:
            last = q[-1]
            if last.parts is not None:
                last.parts.append(payload)
                return
        batch = Out.batch(payload)
        if self._batches is None:
            self._batches = [batch]
        else:
            self._batches.append(batch)
        self.enqueue(batch)

    def flush(self) -> None:
        """Write what is queued (called by the node once per loop turn)."""
        items = self.queue
        if self.closed or not items:
            return
        self.queue = ()
        if self._batches is not None:
            for batch in self._batches:
                batch.seal()
            self._batches = None
        try:
            self.sink.write(items)
        except Exception:
            log.debug("write failed", exc_info=True)
            self.disconnect(codes.WRITE_ERROR)
            return
        self.drop_if_slow()

    def drop_if_slow(self) -> None:
        """Disconnect with 3008 (and count it) if more than ``max_queue_bytes`` is unsent."""
        if self.drop_slow and not self.closed and self.sink.buffered() > self.node.max_queue_bytes:
            self.node.stats_slow += 1
            self.disconnect(codes.SLOW)

    def send_now(self, item: Out) -> bool:
        """Write ``item`` now, unless something is queued (then after it, in order).
        Whether the connection is now too far behind (the caller disconnects it)."""
        if self.closed:
            return False
        q = self.queue
        if q:
            q.append(item)
            return False
        self.sink.write_one(item)
        return self.drop_slow and self.sink.buffered() > self.node.max_queue_bytes

    def disconnect(self, code: Code | int, reason: str = "") -> None:
        """End the connection with ``code``: what is queued (unless it is too slow to take
        it), the wire's goodbye, and a close frame with the same code."""
        if self.closed:
            return
        number = code.code if isinstance(code, Code) else code
        if isinstance(code, Code):
            reason = reason or code.message
        if code is not codes.SLOW and self.queue:
            self.flush()
            if self.closed:
                return
        self.closed = True
        self.queue = ()
        self._batches = None
        try:
            last = self.goodbye(number, reason)
            if last:
                self.sink.write(last)
            self.sink.close(number, reason)
        except Exception:
            log.debug("close failed", exc_info=True)
        self._end()

    def lost(self) -> None:
        """The transport is gone (the peer closed, the network failed)."""
        if not self.closed:
            self.closed = True
            self.queue = ()
        self._end()

    def _end(self) -> None:
        if self.node.unregister(self):
            try:
                self.cleanup()
            except Exception:
                log.exception("cleanup of a %s connection failed", self.wire)

    def spawn(self, coro: object) -> None:
        """Run ``coro`` as a task the node tracks (cancelled at shutdown)."""
        self.node.spawn(coro)

    @staticmethod
    def loop() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()
