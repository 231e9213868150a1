"""The outbox: every committed event reaches the broker, once, in commit order.

The store's ``events`` table is the outbox. The hub commits a change and its event in one
transaction, then hands the event here, which publishes it on its topics and marks it
published (in batches, every ``mark_interval``). What can go wrong, and what happens:

* **The broker is down** (Redis restarting): the write is durable already, so the request
  that made it still succeeds; the event waits in this node's backlog, and so does every
  event committed after it (so each topic still gets them in commit order), until the broker
  answers again - then they are published in order, by themselves.
* **The process dies** between commit and publish, or between publish and mark: at the next
  start every unmarked event is published; one the broker already holds (Redis outlives the
  process) is recognised by its event id in the topic's recent history and only marked, so
  subscribers do not get it twice.
* **A node dies for good**: the node that runs the sweeps publishes what stayed unmarked for
  longer than a few seconds (:meth:`Outbox.republish_stale`), with the same check.

Delivery is therefore at least once only in the rare case the check cannot see (a history
that lost the event meanwhile); every publication carries the session ``version``, its
stable identity, so subscribers drop a repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from .broker.base import Broker
from .core.engine import Change
from .core.model import Event
from .core.topics import event_topics
from .store.base import Store
from .tasks import every, stop

log = logging.getLogger("sessionhub.outbox")

Published = Callable[[Event, Change | None], None]


@dataclass(slots=True)
class OutboxStats:
    #: Publishes that failed (the broker was down) and waited in the backlog.
    deferred: int = 0
    #: Unmarked events found already in the broker (not published twice).
    already_published: int = 0


def encode(event: Event) -> bytes:
    """The publication payload of an event: encoded once, shared by every subscriber."""
    return orjson.dumps(event.to_dict())


class Outbox:
    """Publishes committed events, in order, and keeps the outbox marks."""

    def __init__(
        self,
        store: Store,
        broker: Broker,
        *,
        published: Published,
        mark_interval: float = 0.2,
        retry: float = 0.5,
    ) -> None:
        self.store = store
        self.broker = broker
        self._published = published
        self.mark_interval = mark_interval
        self.retry = retry
        self.stats = OutboxStats()
        self._to_mark: list[int] = []
        #: Events committed but not yet published because the broker failed, in order.
        self._backlog: deque[tuple[Event, Change | None]] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        #: seq -> when the stale sweep first saw it unmarked.
        self._seen: dict[int, float] = {}

    @property
    def degraded(self) -> bool:
        """Whether events are waiting for the broker to answer again."""
        return bool(self._backlog)

    async def start_loops(self) -> None:
        """Start marking and draining in the background (after :meth:`republish`)."""
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._mark_loop(), name="sessionhub-outbox-marks"))
        self._tasks.append(loop.create_task(self._drain_loop(), name="sessionhub-outbox-drain"))

    async def close(self) -> None:
        await stop(self._tasks)
        self._tasks.clear()
        with contextlib.suppress(Exception):
            await self.flush_marks()

    # -- publishing ---------------------------------------------------------------------------

    async def publish(self, event: Event, change: Change | None) -> None:
        """Publish a committed event (or queue it behind earlier ones the broker refused)."""
        if self._backlog:
            self._backlog.append((event, change))
            return
        try:
            await self.broker.publish(event_topics(event), encode(event))
        except Exception as exc:
            # Durable already: the request that made it succeeds; the event waits here.
            log.warning(
                "broker refused event %s (%s); publishing it when it is back", event.id, exc
            )
            self.stats.deferred += 1
            self._backlog.append((event, change))
            self._wake.set()
            return
        self._done(event, change)

    def _done(self, event: Event, change: Change | None) -> None:
        if event.seq is not None:
            self._to_mark.append(event.seq)
        self._published(event, change)

    async def _drain_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._backlog:
                event, change = self._backlog[0]
                try:
                    await self.broker.publish(event_topics(event), encode(event))
                except Exception:
                    await asyncio.sleep(self.retry)
                    continue
                self._backlog.popleft()
                self._done(event, change)
            if self.stats.deferred:
                log.info("broker back: the events that waited are published")

    async def _already(self, event: Event) -> bool:
        """Whether the broker already holds ``event`` (published before a crash, unmarked)."""
        try:
            pubs, _, _ = await self.broker.history(f"session:{event.session_id}", limit=16)
        except Exception:
            return False
        marker = b'"id":' + orjson.dumps(event.id)
        return any(marker in p.data for p in pubs)

    async def _republish(self, events: list[Event]) -> int:
        done = 0
        for ev in events:
            if await self._already(ev):
                self.stats.already_published += 1
                if ev.seq is not None:
                    self._to_mark.append(ev.seq)
                continue
            await self.publish(ev, None)
            done += 1
        return done

    async def republish(self) -> int:
        """Publish every committed event not yet marked published (at start, after a crash)."""
        total = 0
        for _ in range(100_000):  # bounded: 50,000,000 events
            batch = await self.store.unpublished(limit=500)
            if not batch:
                break
            total += await self._republish(batch)
            await self.flush_marks()
            if self._backlog:
                break  # the broker is down: the drain publishes the rest, in order
        if total:
            log.info("republished %d events from the outbox", total)
        return total

    async def republish_stale(self, *, stale_after: float = 5.0) -> int:
        """Publish events another node committed and never marked (it died): those seen
        unmarked for longer than ``stale_after`` seconds. Run by one node (the sweeps')."""
        now = time.monotonic()
        batch = await self.store.unpublished(limit=500)
        mine = {e.seq for e, _ in self._backlog} | set(self._to_mark)
        seen = {e.seq: self._seen.get(e.seq, now) for e in batch if e.seq is not None}
        self._seen = seen  # forget what got marked meanwhile
        stale = [e for e in batch if e.seq not in mine and now - seen[e.seq or 0] >= stale_after]
        if not stale:
            return 0
        done = await self._republish(stale)
        await self.flush_marks()
        for e in stale:
            self._seen.pop(e.seq or 0, None)
        if done:
            log.info("published %d events a stopped node had left unpublished", done)
        return done

    # -- marks --------------------------------------------------------------------------------

    async def flush_marks(self) -> None:
        if self._to_mark:
            seqs, self._to_mark = self._to_mark, []
            try:
                await self.store.mark_published(seqs)
            except Exception:
                self._to_mark = seqs + self._to_mark  # kept for the next flush
                raise

    async def _mark_loop(self) -> None:
        await every(self.mark_interval, self.flush_marks, "marking events published")
