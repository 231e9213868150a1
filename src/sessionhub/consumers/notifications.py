"""Notifications: what kinds say about their events, stored per user, pushed live, sent out.

A kind turns an event into notifications with ``Kind.notifications(event, before)`` (pure,
``[{"event": name, "data": {...}}]``). The ``Notifier`` is a durable consumer of the event
log (``consumers/base.py``): for each batch of events it

1. derives the notifications, once per recipient, with ids derived from (event id, index,
   recipient), and the webhook deliveries of each (``consumers/webhooks.py``);
2. stores them and moves its position past the batch **in one transaction**
   (``Store.commit_consumer``, a compare-and-set on the position): each event's
   notifications and deliveries are stored exactly once, whichever node ran the batch and
   however often a crash made it run again;
3. after the commit, publishes each *new* notification ``{"id", "event", "data"}`` on the
   broker topic ``notifications:<user>`` (and ``admin:notifications`` for those addressed to
   admins), then wakes the webhook worker.

The live push happens after the commit: a node that dies between the two stores the
notification (it is listed) but does not push it. Recipients: the session's owner; a kind
may add ``"notify_admins": true`` to a notification (``remote_session_approval_needed`` does)
to address every admin too. Admin notifications are stored once under the reserved
recipient ``@admins`` and pushed on the topic ``admin:notifications``, which only admins may
subscribe to (an unknown topic prefix is admins-only in ``core.topics``), so no user name can
collide with it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from ..core.errors import Forbidden, InvalidInput
from ..core.kind import Kind
from ..core.model import JSON, Event, iso
from ..core.principal import Principal
from ..hub import Hub
from ..kinds.remote_access import NOTIFY_ADMINS
from ..store.base import DeliveryRow, Notification, NotificationRow, Store
from .webhooks import WebhookConfig, WebhookDispatcher

log = logging.getLogger("sessionhub.notifications")

#: The stored recipient of notifications addressed to every admin.
ADMINS = "@admins"
#: The topic on which notifications for admins are pushed.
ADMIN_TOPIC = "admin:notifications"


def user_topic(user: str) -> str:
    """The topic on which ``user``'s notifications are pushed."""
    return ADMIN_TOPIC if user == ADMINS else f"notifications:{user}"


def notification_id(event_id: str, index: int, recipient: str) -> str:
    """Deterministic, so storing the same event's notifications twice is a no-op."""
    raw = f"{event_id}\x1f{index}\x1f{recipient}".encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def _has_notifications(kind: Kind) -> bool:
    return type(kind).notifications is not Kind.notifications


class Notifier:
    """Stores, lists and pushes notifications; feeds the webhook outbox. A consumer."""

    name = "notifications"

    def __init__(self, hub: Hub, *, webhooks: WebhookDispatcher | None = None) -> None:
        self.hub = hub
        self.store: Store = hub.store
        self.webhooks = webhooks
        #: The kinds whose events produce notifications: the consumer reads only those.
        self.kinds: frozenset[str] | None = frozenset(
            n for n, k in hub.kinds.items() if _has_notifications(k)
        )
        #: Waits until the consumers have read the log to its end (set by the runtime), so a
        #: listing right after a change includes what the change notified.
        self.settle: Callable[[], Awaitable[None]] | None = None
        self.stored = 0

    @classmethod
    def with_webhooks(cls, hub: Hub, config: WebhookConfig) -> Notifier:
        """A notifier feeding a webhook dispatcher (``notifier.webhooks``) on the same store."""
        return cls(hub, webhooks=WebhookDispatcher(hub.store, config, clock=hub.clock))

    @property
    def engine(self) -> Any:
        """The store's SQLAlchemy engine, if it has one (diagnostics and tests)."""
        return getattr(self.store, "engine", None)

    async def drain(self) -> None:
        """Wait (bounded) until the events committed so far have their notifications."""
        if self.settle is not None:
            await self.settle()

    # -- the consumer -----------------------------------------------------------------

    async def begin(self) -> None:
        return None  # durable: the runner reads the stored position

    async def handle(self, events: Sequence[Event], start: int | None, position: int) -> bool:
        rows, deliveries = self._derive(events)
        ids = await self.store.commit_consumer(
            self.name, expected=start, position=position, notifications=rows, deliveries=deliveries
        )
        if ids is None:
            return False  # another node stored this batch first
        await self._push(rows, set(ids), bool(deliveries))
        return True

    async def end(self) -> None:
        return None

    def _derive(self, events: Sequence[Event]) -> tuple[list[NotificationRow], list[DeliveryRow]]:
        now = self.hub.clock()
        rows: list[NotificationRow] = []
        deliveries: list[DeliveryRow] = []
        for event in events:
            kind = self.hub.kinds.get(event.kind)
            notes = kind.notifications(event, None) if kind is not None else []
            for i, note in enumerate(notes):
                recipients = [event.owner]
                if note.get(NOTIFY_ADMINS):
                    recipients.append(ADMINS)
                for user in recipients:
                    rows.append(
                        NotificationRow(
                            id=notification_id(event.id, i, user),
                            user_id=user,
                            event=note["event"],
                            session_id=event.session_id,
                            data=note["data"],
                            created_at=event.at,
                        )
                    )
                if self.webhooks is not None and self.webhooks.enabled:
                    primary = notification_id(event.id, i, event.owner)
                    deliveries += self.webhooks.rows_for(primary, note, now)
        return rows, deliveries

    async def _push(self, rows: Sequence[NotificationRow], new: set[str], wake: bool) -> int:
        fresh = [row for row in rows if row.id in new]
        for row in fresh:
            pushed = {"id": row.id, "event": row.event, "data": row.data}
            try:
                await self.hub.broker.publish([user_topic(row.user_id)], orjson.dumps(pushed))
            except Exception:
                # Stored already: listed and sent out by webhooks; only the live push is lost.
                log.exception("pushing notification %s failed", row.id)
        self.stored += len(fresh)
        if wake and self.webhooks is not None:
            self.webhooks.wake()
        return len(fresh)

    async def store_and_push(self, event: Event, notes: Sequence[JSON]) -> int:
        """Store the notifications of one event (idempotent) and push the new ones, outside
        the consumer's position (the rebuild path)."""
        rows, deliveries = self._derive([event])
        added = await self.store.insert_notifications(rows, deliveries)
        return await self._push(rows, set(added.notifications), bool(added.deliveries))

    async def catch_up(self, *, after_seq: int = 0) -> int:
        """Re-derive the notifications of every event after ``after_seq`` and store the
        missing ones (an operator's rebuild, e.g. after restoring the notifications table
        from an older backup); returns how many were missing. Idempotent."""
        if not self.kinds:
            return 0
        added = 0
        last = after_seq
        for _ in range(100_000):  # bounded: 50,000,000 events
            batch = await self.store.events_after(last, limit=500, kinds=sorted(self.kinds))
            if not batch:
                break
            for ev in batch:
                added += await self.store_and_push(ev, [])
            last = batch[-1].seq or last
        if added:
            log.info("catch-up stored %d missing notifications", added)
        return added

    # -- reading ----------------------------------------------------------------------

    def _recipients(self, principal: Principal, user: str | None) -> list[str]:
        if user is None:
            if principal.is_admin:
                return [principal.sub, ADMINS]
            return [] if principal.sub == ADMINS else [principal.sub]
        if not principal.is_admin and (user != principal.sub or user == ADMINS):
            raise Forbidden("only admins may read another user's notifications")
        return [user]

    async def list(
        self,
        principal: Principal,
        *,
        user: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        unread: bool = False,
    ) -> JSON:
        """Newest first: ``{"notifications", "total", "unread", "next_cursor"}``."""
        await self.drain()
        users = self._recipients(principal, user)
        if cursor and not cursor.isdigit():
            raise InvalidInput("invalid cursor")
        page = await self.store.list_notifications(
            users, limit=limit, before_seq=int(cursor) if cursor else None, unread_only=unread
        )
        return {
            "notifications": [self._item(n) for n in page.items],
            "total": page.total,
            "unread": page.unread,
            "next_cursor": None if page.next_before is None else str(page.next_before),
        }

    @staticmethod
    def _item(n: Notification) -> JSON:
        return {
            "id": n.id,
            "event": n.event,
            "data": n.data,
            "user_id": n.user_id,
            "session_id": n.session_id,
            "created_at": iso(n.created_at),
            "read": n.read_at is not None,
        }

    async def mark_read(
        self, principal: Principal, *, ids: Sequence[str] | None = None, everything: bool = False
    ) -> int:
        """Mark the caller's notifications read (admins: also the ``@admins`` ones)."""
        await self.drain()
        if not everything and not ids:
            raise InvalidInput("send ids or all: true")
        users = self._recipients(principal, None)
        return await self.store.mark_notifications_read(
            users, at=self.hub.clock(), ids=None if everything else list(ids or ())
        )
