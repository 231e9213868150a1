"""The ``Store`` protocol: what the hub and the services above it need from durable
storage, side tables included, and the contract of each operation.

Nothing outside ``store/`` writes SQL: services keep their rows (chat messages,
notifications, webhook deliveries, consumer positions, leases, raw upstream input) through
these methods, so any implementation of the protocol serves them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar, Literal, Protocol

from ..core.engine import Change
from ..core.model import JSON, Event, Session
from ..core.query import Due, Page, SessionQuery

__all__ = [
    "ChatMessage",
    "Delivery",
    "DeliveryRow",
    "DeliveryStatus",
    "Due",
    "Inserted",
    "Notification",
    "NotificationPage",
    "NotificationRow",
    "Page",
    "RawRecord",
    "SessionQuery",
    "Store",
]

DeliveryStatus = Literal["pending", "delivered", "failed"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One stored chat message; ``position`` is 1-based within its session."""

    id: str
    session_id: str
    position: int
    role: str
    content: str
    metadata: JSON
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NotificationRow:
    """A notification to store for one recipient. ``id`` is deterministic (derived from the
    event), so storing it twice is a no-op."""

    id: str
    user_id: str
    event: str
    session_id: str | None
    data: JSON
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Notification:
    """A stored notification; ``seq`` orders them (newest has the highest)."""

    seq: int
    id: str
    user_id: str
    event: str
    session_id: str | None
    data: JSON
    created_at: datetime
    read_at: datetime | None


@dataclass(frozen=True, slots=True)
class NotificationPage:
    """One page of notifications, newest first. ``total`` counts every row matching the
    filter (across pages), ``unread`` every unread row of the recipients (whatever the
    filter), and ``next_before`` is the ``before_seq`` of the next page (None on the last)."""

    items: list[Notification]
    total: int
    unread: int
    next_before: int | None


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """A webhook delivery to enqueue: a signed POST of ``body`` to ``url``, first due at
    ``next_attempt_at``. ``id`` is deterministic (notification and URL), so enqueueing the
    same delivery twice is a no-op."""

    id: str
    url: str
    body: str
    next_attempt_at: datetime
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    """A stored webhook delivery and its progress."""

    seq: int
    id: str
    url: str
    body: str
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    failed_at: datetime | None
    last_error: str | None
    created_at: datetime

    @property
    def status(self) -> DeliveryStatus:
        if self.delivered_at is not None:
            return "delivered"
        return "failed" if self.failed_at is not None else "pending"


@dataclass(frozen=True, slots=True)
class Inserted:
    """The ids of the rows an insert-if-absent actually wrote (the others existed)."""

    notifications: list[str]
    deliveries: list[str]


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One raw input an upstream connector received, kept as it came."""

    seq: int
    source: str
    received_at: datetime
    payload: str


class Store(Protocol):
    """Durable sessions, events and the side tables of the services above the hub.

    Contract (tested against every implementation by ``tests/contract/test_store*.py``):

    - ``insert`` and ``save`` write the session row and append its event in **one
      transaction**; when they return, both are durable. Events are stored unpublished.
    - ``save`` is compare-and-set: it succeeds only if the stored version equals
      ``change.before.version``; otherwise it raises ``VersionConflict`` carrying the
      current session (``extra["current"]``) and writes nothing.
    - ``insert`` with an idempotency key that was used before by the same owner writes
      nothing and returns the session created the first time, unless both requests carry
      a fingerprint and they differ: then it raises ``IdempotencyConflict``.
    - Every event gets a ``seq`` greater than that of every event stored before it, also
      of events deleted since (a seq is never handed out twice). Where ``seq_in_order``,
      events also become visible in seq order, so a hole in the log is never filled later
      (it is a deleted session's events); otherwise (PostgreSQL sequences) a hole may be a
      transaction still committing.
    - ``unpublished`` returns committed events not yet marked published, oldest first;
      ``mark_published`` is idempotent.
    - ``touch`` only moves ``last_activity_at`` forward and never bumps ``version``.
    - Concurrent writes are independent: an implementation may commit several in one
      transaction (SQLite's group commit does), but one write's failure (a lost
      compare-and-set, a duplicate, any error) fails only that write and leaves none of its
      rows behind, and a write is reported done only once it is durable; if the shared
      transaction fails, every write in it fails.
    - When the database cannot be reached (refused, closed, timed out, connection lost),
      an operation raises ``Unavailable``: never success for a write that is not durable.
      A write interrupted that way may or may not have committed; the caller retries
      (every write here is idempotent or compare-and-set, so a retry is safe).
    - Text must not contain NUL characters (``InvalidInput``); a filter containing one
      matches nothing.
    """

    url: str
    seq_in_order: ClassVar[bool]

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and apply migrations (idempotent; several nodes may start at once)."""

    async def close(self) -> None:
        """Finish queued writes and disconnect; afterwards every call is ``Unavailable``."""

    async def ping(self) -> None:
        """Raise if the store cannot answer a trivial query."""

    # -- sessions and events -------------------------------------------------------------

    async def insert(
        self,
        change: Change,
        *,
        idempotency_key: str | None = None,
        fingerprint: str | None = None,
    ) -> tuple[Session, Event | None]:
        """Store a new session and its created event; returns (session, stored event).

        With an ``idempotency_key`` the owner used before, nothing is written and the event
        is None; the session is the first one as it is now. ``fingerprint`` (at most 128
        characters, e.g. a hash of the request) is kept with the key: a replay whose
        fingerprint differs from the stored one raises ``IdempotencyConflict``; when
        either is None nothing is compared. A taken session id raises ``DuplicateId``."""

    async def save(self, change: Change) -> Event:
        """Store a changed session and its event (compare-and-set); returns the stored event."""

    async def delete(self, session: Session, tombstone: Event) -> Event:
        """Delete the session, its events and its chat messages, and append ``tombstone``
        (a deleted event), in one transaction; returns the stored tombstone."""

    async def get(self, session_id: str) -> Session | None: ...

    async def get_many(self, session_ids: Iterable[str]) -> dict[str, Session]: ...

    async def find(self, query: SessionQuery) -> Page:
        """Sessions matching ``query``, newest first (created_at, then id), one page.
        ``query.text`` matches case-insensitively as a substring of the id, the owner or
        the attributes JSON (``%`` and ``_`` are literal)."""

    async def count(self, query: SessionQuery) -> int:
        """How many sessions match ``query``'s filters (limit, cursor and offset ignored)."""

    async def count_by_kind_state(self) -> dict[tuple[str, str], int]: ...

    async def events(
        self, session_id: str, *, after_version: int = 0, limit: int = 100
    ) -> list[Event]:
        """A session's events with version > ``after_version``, oldest first."""

    async def unpublished(self, limit: int = 500) -> list[Event]: ...

    async def events_since(
        self, *, kinds: Sequence[str], at_or_after: datetime, after_seq: int = 0, limit: int = 500
    ) -> list[Event]:
        """A page of events of ``kinds`` at or after a time, by ``seq`` (for rebuilding
        derived records such as notifications after a crash)."""

    async def mark_published(self, seqs: Sequence[int]) -> None: ...

    async def touch(self, activity: Mapping[str, datetime]) -> int:
        """Move ``last_activity_at`` forward for many sessions; returns rows changed."""

    async def due(self, due: Due) -> list[Session]:
        """Sessions of ``due.kind`` in ``due.states`` whose ``due.column`` is before
        ``due.before``, oldest first, at most ``due.limit``."""

    async def rotate_keys(self, batch: int = 500) -> int:
        """Re-seal every sealed value with the newest key; returns the values rewritten."""

    # -- consumers: durable positions in the event log -----------------------------------

    async def last_seq(self) -> int:
        """The highest ``seq`` of any stored event (0 if none). Every event appended later
        has a greater one, so a consumer starting here sees only what comes next."""

    async def events_after(
        self, seq: int, *, limit: int = 500, kinds: Sequence[str] | None = None
    ) -> list[Event]:
        """Committed events with ``seq`` greater than ``seq`` (of ``kinds`` only, if
        given), oldest first, at most ``limit``.

        On PostgreSQL a seq is drawn when the event is written, not when it commits, so
        two concurrent transactions may become visible out of seq order: a consumer that
        has moved past seq N may still see an event with a lower seq appear later. SQLite
        has one writer, so there it never happens."""

    async def consumer_position(self, name: str) -> int | None:
        """The position (a seq) the consumer ``name`` committed last; None if it never did."""

    async def commit_consumer(
        self,
        name: str,
        *,
        expected: int | None,
        position: int,
        notifications: Sequence[NotificationRow] = (),
        deliveries: Sequence[DeliveryRow] = (),
    ) -> list[str] | None:
        """In ONE transaction: move the consumer ``name`` from ``expected`` (None: it has no
        position yet) to ``position``, and insert-if-absent the notification and delivery
        rows (the effects of the events between the two).

        Returns the ids of the notifications newly inserted, or None if the stored position
        was not ``expected`` (another node got there first): then nothing is written. So
        each event's effects are committed exactly once, however many nodes consume.
        ``position`` must not be below ``expected`` (``ValueError``)."""

    # -- leases: one holder at a time, with fencing ---------------------------------------

    async def acquire_lease(
        self, name: str, holder: str, *, ttl: timedelta, now: datetime
    ) -> int | None:
        """Take the lease ``name`` for ``holder`` until ``now + ttl`` if it is free, expired
        or already ``holder``'s (then this renews it). Returns the fencing token, which
        stays the same while one holder keeps renewing and is greater every time the lease
        changes hands (also after a release); None if another holder has it."""

    async def release_lease(self, name: str, holder: str) -> bool:
        """Give the lease up if ``holder`` has it (True); the next taker gets a new token."""

    # -- raw upstream input ---------------------------------------------------------------

    async def append_raw(self, source: str, items: Sequence[tuple[datetime, str]]) -> list[int]:
        """Keep raw inputs (received at, payload) of ``source``; returns their seqs, in order.
        Seqs only grow, also across trims."""

    async def read_raw(
        self, source: str, *, after_seq: int = 0, limit: int = 500
    ) -> list[RawRecord]:
        """``source``'s raw inputs with seq > ``after_seq``, oldest first."""

    async def trim_raw(self, source: str, keep: int) -> int:
        """Delete all but the newest ``keep`` raw inputs of ``source``; returns how many went."""

    # -- chat messages (workspaces) --------------------------------------------------------

    async def append_message(
        self,
        session_id: str,
        *,
        message_id: str,
        role: str,
        content: str,
        metadata: JSON,
        at: datetime,
    ) -> int:
        """Append a chat message to a session (content and metadata sealed at rest); returns
        its 1-based position among the session's messages."""

    async def count_messages(self, session_id: str) -> int: ...

    async def read_messages(self, session_id: str, *, offset: int, limit: int) -> list[ChatMessage]:
        """Messages ``offset + 1`` .. ``offset + limit`` of a session in the order appended."""

    # -- notifications --------------------------------------------------------------------

    async def insert_notifications(
        self, notifications: Sequence[NotificationRow], deliveries: Sequence[DeliveryRow] = ()
    ) -> Inserted:
        """Insert-if-absent (by id) the notifications and webhook deliveries in ONE
        transaction; returns which were new."""

    async def list_notifications(
        self,
        users: Sequence[str],
        *,
        limit: int,
        before_seq: int | None = None,
        unread_only: bool = False,
    ) -> NotificationPage:
        """Notifications of any of ``users``, newest first, with seq < ``before_seq`` if
        given, only unread ones if ``unread_only``; see ``NotificationPage`` for the counts."""

    async def mark_notifications_read(
        self, users: Sequence[str], *, at: datetime, ids: Sequence[str] | None = None
    ) -> int:
        """Mark unread notifications of ``users`` read at ``at``: those with ``ids``, or every
        one if ``ids`` is None. Returns how many changed (already read ones do not count)."""

    async def newest_notification_at(self) -> datetime | None:
        """The ``created_at`` of the newest stored notification (None if there is none)."""

    # -- webhook deliveries ---------------------------------------------------------------

    async def due_deliveries(self, now: datetime, limit: int) -> list[Delivery]:
        """Pending deliveries due at ``now``, soonest first (then by seq)."""

    async def claim_delivery(self, delivery_id: str, attempts: int, lease_until: datetime) -> bool:
        """Compare-and-set: if the delivery is pending with ``attempts`` attempts, count one
        more and push ``next_attempt_at`` to ``lease_until`` (so a node that dies
        mid-request is retried later by another). True if this call claimed it."""

    async def finish_delivery(
        self,
        delivery_id: str,
        *,
        last_error: str | None,
        delivered_at: datetime | None = None,
        failed_at: datetime | None = None,
        retry_at: datetime | None = None,
    ) -> None:
        """Record an attempt's outcome: exactly one of delivered, failed for good, or retry
        at ``retry_at`` (``ValueError`` otherwise), with the error of the attempt."""

    async def list_deliveries(
        self, *, limit: int = 50, status: DeliveryStatus | None = None
    ) -> list[Delivery]:
        """Newest deliveries first, optionally of one status."""

    async def count_pending_deliveries(self) -> int: ...
