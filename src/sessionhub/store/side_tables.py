"""The side tables of the SQL stores: consumer positions, leases, raw upstream input, chat
messages, notifications and webhook deliveries (the ``Store`` protocol's second half).

Written once for both backends: each operation is a function of a synchronous connection
run by the backend's ``_read`` / ``_write`` / ``_write_one``. The only dialect-specific
piece is ``INSERT ... ON CONFLICT``, which SQLite and PostgreSQL spell alike but
SQLAlchemy builds per dialect (``_upsert``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
from sqlalchemy import Table, and_, bindparam, case, delete, func, or_, select, update
from sqlalchemy.engine import Connection, Row

from ..core.errors import InvalidInput
from ..core.model import JSON
from .base import (
    ChatMessage,
    Delivery,
    DeliveryRow,
    DeliveryStatus,
    Inserted,
    Notification,
    NotificationPage,
    NotificationRow,
    RawRecord,
)
from .schema import (
    UTCDateTime,
    chat_messages,
    consumer_positions,
    leases,
    notifications,
    raw_events,
    webhook_deliveries,
)
from .sealing import Sealer

T = TypeVar("T")
#: What a released lease expires at: long past, so anyone may take it.
_RELEASED = datetime(1970, 1, 1, tzinfo=UTC)
#: The largest seq a BIGINT holds: a cursor beyond it means "from the newest".
_MAX_SEQ = 2**63 - 1
_PENDING = and_(
    webhook_deliveries.c.delivered_at.is_(None), webhook_deliveries.c.failed_at.is_(None)
)


class SideTables(ABC):
    """Mixin of ``SqlStore``: the side-table half of the ``Store`` protocol."""

    sealer: Sealer

    @abstractmethod
    async def _read(self, fn: Callable[[Connection], T]) -> T: ...

    @abstractmethod
    async def _write(self, fn: Callable[[Connection], T]) -> T: ...

    @abstractmethod
    async def _write_one(self, fn: Callable[[Connection], T]) -> T: ...

    @abstractmethod
    def _upsert(self, table: Table) -> Any:
        """The dialect's ``insert(table)``, which has ``on_conflict_do_nothing/update``."""

    @abstractmethod
    def _lock_chat(self, conn: Connection, session_id: str) -> None:
        """Serialise appends to one session's chat until the transaction ends, so each
        counts the ones before it."""

    def _insert_absent(self, conn: Connection, table: Table, rows: Sequence[JSON]) -> list[str]:
        """INSERT ... ON CONFLICT (id) DO NOTHING for many rows in one statement; returns
        the ids of the rows that were new."""
        if not rows:
            return []
        stmt = self._upsert(table).on_conflict_do_nothing(index_elements=["id"])
        new = {r[0] for r in conn.execute(stmt.returning(table.c.id), list(rows))}
        return [r["id"] for r in rows if r["id"] in new]  # in the caller's order

    # -- consumers -----------------------------------------------------------------------

    async def consumer_position(self, name: str) -> int | None:
        stmt = select(consumer_positions.c.position).where(consumer_positions.c.name == name)
        value = await self._read(lambda conn: conn.execute(stmt).scalar())
        return None if value is None else int(value)

    async def commit_consumer(
        self,
        name: str,
        *,
        expected: int | None,
        position: int,
        notifications: Sequence[NotificationRow] = (),
        deliveries: Sequence[DeliveryRow] = (),
    ) -> list[str] | None:
        if position < (expected or 0):
            raise ValueError(f"consumer {name!r} cannot move back from {expected} to {position}")
        now = datetime.now(UTC)  # for operators only: positions are seqs, not times
        note_rows = [_notification_values(n) for n in notifications]
        delivery_rows = [_delivery_values(d) for d in deliveries]

        def run(conn: Connection) -> list[str] | None:
            if expected is None:
                stmt: Any = (
                    self._upsert(consumer_positions)
                    .values(name=name, position=position, updated_at=now)
                    .on_conflict_do_nothing(index_elements=["name"])
                )
            else:
                stmt = (
                    update(consumer_positions)
                    .where(
                        consumer_positions.c.name == name,
                        consumer_positions.c.position == expected,
                    )
                    .values(position=position, updated_at=now)
                )
            if conn.execute(stmt).rowcount != 1:
                return None  # another node moved it first; nothing of ours is written
            added = self._insert_absent(conn, notifications_table, note_rows)
            self._insert_absent(conn, webhook_deliveries, delivery_rows)
            return added

        return await self._write(run)

    # -- leases --------------------------------------------------------------------------

    async def acquire_lease(
        self, name: str, holder: str, *, ttl: timedelta, now: datetime
    ) -> int | None:
        if not holder:
            raise ValueError("a lease holder needs a name")
        ins = self._upsert(leases).values(
            name=bindparam("name"),
            holder=bindparam("holder"),
            token=1,
            expires_at=bindparam("until", type_=UTCDateTime()),
        )
        # ONE statement (atomic on both backends, so two nodes cannot both win): insert the
        # lease, or take the row over if it is ours or expired; the token rises only when
        # the holder changes.
        stmt = ins.on_conflict_do_update(
            index_elements=["name"],
            set_={
                "holder": ins.excluded.holder,
                "token": case(
                    (leases.c.holder == ins.excluded.holder, leases.c.token),
                    else_=leases.c.token + 1,
                ),
                "expires_at": ins.excluded.expires_at,
            },
            where=or_(
                leases.c.holder == ins.excluded.holder,
                leases.c.expires_at <= bindparam("now", type_=UTCDateTime()),
            ),
        ).returning(leases.c.token)
        params = {"name": name, "holder": holder, "until": now + ttl, "now": now}
        token = await self._write_one(lambda conn: conn.execute(stmt, params).scalar())
        return None if token is None else int(token)

    async def release_lease(self, name: str, holder: str) -> bool:
        stmt = (
            update(leases)
            .where(leases.c.name == name, leases.c.holder == holder)
            .values(holder="", expires_at=_RELEASED)
        )
        return bool(await self._write_one(lambda conn: conn.execute(stmt).rowcount == 1))

    # -- raw upstream input --------------------------------------------------------------

    async def append_raw(self, source: str, items: Sequence[tuple[datetime, str]]) -> list[int]:
        if not items:
            return []
        rows = [{"source": source, "received_at": at, "payload": payload} for at, payload in items]
        stmt = raw_events.insert().returning(raw_events.c.seq, sort_by_parameter_order=True)
        return await self._write(lambda conn: [int(r[0]) for r in conn.execute(stmt, rows)])

    async def read_raw(
        self, source: str, *, after_seq: int = 0, limit: int = 500
    ) -> list[RawRecord]:
        stmt = (
            select(raw_events)
            .where(raw_events.c.source == source, raw_events.c.seq > after_seq)
            .order_by(raw_events.c.seq)
            .limit(limit)
        )
        rows = await self._read(lambda conn: conn.execute(stmt).all())
        return [
            RawRecord(
                seq=m["seq"], source=m["source"], received_at=m["received_at"], payload=m["payload"]
            )
            for m in (r._mapping for r in rows)
        ]

    async def trim_raw(self, source: str, keep: int) -> int:
        if keep < 0:
            raise ValueError("keep must be 0 or more")
        # The seq of the newest row that goes: the (keep + 1)-th newest (none: nothing goes).
        cutoff = (
            select(raw_events.c.seq)
            .where(raw_events.c.source == source)
            .order_by(raw_events.c.seq.desc())
            .limit(1)
            .offset(keep)
            .scalar_subquery()
        )
        stmt = delete(raw_events).where(raw_events.c.source == source, raw_events.c.seq <= cutoff)
        return await self._write_one(lambda conn: max(0, conn.execute(stmt).rowcount or 0))

    # -- chat messages ---------------------------------------------------------------------

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
        if "\x00" in session_id or "\x00" in role:
            raise InvalidInput("chat fields must not contain NUL characters")
        values = {
            "id": message_id,
            "session_id": session_id,
            "role": role,
            "content": self.sealer.seal(content),
            "metadata": self.sealer.seal(orjson.dumps(metadata).decode()),
            "created_at": at,
        }

        def run(conn: Connection) -> int:
            self._lock_chat(conn, session_id)
            result = conn.execute(chat_messages.insert(), values)
            seq = result.inserted_primary_key[0] if result.inserted_primary_key else None
            position = conn.execute(
                select(func.count())
                .select_from(chat_messages)
                .where(chat_messages.c.session_id == session_id, chat_messages.c.seq <= seq)
            ).scalar_one()
            return int(position)

        return await self._write(run)

    async def count_messages(self, session_id: str) -> int:
        stmt = (
            select(func.count())
            .select_from(chat_messages)
            .where(chat_messages.c.session_id == session_id)
        )
        return int(await self._read(lambda conn: conn.execute(stmt).scalar_one()))

    async def read_messages(self, session_id: str, *, offset: int, limit: int) -> list[ChatMessage]:
        stmt = (
            select(chat_messages)
            .where(chat_messages.c.session_id == session_id)
            .order_by(chat_messages.c.seq)
            .offset(offset)
            .limit(limit)
        )
        rows = await self._read(lambda conn: conn.execute(stmt).all())
        return [self._message(r, offset + i + 1) for i, r in enumerate(rows)]

    def _message(self, r: Row[Any], position: int) -> ChatMessage:
        m = r._mapping
        return ChatMessage(
            id=m["id"],
            session_id=m["session_id"],
            position=position,
            role=m["role"],
            content=self.sealer.open(m["content"]),
            metadata=orjson.loads(self.sealer.open(m["metadata"])),
            created_at=m["created_at"],
        )

    # -- notifications ---------------------------------------------------------------------

    async def insert_notifications(
        self, notifications: Sequence[NotificationRow], deliveries: Sequence[DeliveryRow] = ()
    ) -> Inserted:
        note_rows = [_notification_values(n) for n in notifications]
        delivery_rows = [_delivery_values(d) for d in deliveries]
        if not note_rows and not delivery_rows:
            return Inserted([], [])

        def run(conn: Connection) -> Inserted:
            return Inserted(
                self._insert_absent(conn, notifications_table, note_rows),
                self._insert_absent(conn, webhook_deliveries, delivery_rows),
            )

        return await self._write(run)

    async def list_notifications(
        self,
        users: Sequence[str],
        *,
        limit: int,
        before_seq: int | None = None,
        unread_only: bool = False,
    ) -> NotificationPage:
        table = notifications_table
        mine = table.c.user_id.in_(_storable(users))
        where: list[Any] = [mine]
        if unread_only:
            where.append(table.c.read_at.is_(None))
        page_where = list(where)
        if before_seq is not None:
            page_where.append(table.c.seq < min(before_seq, _MAX_SEQ))
        page = select(table).where(*page_where).order_by(table.c.seq.desc()).limit(limit + 1)
        total = select(func.count()).select_from(table).where(*where)
        unread = select(func.count()).select_from(table).where(mine, table.c.read_at.is_(None))

        def run(conn: Connection) -> NotificationPage:
            rows = conn.execute(page).all()
            items = [_notification(r) for r in rows[:limit]]
            return NotificationPage(
                items=items,
                total=int(conn.execute(total).scalar_one()),
                unread=int(conn.execute(unread).scalar_one()),
                next_before=items[-1].seq if len(rows) > limit and items else None,
            )

        return await self._read(run)

    async def mark_notifications_read(
        self, users: Sequence[str], *, at: datetime, ids: Sequence[str] | None = None
    ) -> int:
        table = notifications_table
        where: list[Any] = [table.c.user_id.in_(_storable(users)), table.c.read_at.is_(None)]
        if ids is not None:
            where.append(table.c.id.in_(_storable(ids)))
        stmt = update(table).where(*where).values(read_at=at)
        return await self._write_one(lambda conn: max(0, conn.execute(stmt).rowcount or 0))

    async def newest_notification_at(self) -> datetime | None:
        stmt = select(func.max(notifications_table.c.created_at))
        value = await self._read(lambda conn: conn.execute(stmt).scalar())
        if not isinstance(value, datetime):
            return None
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    # -- webhook deliveries ----------------------------------------------------------------

    async def due_deliveries(self, now: datetime, limit: int) -> list[Delivery]:
        t = webhook_deliveries
        stmt = (
            select(t)
            .where(_PENDING, t.c.next_attempt_at <= now)
            .order_by(t.c.next_attempt_at, t.c.seq)
            .limit(limit)
        )
        return await self._deliveries(stmt)

    async def _deliveries(self, stmt: Any) -> list[Delivery]:
        rows = await self._read(lambda conn: conn.execute(stmt).all())
        return [Delivery(**r._mapping) for r in rows]

    async def claim_delivery(self, delivery_id: str, attempts: int, lease_until: datetime) -> bool:
        t = webhook_deliveries
        stmt = (
            update(t)
            .where(t.c.id == delivery_id, t.c.attempts == attempts, _PENDING)
            .values(attempts=attempts + 1, next_attempt_at=lease_until)
        )
        return bool(await self._write_one(lambda conn: conn.execute(stmt).rowcount == 1))

    async def finish_delivery(
        self,
        delivery_id: str,
        *,
        last_error: str | None,
        delivered_at: datetime | None = None,
        failed_at: datetime | None = None,
        retry_at: datetime | None = None,
    ) -> None:
        outcome = {
            "delivered_at": delivered_at,
            "failed_at": failed_at,
            "next_attempt_at": retry_at,
        }
        chosen = {k: v for k, v in outcome.items() if v is not None}
        if len(chosen) != 1:
            raise ValueError("give exactly one of delivered_at, failed_at, retry_at")
        t = webhook_deliveries
        stmt = update(t).where(t.c.id == delivery_id).values(last_error=last_error, **chosen)
        await self._write_one(lambda conn: conn.execute(stmt))

    async def list_deliveries(
        self, *, limit: int = 50, status: DeliveryStatus | None = None
    ) -> list[Delivery]:
        t = webhook_deliveries
        stmt = select(t).order_by(t.c.seq.desc()).limit(limit)
        if status == "delivered":
            stmt = stmt.where(t.c.delivered_at.is_not(None))
        elif status == "failed":
            stmt = stmt.where(t.c.failed_at.is_not(None))
        elif status == "pending":
            stmt = stmt.where(_PENDING)
        elif status is not None:
            raise ValueError(f"unknown delivery status {status!r}")
        return await self._deliveries(stmt)

    async def count_pending_deliveries(self) -> int:
        stmt = select(func.count()).select_from(webhook_deliveries).where(_PENDING)
        return int(await self._read(lambda conn: conn.execute(stmt).scalar_one()))


# The parameter names ``notifications`` shadow the table inside methods.
notifications_table = notifications


def _storable(values: Sequence[str]) -> list[str]:
    """The values that can match stored text (PostgreSQL refuses NUL in a query)."""
    return [v for v in values if "\x00" not in v]


def _notification_values(n: NotificationRow) -> JSON:
    return {
        "id": n.id,
        "user_id": n.user_id,
        "event": n.event,
        "session_id": n.session_id,
        "data": orjson.dumps(n.data).decode(),
        "created_at": n.created_at,
    }


def _notification(r: Row[Any]) -> Notification:
    m = r._mapping
    return Notification(
        seq=m["seq"],
        id=m["id"],
        user_id=m["user_id"],
        event=m["event"],
        session_id=m["session_id"],
        data=orjson.loads(m["data"]),
        created_at=m["created_at"],
        read_at=m["read_at"],
    )


def _delivery_values(d: DeliveryRow) -> JSON:
    return {
        "id": d.id,
        "url": d.url,
        "body": d.body,
        "attempts": 0,
        "next_attempt_at": d.next_attempt_at,
        "created_at": d.created_at,
    }
