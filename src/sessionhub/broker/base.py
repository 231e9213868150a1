"""The ``Broker`` protocol: per-topic streams with offsets, epochs and bounded history.

Every implementation (memory for one node, Redis for many) passes the same contract suite,
``tests/contract/test_broker.py``. Presence is a separate seam (``presence/``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol

from ..core.streams import Publication, StreamPosition

Listener = Callable[[Publication], None]


class Broker(Protocol):
    """Publishes to topics and keeps per-topic history.

    Offsets on a topic start at 1 and rise by exactly one per publication; each topic has an
    epoch that changes when its history is lost, never otherwise. Listeners of a topic are
    called in offset order, synchronously from ``publish`` on the publishing node (on other
    nodes: as soon as the message arrives), exactly once per publication. History keeps at
    most ``history_size`` publications per topic for at most ``history_ttl`` seconds;
    ``history`` returns publications after a position only if none in between were lost,
    and otherwise says so (``complete=False``) - never a silent gap.
    """

    #: Whether other nodes share this broker (False: this process is the only node, and
    #: what only a node knows needs no asking around).
    shared: ClassVar[bool]

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, topics: Sequence[str], data: bytes) -> dict[str, StreamPosition]:
        """Append ``data`` to each topic and notify listeners; returns each topic's new position."""

    async def position(self, topic: str) -> StreamPosition:
        """The topic's current position (offset 0 and a fresh epoch for an unused topic)."""

    async def history(
        self, topic: str, *, since: StreamPosition | None = None, limit: int = 100
    ) -> tuple[list[Publication], StreamPosition, bool]:
        """Publications after ``since`` (or the newest ``limit`` if None), oldest first.

        Returns ``(publications, current position, complete)``; ``complete`` is False when
        ``since`` is from another epoch, ahead of the stream, older than the retained
        window, or when more than ``limit`` publications follow it (the first ``limit`` are
        returned then).
        """

    async def broadcast(self, topic: str, data: bytes) -> None:
        """Deliver ``data`` to the listeners of ``topic`` on every node, without an offset or
        history (live media: screen-share frames, room datagrams). Listeners get a
        ``Publication`` with offset 0 and epoch ``""``; what a node misses is gone."""

    def subscribe(self, topic: str, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every new publication on ``topic``; returns an unsubscriber."""

    async def expire(self) -> None:
        """Drop state that aged out (streams nobody follows whose history expired).
        Called periodically by the server."""
