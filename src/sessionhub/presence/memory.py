"""In-process presence: one node, leases in memory."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.streams import ClientInfo, PresenceEvent
from .base import PresenceListener


@dataclass(slots=True)
class _Topic:
    #: client id -> (info, lease expiry)
    leases: dict[str, tuple[ClientInfo, float]] = field(default_factory=dict)
    listeners: list[PresenceListener] = field(default_factory=list)
    #: No lease expires before this (a lower bound: a renewal only moves a lease later).
    #: Every subscriber renews its lease each ping interval, and a join looks for lapsed
    #: leases first: without the bound each renewal scanned every lease of the topic, so
    #: N idle subscribers of one topic cost N² steps per interval (10,000: 10^8).
    soonest: float = float("inf")


class MemoryPresence:
    """``Presence`` for a single node."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._topics: dict[str, _Topic] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._topics.clear()

    def _notify(self, p: _Topic, event: PresenceEvent) -> None:
        for listener in tuple(p.listeners):
            listener(event)

    def _expire_topic(self, topic: str, p: _Topic, now: float) -> int:
        if now < p.soonest:
            return 0
        dead = [c for c, (_, until) in p.leases.items() if until <= now]
        for client in dead:
            info, _ = p.leases.pop(client)
            self._notify(p, PresenceEvent(topic, False, info, "lost"))
        p.soonest = min((until for _, until in p.leases.values()), default=float("inf"))
        return len(dead)

    async def join(self, topic: str, info: ClientInfo, *, ttl: float) -> bool:
        now = self._clock()
        p = self._topics.get(topic)
        if p is None:
            p = self._topics[topic] = _Topic()
        self._expire_topic(topic, p, now)
        new = info.client not in p.leases
        until = now + ttl
        p.leases[info.client] = (info, until)
        if until < p.soonest:
            p.soonest = until
        if new:
            self._notify(p, PresenceEvent(topic, True, info))
        return new

    async def leave(self, topic: str, client: str) -> bool:
        p = self._topics.get(topic)
        if p is None or client not in p.leases:
            return False
        info, _ = p.leases.pop(client)
        self._notify(p, PresenceEvent(topic, False, info, "left"))
        if not p.leases and not p.listeners:
            del self._topics[topic]
        return True

    async def presence(self, topic: str) -> dict[str, ClientInfo]:
        p = self._topics.get(topic)
        if p is None:
            return {}
        self._expire_topic(topic, p, self._clock())
        return {c: info for c, (info, _) in p.leases.items()}

    async def stats(self, topic: str) -> tuple[int, int]:
        clients = await self.presence(topic)
        return len(clients), len({i.user for i in clients.values()})

    def watch(self, topic: str, listener: PresenceListener) -> Callable[[], None]:
        p = self._topics.get(topic)
        if p is None:
            p = self._topics[topic] = _Topic()
        p.listeners.append(listener)
        target = p

        def unwatch() -> None:
            if listener in target.listeners:
                target.listeners.remove(listener)
            if not target.leases and not target.listeners and self._topics.get(topic) is target:
                del self._topics[topic]

        return unwatch

    async def expire(self) -> int:
        now = self._clock()
        removed = 0
        for topic, p in list(self._topics.items()):
            removed += self._expire_topic(topic, p, now)
            if not p.leases and not p.listeners:
                del self._topics[topic]
        return removed
