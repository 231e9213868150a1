"""The ``Store`` protocol: what the hub needs from durable storage, and its contract."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from ..core.engine import Change
from ..core.model import Event, Session
from ..core.query import Due, Page, SessionQuery

__all__ = ["Due", "Page", "SessionQuery", "Store"]


class Store(Protocol):
    """Durable sessions and events.

    Contract (tested against every implementation by ``tests/contract/test_store.py``):

    - ``insert`` and ``save`` write the session row and append its event in **one
      transaction**; when they return, both are durable. Events are stored unpublished.
    - ``save`` is compare-and-set: it succeeds only if the stored version equals
      ``change.before.version``; otherwise it raises ``VersionConflict`` carrying the
      current session (``extra["current"]``) and writes nothing.
    - ``insert`` with an idempotency key that was used before by the same owner writes
      nothing and returns the session created the first time.
    - ``unpublished`` returns committed events not yet marked published, oldest first;
      ``mark_published`` is idempotent.
    - ``touch`` only moves ``last_activity_at`` forward and never bumps ``version``.
    - Concurrent writes are independent: an implementation may commit several in one
      transaction (SQLite's group commit does), but one write's failure (a lost
      compare-and-set, a duplicate, any error) fails only that write and leaves none of its
      rows behind, and a write is reported done only once it is durable; if the shared
      transaction fails, every write in it fails.
    """

    url: str

    async def start(self) -> None:
        """Connect and apply migrations."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the store cannot answer a trivial query."""

    async def insert(
        self, change: Change, *, idempotency_key: str | None = None
    ) -> tuple[Session, Event | None]:
        """Store a new session and its created event; returns (session, stored event).

        The event is None when the idempotency key was used before (nothing written)."""

    async def save(self, change: Change) -> Event:
        """Store a changed session and its event (compare-and-set); returns the stored event."""

    async def delete(self, session: Session, tombstone: Event) -> Event:
        """Delete the session and its events; append ``tombstone`` (a deleted event)."""

    async def get(self, session_id: str) -> Session | None: ...

    async def get_many(self, session_ids: Iterable[str]) -> dict[str, Session]: ...

    async def find(self, query: SessionQuery) -> Page: ...

    async def count(self, query: SessionQuery) -> int: ...

    async def count_by_kind_state(self) -> dict[tuple[str, str], int]: ...

    async def events(
        self, session_id: str, *, after_version: int = 0, limit: int = 100
    ) -> list[Event]: ...

    async def unpublished(self, limit: int = 500) -> list[Event]: ...

    async def events_since(
        self, *, kinds: Sequence[str], at_or_after: datetime, after_seq: int = 0, limit: int = 500
    ) -> list[Event]:
        """A page of events of ``kinds`` at or after a time, by ``seq`` (for rebuilding
        derived records such as notifications after a crash)."""

    async def mark_published(self, seqs: Sequence[int]) -> None: ...

    async def touch(self, activity: Mapping[str, datetime]) -> int:
        """Move ``last_activity_at`` forward for many sessions; returns rows changed."""

    async def due(self, due: Due) -> list[Session]: ...
