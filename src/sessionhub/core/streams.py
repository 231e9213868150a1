"""Values of the topic streams: positions, publications and presence, shared by the broker,
the presence service, the hub and every transport.

A topic's stream has an **offset** (the offset of its newest publication; 0 before the first)
and an **epoch** (changes whenever the stream's history is lost). A client that holds a
position ``(offset, epoch)`` can ask for what followed it; the answer is either exactly that,
or the plain statement that it is gone.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where a topic's stream is: the offset of its newest publication and its epoch.

    The epoch changes whenever the topic's history is lost (a restart of the memory broker,
    a flushed Redis), so a client holding an old epoch knows it cannot recover.
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
