"""The in-process broker: one node, history in memory, bounded by size and age."""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .base import Listener, Publication, StreamPosition


@dataclass(slots=True)
class _Stream:
    epoch: str
    offset: int = 0
    items: deque[tuple[float, Publication]] = field(default_factory=deque)
    listeners: list[Listener] = field(default_factory=list)


class MemoryBroker:
    """``Broker`` for a single node. History is lost on restart, so each topic gets a new
    epoch per process and clients that held an old one are told they cannot recover."""

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

    def _stream(self, topic: str) -> _Stream:
        s = self._streams.get(topic)
        if s is None:
            s = self._streams[topic] = _Stream(epoch=secrets.token_hex(4))
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
            pub = Publication(topic, s.offset, s.epoch, data)
            s.items.append((now, pub))
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
        pubs = [p for _, p in s.items]
        if since is None:
            return pubs[-limit:] if limit > 0 else [], pos, True
        if since.epoch != s.epoch or since.offset > s.offset:
            return [], pos, False
        oldest = pubs[0].offset if pubs else s.offset + 1
        complete = since.offset + 1 >= oldest
        after = [p for p in pubs if p.offset > since.offset]
        if len(after) > limit:
            return after[:limit], pos, False
        return after, pos, complete

    def subscribe(self, topic: str, listener: Listener) -> Callable[[], None]:
        s = self._stream(topic)
        s.listeners.append(listener)

        def unsubscribe() -> None:
            if listener in s.listeners:
                s.listeners.remove(listener)

        return unsubscribe
