"""What one node has delivered on one topic it listens to, and what waits to be delivered.

Publications reach a node by two ways that race: the reply to its own ``publish`` and the
pub/sub connection (its own echo included); concurrent publishes overtake one another too.
``_Topic`` puts them back in offset order: a publication is delivered when every one before
it has been, a repeat (the echo of an own publication, a history entry already seen) is
dropped, and one that arrives ahead of a gap waits - until the gap closes by itself, or the
broker fills it from the history, or gives up on it (``skip``) because the history lost it.
Pure bookkeeping: no I/O; the broker decides when to read Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field

from ..core.streams import Publication, StreamPosition
from .base import Listener

log = logging.getLogger("sessionhub.broker.redis")


@dataclass(slots=True, eq=False)
class Topic:
    """The delivery state of one topic on this node (see the module doc).

    ``epoch`` is None until a baseline is known: the stream's position when this node began
    to listen (read from Redis), below which nothing is delivered. Until then, what arrives
    waits. ``target`` is the highest offset known to exist in ``epoch``.
    """

    name: str
    channel: bytes
    listeners: list[Listener] = field(default_factory=list)
    epoch: str | None = None
    delivered: int = 0
    target: int = 0
    pending: dict[int, Publication] = field(default_factory=dict)
    #: Epochs this topic had before (a late message of one is stale, never a new epoch).
    retired: deque[str] = field(default_factory=lambda: deque(maxlen=8))
    #: ``publish`` calls waiting for their publication to be delivered here.
    waiters: list[tuple[StreamPosition, asyncio.Future[None]]] = field(default_factory=list)
    #: The broker's task filling a gap (or reading the baseline), if one runs.
    repair: asyncio.Task[None] | None = None
    #: Read the stream's position again first (the subscription has just become live).
    resync: bool = False
    #: The repair task while it is only waiting (a grace period, or out an outage).
    waiting: asyncio.Task[None] | None = None
    #: Repairs in a row that could not reach Redis (their backoff).
    failures: int = 0
    closed: bool = False

    @property
    def behind(self) -> bool:
        """Whether something is known to be missing: a gap before what waits, or nothing
        to measure against yet."""
        return self.epoch is None or bool(self.pending) or self.target > self.delivered

    # -- input ----------------------------------------------------------------------------

    def offer(self, pub: Publication) -> bool:
        """Take one publication (from any source); True if a gap remains to be filled."""
        if self.epoch is not None and pub.epoch != self.epoch:
            if pub.epoch in self.retired:
                return self.behind  # from before the stream was reset: stale
            self._new_epoch(pub.epoch)
        if self.epoch is not None and pub.offset <= self.delivered:
            return self.behind  # delivered already: an echo or a repeat
        self.pending.setdefault(pub.offset, pub)
        if self.epoch is not None:
            self.target = max(self.target, pub.offset)
            self._drain()
        return self.behind

    def note(self, pos: StreamPosition) -> bool:
        """Take the stream's position as read from Redis; True if a gap remains."""
        if self.epoch is None:
            # The baseline. Whatever arrived already was published after this node began
            # to listen, so it is delivered even when it is older than ``pos``.
            early = [p for p in self.pending.values() if p.epoch == pos.epoch]
            self.epoch = pos.epoch
            self.delivered = min([pos.offset, *(p.offset - 1 for p in early)])
            self.pending = {p.offset: p for p in early}
            self.target = max([pos.offset, *self.pending])
            self._drain()
        elif pos.epoch != self.epoch:
            if pos.epoch not in self.retired:  # else a read that started before a reset
                self._new_epoch(pos.epoch)
                self.target = pos.offset
        else:
            self.target = max(self.target, pos.offset)
        self._resolve()
        return self.behind

    def skip(self) -> None:
        """Give up on the gap the history could not fill: deliver what is here, in order.
        The listeners see the jump in offsets (the realtime layer tells clients to recover)."""
        if not self.pending:
            self.delivered = max(self.delivered, self.target)
        else:
            first = self.pending[min(self.pending)]
            if self.epoch is None:
                self.epoch = first.epoch
                self.pending = {o: p for o, p in self.pending.items() if p.epoch == first.epoch}
            self.delivered = first.offset - 1
            self.target = max(self.target, *self.pending)
            self._drain()
        self._resolve()

    # -- waiting publishers ---------------------------------------------------------------

    def wait(self, pos: StreamPosition) -> asyncio.Future[None] | None:
        """A future done once ``pos`` is delivered here (None if it is already)."""
        if self._done(pos):
            return None
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append((pos, fut))
        return fut

    def close(self) -> None:
        self.closed = True
        self.pending.clear()
        for _, fut in self.waiters:
            if not fut.done():
                fut.set_result(None)
        self.waiters.clear()
        if self.repair is not None:
            self.repair.cancel()

    # -- internals ------------------------------------------------------------------------

    def _new_epoch(self, epoch: str) -> None:
        # The stream's history was lost: what waited belongs to the old epoch and will never
        # be completed; the new one is delivered from its first offset.
        if self.epoch is not None:
            self.retired.append(self.epoch)
        self.epoch = epoch
        self.delivered = self.target = 0
        self.pending = {}

    def _drain(self) -> None:
        while self.delivered + 1 in self.pending:
            self.delivered += 1
            pub = self.pending.pop(self.delivered)
            for listener in tuple(self.listeners):
                try:
                    listener(pub)
                except Exception:  # one failing listener must not stop the stream
                    log.exception("broker listener failed on %s", self.name)
        self._resolve()

    def _done(self, pos: StreamPosition) -> bool:
        return self.epoch is not None and (pos.epoch != self.epoch or pos.offset <= self.delivered)

    def _resolve(self) -> None:
        if not self.waiters:
            return
        keep: list[tuple[StreamPosition, asyncio.Future[None]]] = []
        for pos, fut in self.waiters:
            if fut.done():
                continue
            if self._done(pos):
                fut.set_result(None)
            else:
                keep.append((pos, fut))
        self.waiters = keep
