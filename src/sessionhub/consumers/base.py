"""Consumers: work driven by committed events, read in order from the event log.

A consumer (notifications, webhooks' outbox, live counts, the one-active-workspace rule) does
not listen to this process's hub; it reads the **event log** - the store's ``events`` table,
the same outbox the broker is fed from - in ``seq`` order, from a position. So it sees every
change committed by any node, in one order, and a crash resumes where it stopped:

* a **durable** consumer keeps its position in the store and advances it in the same
  transaction as the effects it stores (``Store.commit_consumer``: a compare-and-set on the
  position), so each event's effects are stored exactly once even if two nodes ran it;
* an **in-memory** consumer (the live counts) rebuilds its state from the store when it
  starts and follows the log from there.

The runner (:class:`Consumers`) tails the log for every consumer of this node: woken at once
by a commit on this node (the hub's publish hook) or on another (the broker's ``sessions``
topic, which every event is published on), and by a poll as a backstop. Only the node that
holds the ``consumers`` lease runs them (``leadership.py``: a fencing token, so a stale
leader knows it lost); another takes over when the lease lapses.

On PostgreSQL, sequence numbers are handed out when a row is inserted, not when it commits,
so ``seq`` 11 can be visible before ``seq`` 10. The runner only moves past a hole in the
sequence once it has stayed open for ``gap_grace`` seconds (a transaction that rolled back,
or events of a deleted session), never at once. On a store whose events become visible in
seq order (SQLite: ``Store.seq_in_order``) a hole is always a deleted session's events,
and the runner moves on at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..core.model import Event
from ..hub import Hub
from ..leadership import Leadership
from ..tasks import stop

log = logging.getLogger("sessionhub.consumers")

#: The lease every node competes for; its holder runs the consumers.
LEASE = "consumers"


class Consumer(Protocol):
    """One consumer of the event log."""

    #: Unique name; a durable consumer's position is stored under it.
    name: str
    #: Kinds whose events it wants (None: every kind). Others are skipped (and passed).
    kinds: frozenset[str] | None

    async def begin(self) -> int | None:
        """Prepare to run; return the position to start after for an in-memory consumer, or
        None to use the durable position in the store (0 when it has none)."""

    async def handle(self, events: Sequence[Event], start: int | None, position: int) -> bool:
        """Apply ``events`` (those of its kinds, in order) and move the position from
        ``start`` (None: the consumer has no stored position yet) to ``position`` (the seq of
        the last event read, wanted or not). Returns False when the stored position was not
        ``start`` (another node committed first): the runner then re-reads it and carries on
        from there."""

    async def end(self) -> None:
        """Leadership moved away or the node stops: drop what ``begin`` prepared."""


@dataclass(slots=True)
class _Cursor:
    consumer: Consumer
    position: int = 0
    #: Whether the position is stored (a durable consumer that committed once).
    stored: bool = False
    #: seq -> when a hole at that seq was first seen.
    holes: dict[int, float] = field(default_factory=dict)
    handled: int = 0


class Consumers:
    """Runs this node's consumers while it holds the ``consumers`` lease."""

    def __init__(
        self,
        hub: Hub,
        consumers: Sequence[Consumer] = (),
        *,
        node_id: str | None = None,
        lease_ttl: float = 10.0,
        poll: float = 1.0,
        batch: int = 200,
        gap_grace: float = 5.0,
    ) -> None:
        self.hub = hub
        self.node_id = node_id or uuid.uuid4().hex[:12]
        self.lease_ttl = lease_ttl
        self.poll = poll
        self.batch = batch
        self.gap_grace = gap_grace
        self._cursors = [_Cursor(c) for c in consumers]
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: list[object] = []
        self._stopping = False
        self.leadership = Leadership(
            hub, LEASE, self.node_id, ttl=lease_ttl, on_gain=self._begin, on_lose=self._end
        )

    @property
    def leading(self) -> bool:
        return self.leadership.leading

    @property
    def token(self) -> int | None:
        """The fencing token of the lease while this node leads, else None."""
        return self.leadership.token

    def add(self, consumer: Consumer) -> None:
        if self._task is not None:
            raise RuntimeError("add consumers before start()")
        self._cursors.append(_Cursor(consumer))

    @property
    def names(self) -> list[str]:
        return [c.consumer.name for c in self._cursors]

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None or not self._cursors:
            return
        self._unsubscribe.append(self.hub.add_listener(lambda _e, _c: self.wake()))
        self._unsubscribe.append(self.hub.broker.subscribe("sessions", lambda _p: self.wake()))
        # Take the lead (and let consumers read their starting positions) before the node
        # serves anything, so that no change made right after start-up is missed.
        await self.leadership.start()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="sessionhub-consumers"
        )

    async def close(self) -> None:
        for undo in self._unsubscribe:
            if callable(undo):
                undo()
        self._unsubscribe.clear()
        self._stopping = True
        task, self._task = self._task, None
        await stop([task])
        await self.leadership.close()

    def wake(self) -> None:
        self._idle.clear()
        self._wake.set()

    async def drain(self, limit: float = 5.0) -> None:
        """Wait (bounded) until every consumer has read the log up to its end (tests, and
        an orderly shutdown)."""
        if self._task is None:
            return
        self.wake()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                await self._idle.wait()

    # -- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            try:
                # Cleared before reading: a commit during this pass wakes the next one.
                self._wake.clear()
                busy = False
                if self.leading:
                    # Consumers at the same position share one read of the log.
                    read: dict[int, list[Event]] = {}
                    for cursor in self._cursors:
                        busy |= await self._step(cursor, read)
                if busy or self._wake.is_set():
                    continue
                self._idle.set()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation that races the event, and the runner would never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll):
                        await self._wake.wait()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("consumers: a pass failed; retrying")
                self._idle.set()
                await asyncio.sleep(min(self.poll, 1.0))

    async def _begin(self) -> None:
        """This node took the lead: every consumer reads where it starts."""
        for cursor in self._cursors:
            start = await cursor.consumer.begin()
            if start is None:
                stored = await self.hub.store.consumer_position(cursor.consumer.name)
                cursor.stored = stored is not None
                start = stored or 0
            cursor.position = start
            cursor.holes.clear()
        log.info("consumers on %s: %s", self.node_id, ", ".join(self.names))
        self.wake()

    async def _end(self) -> None:
        for cursor in self._cursors:
            with contextlib.suppress(Exception):
                await cursor.consumer.end()

    async def _step(self, cursor: _Cursor, read: dict[int, list[Event]] | None = None) -> bool:
        """Read and hand over one batch; True if there may be more right away. ``read``
        holds the batches this pass has read, by position."""
        events = read.get(cursor.position) if read is not None else None
        if events is None:
            events = await self.hub.store.events_after(cursor.position, limit=self.batch)
            if read is not None:
                read[cursor.position] = events
        if not events:
            return False
        ready = self._contiguous(cursor, events)
        if not ready:
            return False  # a hole that may still fill: wait for the next wake or poll
        consumer = cursor.consumer
        wanted = [e for e in ready if consumer.kinds is None or e.kind in consumer.kinds]
        last = ready[-1].seq
        assert last is not None
        start = cursor.position if cursor.stored else None
        if await consumer.handle(wanted, start, last):
            cursor.position = last
            cursor.stored = True
            cursor.handled += len(wanted)
        else:
            stored = await self.hub.store.consumer_position(consumer.name)
            cursor.stored = stored is not None
            cursor.position = max(cursor.position, stored or 0)
        return len(events) >= self.batch or len(ready) < len(events)

    def _contiguous(self, cursor: _Cursor, events: Sequence[Event]) -> list[Event]:
        """The events that may be handled now: up to the first hole that is still young."""
        out: list[Event] = []
        grace = 0.0 if self.hub.store.seq_in_order else self.gap_grace
        expected = cursor.position + 1
        now = time.monotonic()
        for ev in events:
            seq = ev.seq
            assert seq is not None
            if seq != expected:
                first = cursor.holes.setdefault(expected, now)
                if now - first < grace:
                    break  # an earlier transaction may still commit into the hole
                cursor.holes.pop(expected, None)
            out.append(ev)
            expected = seq + 1
        return out

    def stats(self) -> dict[str, object]:
        return {
            "leading": self.leading,
            "token": self.token,
            "positions": {c.consumer.name: c.position for c in self._cursors},
            "handled": {c.consumer.name: c.handled for c in self._cursors},
        }
