"""The in-process broker: one node, history in memory, bounded by size and age."""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from ..core.streams import Publication, StreamPosition
from .base import Listener


@dataclass(slots=True)
class _Stream:
    epoch: str
    offset: int = 0
    last_publish: float = 0.0
    #: (published at, offset, data): plain values only, so the cyclic collector stops
    #: tracking them (a history of Publication objects was most of what every full
    #: collection walked, a pause of 10-30 ms per second under load).
    items: deque[tuple[float, int, bytes]] = field(default_factory=deque)
    listeners: list[Listener] = field(default_factory=list)


class MemoryBroker:
    """``Broker`` for a single node. History is lost on restart, so each topic gets a new
    epoch per process and clients that held an old one are told they cannot recover."""

    shared: ClassVar[bool] = False

    def __init__(
        self,
        *,
        history_size: int = 1000,
        history_ttl: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.history_size = history_size
        self.history_ttl = history_ttl
        self._clock = clock
        self._streams: dict[str, _Stream] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._streams.clear()

    # -- streams -----------------------------------------------------------------------------

    def _stream(self, topic: str) -> _Stream:
        s = self._streams.get(topic)
        if s is None:
            s = self._streams[topic] = _Stream(
                epoch=secrets.token_hex(4), last_publish=self._clock()
            )
        return s

    def _trim(self, s: _Stream, now: float) -> None:
        while s.items and (
            len(s.items) > self.history_size or now - s.items[0][0] > self.history_ttl
        ):
            s.items.popleft()

    async def publish(self, topics: Sequence[str], data: bytes) -> dict[str, StreamPosition]:
        now = self._clock()
        out: dict[str, StreamPosition] = {}
        for topic in topics:
            s = self._stream(topic)
            s.offset += 1
            s.last_publish = now
            pub = Publication(topic, s.offset, s.epoch, data)
            s.items.append((now, s.offset, data))
            self._trim(s, now)
            out[topic] = StreamPosition(s.offset, s.epoch)
            for listener in tuple(s.listeners):
                listener(pub)
        return out

    async def position(self, topic: str) -> StreamPosition:
        s = self._stream(topic)
        return StreamPosition(s.offset, s.epoch)

    async def history(
        self, topic: str, *, since: StreamPosition | None = None, limit: int = 100
    ) -> tuple[list[Publication], StreamPosition, bool]:
        s = self._stream(topic)
        self._trim(s, self._clock())
        pos = StreamPosition(s.offset, s.epoch)
        if since is None:
            if limit <= 0:
                return [], pos, True
            n = len(s.items)
            return _publications(topic, s, list(s.items)[max(0, n - limit) :]), pos, True
        if since.epoch != s.epoch or since.offset > s.offset or since.offset < 0:
            return [], pos, False
        oldest = s.items[0][1] if s.items else s.offset + 1
        complete = since.offset + 1 >= oldest
        if not complete:
            return [], pos, False
        # Offsets in the deque are contiguous, so the start index is arithmetic.
        start = since.offset + 1 - oldest
        items = list(s.items)
        after = _publications(topic, s, items[start : start + max(limit, 0)])
        return after, pos, len(items) - start <= max(limit, 0)

    async def broadcast(self, topic: str, data: bytes) -> None:
        s = self._streams.get(topic)
        if s is None or not s.listeners:
            return
        pub = Publication(topic, 0, "", data)
        for listener in tuple(s.listeners):
            listener(pub)

    def subscribe(self, topic: str, listener: Listener) -> Callable[[], None]:
        s = self._stream(topic)
        s.listeners.append(listener)

        def unsubscribe() -> None:
            if listener in s.listeners:
                s.listeners.remove(listener)

        return unsubscribe

    async def expire(self) -> None:
        now = self._clock()
        # A stream whose history has aged out and that nobody listens to costs memory for
        # nothing; dropping it gives the topic a new epoch, so a client that recovers from
        # its old position is told plainly that it cannot (it could not anyway: the window
        # has passed) rather than silently.
        for topic, s in list(self._streams.items()):
            self._trim(s, now)
            if not s.items and not s.listeners and now - s.last_publish > self.history_ttl:
                del self._streams[topic]


def _publications(
    topic: str, s: _Stream, items: list[tuple[float, int, bytes]]
) -> list[Publication]:
    return [Publication(topic, offset, s.epoch, data) for _, offset, data in items]
