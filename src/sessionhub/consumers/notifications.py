"""Notifications: what kinds say about their events, stored per user, pushed live, sent out.

A kind turns an event into notifications with ``Kind.notifications(event, before)`` (pure,
``[{"event": name, "data": {...}}]``). The ``Notifier`` listens to the hub: the listener only
asks the kind and queues the result, and one worker task then

1. stores each notification in the ``notifications`` table, once per recipient, with an id
   derived from (event id, index, recipient): storing is an insert-if-absent, so an event
   republished from the outbox after a crash never duplicates a notification;
2. in the same transaction enqueues the webhook deliveries (``consumers/webhooks.py``);
3. after the commit, publishes each *new* notification ``{"id", "event", "data"}`` on the
   broker topic ``notifications:<user>`` (and ``admin:notifications`` for those addressed to
   admins), then wakes the webhook worker.

Recipients: the session's owner; a kind may add ``"notify_admins": true`` to a notification
(``remote_session_approval_needed`` does) to address every admin too. Admin notifications
are stored once under the reserved recipient ``@admins`` and pushed on the topic
``admin:notifications``, which only admins may subscribe to (an unknown topic prefix is
admins-only in ``core.topics``), so no user name can collide with it.

Nothing is lost across a crash: when the worker starts it re-derives notifications from the
events table for events newer than the newest stored notification (minus a margin, and at
most ``catchup`` old) and inserts whatever is missing, which covers events committed whose
notification was not yet written when the process died.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson

from ..core.engine import Change
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
#: How far before the newest stored notification the start-up catch-up looks.
CATCHUP_MARGIN = timedelta(minutes=5)
#: Events waiting for their notifications to be stored, at most.
MAX_QUEUE = 10_000


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
    """Stores, lists and pushes notifications; feeds the webhook outbox."""

    def __init__(
        self,
        hub: Hub,
        *,
        webhooks: WebhookDispatcher | None = None,
        catchup: timedelta = timedelta(hours=24),
    ) -> None:
        self.hub = hub
        self.store: Store = hub.store
        self.webhooks = webhooks
        self.catchup = catchup
        # Bounded: a burst beyond it is not dropped but rebuilt from the event log (the
        # events are durable), by a catch-up from the first event that did not fit.
        self._queue: asyncio.Queue[tuple[Event, list[JSON]]] = asyncio.Queue(MAX_QUEUE)
        self._overflow_since: datetime | None = None
        self.overflows = 0
        self._task: asyncio.Task[None] | None = None
        self.stored = 0

    @classmethod
    def with_webhooks(
        cls, hub: Hub, config: WebhookConfig, *, catchup: timedelta = timedelta(hours=24)
    ) -> Notifier:
        """A notifier feeding a webhook dispatcher (``notifier.webhooks``) on the same store."""
        notifier = cls(hub, catchup=catchup)
        notifier.webhooks = WebhookDispatcher(hub.store, config, clock=hub.clock)
        return notifier

    @property
    def engine(self) -> Any:
        """The store's SQLAlchemy engine, if it has one (diagnostics and tests)."""
        return getattr(self.store, "engine", None)

    def install(self) -> None:
        self.hub.add_listener(self._on_event)

    # -- producing --------------------------------------------------------------------

    def _on_event(self, event: Event, change: Change | None) -> None:
        kind = self.hub.kinds.get(event.kind)
        if kind is None:
            return
        notes = kind.notifications(event, change.before if change is not None else None)
        if notes:
            try:
                self._queue.put_nowait((event, notes))
            except asyncio.QueueFull:
                self.overflows += 1
                if self._overflow_since is None or event.at < self._overflow_since:
                    self._overflow_since = event.at

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sessionhub-notifications")

    async def close(self) -> None:
        await self.drain(limit=5.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def drain(self, limit: float = 5.0) -> None:
        """Wait (bounded) until every queued event's notifications are stored."""
        if self._task is None or self._task.done():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), limit)

    async def _run(self) -> None:
        try:
            await self.catch_up()
        except Exception:
            log.exception("notification catch-up failed")
        while True:
            event, notes = await self._queue.get()
            try:
                for attempt in range(3):
                    try:
                        await self.store_and_push(event, notes)
                        break
                    except Exception:
                        # Kept for the next start's catch-up if this keeps failing.
                        log.exception("storing notifications of %s failed", event.id)
                        await asyncio.sleep(0.1 * (attempt + 1))
            finally:
                self._queue.task_done()
            if self._overflow_since is not None and self._queue.empty():
                since, self._overflow_since = self._overflow_since, None
                try:
                    await self.catch_up(since=since)
                except Exception:
                    log.exception("notification catch-up after an overflow failed")
                    self._overflow_since = since

    async def store_and_push(self, event: Event, notes: Sequence[JSON]) -> int:
        """Store the notifications of one event (idempotent) and push the new ones."""
        now = self.hub.clock()
        rows: list[NotificationRow] = []
        deliveries: list[DeliveryRow] = []
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
        # One transaction for the notifications and their deliveries, insert-if-absent.
        added = await self.store.insert_notifications(rows, deliveries)
        new = set(added.notifications)
        fresh = [row for row in rows if row.id in new]
        for row in fresh:
            pushed = {"id": row.id, "event": row.event, "data": row.data}
            await self.hub.broker.publish([user_topic(row.user_id)], orjson.dumps(pushed))
        self.stored += len(fresh)
        if added.deliveries and self.webhooks is not None:
            self.webhooks.wake()
        return len(fresh)

    async def catch_up(self, *, since: datetime | None = None) -> int:
        """Store notifications of recent events that have none: after a crash (from the
        newest stored notification, at most ``catchup`` back) or, with ``since``, after the
        in-memory queue overflowed (from the first event that did not fit)."""
        kinds = {n: k for n, k in self.hub.kinds.items() if _has_notifications(k)}
        if not kinds:
            return 0
        if since is not None:
            cutoff = since
        else:
            cutoff = self.hub.clock() - self.catchup
            newest = await self.store.newest_notification_at()
            if newest is not None:
                cutoff = max(cutoff, newest - CATCHUP_MARGIN)
        last_seq = 0
        added = 0
        for _ in range(10_000):  # bounded: 5,000,000 events
            batch = await self.store.events_since(
                kinds=list(kinds), at_or_after=cutoff, after_seq=last_seq, limit=500
            )
            if not batch:
                break
            for ev in batch:
                notes = kinds[ev.kind].notifications(ev, None)
                if notes:
                    added += await self.store_and_push(ev, notes)
            last_seq = batch[-1].seq or last_seq
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
