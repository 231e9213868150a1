"""The ``Broker`` protocol: per-topic streams (offset, epoch, history) and presence leases.

Every implementation (memory for one node, Redis for many) passes the same contract suite,
``tests/contract/test_broker.py``.
"""

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


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who is present on a topic: one connection (``client``) of one user."""

    client: str
    user: str
    #: Optional encoded JSON about the connection, shown in presence and join/leave.
    conn_info: bytes | None = None


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """A connection joined or left a topic. ``reason`` of a leave: ``left`` (it unsubscribed
    or disconnected) or ``lost`` (its lease ran out: its node died or stopped renewing)."""

    topic: str
    joined: bool
    info: ClientInfo
    reason: str = ""


Listener = Callable[[Publication], None]
PresenceListener = Callable[[PresenceEvent], None]


class Broker(Protocol):
    """Publishes to topics, keeps per-topic history, and keeps presence as leases.

    Streams. Offsets on a topic start at 1 and rise by exactly one per publication; each
    topic has an epoch that changes when its history is lost, never otherwise. Listeners of a
    topic are called in offset order, synchronously from ``publish`` on the publishing node
    (on other nodes: as soon as the message arrives), exactly once per publication. History
    keeps at most ``history_size`` publications per topic for at most ``history_ttl``
    seconds; ``history`` returns publications after a position only if none in between were
    lost, and otherwise says so (``complete=False``) — never a silent gap.

    Presence. ``join`` adds a lease for (topic, client) that lasts ``ttl`` seconds and is
    renewed by calling ``join`` again; the first ``join`` notifies presence listeners with a
    join event, a renewal does not. ``leave`` removes it with a ``left`` event; a lease that
    is not renewed in time is removed with a ``lost`` event (at the latest when presence of
    the topic is next read or ``expire`` runs). Presence and its events are per topic and
    concern every node.
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
        """Publications after ``since`` (or the newest ``limit`` if None), oldest first.

        Returns ``(publications, current position, complete)``; ``complete`` is False when
        ``since`` is from another epoch, ahead of the stream, older than the retained
        window, or when more than ``limit`` publications follow it (the first ``limit`` are
        returned then).
        """

    def subscribe(self, topic: str, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every new publication on ``topic``; returns an unsubscriber."""

    async def join(self, topic: str, info: ClientInfo, *, ttl: float) -> bool:
        """Add or renew ``info.client``'s presence lease on ``topic``; True if it is new."""

    async def leave(self, topic: str, client: str) -> bool:
        """End ``client``'s presence on ``topic``; True if it was present."""

    async def presence(self, topic: str) -> dict[str, ClientInfo]:
        """The live presence of ``topic``, by client id."""

    async def presence_stats(self, topic: str) -> tuple[int, int]:
        """``(clients, distinct users)`` present on ``topic``."""

    def watch_presence(self, topic: str, listener: PresenceListener) -> Callable[[], None]:
        """Call ``listener`` for every join and leave on ``topic``; returns an unsubscriber."""

    async def expire(self) -> int:
        """Remove presence leases that ran out (with ``lost`` events) and idle state; returns
        how many leases were removed. Called periodically by the server."""
