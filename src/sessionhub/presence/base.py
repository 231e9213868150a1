"""The ``Presence`` protocol: who follows a topic, as leases renewed by their node.

Kept apart from the broker (as Phoenix keeps ``Presence`` apart from ``PubSub``), so each seam
can be replaced on its own. Every implementation passes ``tests/contract/test_presence.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..core.streams import ClientInfo, PresenceEvent

PresenceListener = Callable[[PresenceEvent], None]


class Presence(Protocol):
    """Presence of connections on topics, as leases.

    ``join`` adds a lease for (topic, client) that lasts ``ttl`` seconds and is renewed by
    calling ``join`` again; the first ``join`` notifies watchers with a join event, a renewal
    does not. ``leave`` removes it with a ``left`` event; a lease that is not renewed in time
    is removed with a ``lost`` event (at the latest when presence of the topic is next read or
    ``expire`` runs). Presence and its events are per topic and concern every node.
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def join(self, topic: str, info: ClientInfo, *, ttl: float) -> bool:
        """Add or renew ``info.client``'s presence lease on ``topic``; True if it is new."""

    async def leave(self, topic: str, client: str) -> bool:
        """End ``client``'s presence on ``topic``; True if it was present."""

    async def presence(self, topic: str) -> dict[str, ClientInfo]:
        """The live presence of ``topic``, by client id."""

    async def stats(self, topic: str) -> tuple[int, int]:
        """``(clients, distinct users)`` present on ``topic``."""

    def watch(self, topic: str, listener: PresenceListener) -> Callable[[], None]:
        """Call ``listener`` for every join and leave on ``topic``; returns an unwatcher."""

    async def expire(self) -> int:
        """Remove leases that ran out (with ``lost`` events); returns how many. Called
        periodically by the server."""
