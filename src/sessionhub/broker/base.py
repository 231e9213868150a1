"""The ``Broker`` protocol."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where a topic's stream is: the offset of its newest publication and its epoch.

    The epoch changes whenever the topic's history is lost (a restart of the memory broker,
    an expired Redis stream), so a client holding an old epoch knows it cannot recover.
    """

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class Publication:
    """One message on one topic. ``data`` is encoded JSON, shared by every subscriber."""

    topic: str
    offset: int
    epoch: str
    data: bytes


Listener = Callable[[Publication], None]


class Broker(Protocol):
    """Publishes to topics and keeps per-topic history.

    Contract: offsets on a topic start at 1 and rise by exactly one per publication;
    listeners of a topic are called in offset order, synchronously from ``publish`` on the
    publishing node (remote nodes: as soon as the message arrives); ``history`` returns
    publications after a position only if none in between were lost, otherwise it says so.
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, topics: Sequence[str], data: bytes) -> dict[str, StreamPosition]:
        """Append ``data`` to each topic and notify listeners; returns each topic's new position."""

    async def position(self, topic: str) -> StreamPosition:
        """The topic's current position (offset 0 and a fresh epoch for an unused topic)."""

    async def history(
        self, topic: str, *, since: StreamPosition | None = None, limit: int = 100
    ) -> tuple[list[Publication], StreamPosition, bool]:
        """Publications after ``since`` (or the newest ``limit`` if None).

        Returns ``(publications, current position, complete)``; ``complete`` is False when
        ``since`` is from another epoch or older than the retained window.
        """

    def subscribe(self, topic: str, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every new publication on ``topic``; returns an unsubscriber."""
