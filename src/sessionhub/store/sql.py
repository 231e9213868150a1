"""What the SQLite and PostgreSQL stores share: rows, statements, reads, and every write
that is the same on both (SQLAlchemy Core).

Every operation is written once, as a plain function of a synchronous connection, and
handed to ``_read`` / ``_write`` / ``_write_one``; a backend decides how such a function
runs (``sqlite.py``: whole in a thread, writes through the group-commit writer;
``postgres.py``: on a pooled asyncpg connection). Backend failures to reach the database
are translated here, once, into ``Unavailable``.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import orjson
from sqlalchemy import and_, bindparam, exc, func, or_, select, text, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from ..core.engine import Change
from ..core.errors import (
    DuplicateId,
    IdempotencyConflict,
    InvalidInput,
    SessionHubError,
    Unavailable,
    VersionConflict,
)
from ..core.model import Event, Session, parse_iso
from .base import Due, Page, SessionQuery
from .schema import HEAD_REVISION, chat_messages, events, sessions
from .sealing import Sealer
from .side_tables import SideTables

if TYPE_CHECKING:
    # Types only: SQLite needs the asyncio engine (6 MB with aiosqlite and greenlet) only
    # for ``transaction()`` (see sqlite.py).
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger("sessionhub.store")

_MIGRATIONS = Path(__file__).parent / "migrations"
T = TypeVar("T")
NUL = "\x00"
#: Longest idempotency fingerprint kept (the column's width; a hash fits easily).
MAX_FINGERPRINT = 128


def dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


_E = {c.name: i for i, c in enumerate(events.c)}
_E_ID, _E_TYPE, _E_SESSION, _E_KIND = _E["id"], _E["type"], _E["session_id"], _E["kind"]
_E_OWNER, _E_ACTOR, _E_AT, _E_VERSION = _E["owner"], _E["actor"], _E["at"], _E["version"]
_E_DATA, _E_SEQ = _E["data"], _E["seq"]


class _Duplicate(Exception):
    pass


class SqlStore(SideTables, ABC):
    """``Store`` over SQLAlchemy Core; ``SqliteStore`` and ``PostgresStore`` say how an
    operation runs. ``engine`` (async) stays available for diagnostics and tests."""

    #: See ``Store``: whether events become visible in seq order (one writer at a time).
    seq_in_order: ClassVar[bool] = False

    #: Exceptions that mean "the database cannot be reached", beyond SQLAlchemy's own.
    outage_types: ClassVar[tuple[type[BaseException], ...]] = (OSError, TimeoutError)
    is_sqlite: ClassVar[bool] = False
    engine: AsyncEngine

    def __init__(self, url: str, *, sealer: Sealer | None = None) -> None:
        self.url = url
        self.sealer = sealer or Sealer()
        self._closed = False

    # -- how a backend runs an operation -------------------------------------------------

    @abstractmethod
    async def _run_read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` on a connection outside any write transaction."""

    @abstractmethod
    async def _run_write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one transaction: durable if it returns, rolled back if it raises."""

    async def _run_write_one(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn``, which executes ONE statement, durably (a backend may skip BEGIN)."""
        return await self._run_write(fn)

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A write transaction of its own over ``engine`` (maintenance and tests; on SQLite
        the group writer is parked meanwhile, so it is still the only writer)."""

    async def _lock_migrations(self, conn: AsyncConnection) -> None:
        """Serialise migrations across nodes (within the migration's transaction)."""

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        try:
            return await self._run_read(fn)
        except Exception as error:
            self._raise_outage(error)
            raise

    async def _write(self, fn: Callable[[Connection], T]) -> T:
        try:
            return await self._run_write(fn)
        except Exception as error:
            self._raise_outage(error)
            raise

    async def _write_one(self, fn: Callable[[Connection], T]) -> T:
        try:
            return await self._run_write_one(fn)
        except Exception as error:
            self._raise_outage(error)
            raise

    def _raise_outage(self, error: Exception) -> None:
        """Raise ``Unavailable`` (from ``error``) if ``error`` means the database cannot be
        reached; return otherwise (a constraint, a bug: the caller re-raises it as it is),
        so only real outages become a 503."""
        if isinstance(error, SessionHubError):
            return
        chain = _chain(error)
        kinds = (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError)
        if not any(
            isinstance(link, (*kinds, *self.outage_types))
            or (isinstance(link, exc.DBAPIError) and link.connection_invalidated)
            for link in chain
        ):
            return
        first = str(error).splitlines()[0] if str(error) else ""
        log.warning("database unavailable: %s: %s", type(error).__name__, first[:300])
        # The innermost cause names the condition (ConnectionRefusedError, ...) without the
        # message, which may carry the database's address.
        raise Unavailable(
            f"the database is not answering ({type(chain[-1]).__name__}); retry shortly"
        ) from error

    # -- lifecycle -----------------------------------------------------------------------

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def migrate(self, revision: str = "head") -> None:
        """Apply Alembic migrations up to ``revision`` (serialised across nodes)."""
        try:
            async with self.engine.begin() as conn:
                await self._lock_migrations(conn)
                await conn.run_sync(_upgrade, revision)
        except Exception as error:
            self._raise_outage(error)
            raise

    async def ping(self) -> None:
        # A disposed engine would quietly open a new pool, so a closed store must say so.
        if self._closed:
            raise Unavailable("the store is closed")
        await self._read(lambda conn: conn.execute(select(1)).scalar_one())

    # -- rows ----------------------------------------------------------------------------

    def _session_values(self, s: Session) -> dict[str, Any]:
        return {
            "id": s.id,
            "kind": s.kind,
            "owner": s.owner,
            "state": s.state,
            "version": s.version,
            "created_at": s.created_at,
            "updated_at": s.updated_at,
            "last_activity_at": s.last_activity_at,
            "started_at": s.started_at,
            "ended_at": s.ended_at,
            "end_reason": s.end_reason,
            "end_detail": s.end_detail,
            "attributes": dumps(s.attributes),
            "metadata": self.sealer.seal(dumps(s.metadata)),
            "counters": dumps(s.counters),
        }

    def _session(self, r: Row[Any]) -> Session:
        m = r._mapping
        return Session(
            id=m["id"],
            kind=m["kind"],
            owner=m["owner"],
            state=m["state"],
            version=m["version"],
            created_at=m["created_at"],
            updated_at=m["updated_at"],
            last_activity_at=m["last_activity_at"],
            started_at=m["started_at"],
            ended_at=m["ended_at"],
            end_reason=m["end_reason"],
            end_detail=m["end_detail"],
            attributes=orjson.loads(m["attributes"]),
            metadata=orjson.loads(self.sealer.open(m["metadata"])),
            counters=orjson.loads(m["counters"]),
        )

    def _event_values(self, e: Event) -> dict[str, Any]:
        return {
            "id": e.id,
            "session_id": e.session_id,
            "type": e.type,
            "kind": e.kind,
            "owner": e.owner,
            "actor": e.actor,
            "at": e.at,
            "version": e.version,
            "data": self.sealer.seal(dumps(e.data)),
            "published": False,
        }

    def _cas_values(self, change: Change) -> dict[str, Any]:
        """The parameters of ``CAS_UPDATE`` for ``change`` (checked for NUL characters)."""
        assert change.before is not None
        check_text(change.session, change.event)
        values = self._session_values(change.session)
        del values["id"]
        values["b_id"] = change.session.id
        values["b_version"] = change.before.version
        return values

    def _event(self, r: Row[Any]) -> Event:
        # By position (rows of ``select(events)``): a consumer decodes every event of the
        # log, and ``Row._mapping`` costs a dictionary view and a lookup per field.
        return Event(
            id=r[_E_ID],
            type=r[_E_TYPE],
            session_id=r[_E_SESSION],
            kind=r[_E_KIND],
            owner=r[_E_OWNER],
            actor=r[_E_ACTOR],
            at=r[_E_AT],
            version=r[_E_VERSION],
            data=orjson.loads(self.sealer.open(r[_E_DATA])),
            seq=r[_E_SEQ],
        )

    def _append(self, conn: Connection, e: Event) -> Event:
        result = conn.execute(INSERT_EVENT, self._event_values(e))
        seq = result.inserted_primary_key[0] if result.inserted_primary_key else None
        return dataclasses.replace(e, seq=seq)

    def _conflict(self, change: Change, current: Session | None) -> VersionConflict:
        assert change.before is not None
        return VersionConflict(
            f"session {change.session.id!r} changed concurrently (now version "
            f"{current.version if current else 'deleted'}, you had {change.before.version})",
            current=current.to_dict() if current else None,
        )

    # -- writes --------------------------------------------------------------------------

    async def insert(
        self,
        change: Change,
        *,
        idempotency_key: str | None = None,
        fingerprint: str | None = None,
    ) -> tuple[Session, Event | None]:
        check_text(change.session, change.event, idempotency_key)
        if fingerprint is not None and (len(fingerprint) > MAX_FINGERPRINT or NUL in fingerprint):
            raise InvalidInput(
                f"an idempotency fingerprint is at most {MAX_FINGERPRINT} characters"
            )
        key = f"{change.session.owner}\x1f{idempotency_key}" if idempotency_key else None
        if key is not None:
            first = await self._by_key(key)
            if first is not None:
                return _replay(first, fingerprint), None
        values = self._session_values(change.session)
        values["idempotency_key"] = key
        values["idempotency_fingerprint"] = fingerprint if key is not None else None

        def run(conn: Connection) -> Event:
            try:
                conn.execute(INSERT_SESSION, values)
            except IntegrityError as error:
                raise _Duplicate from error
            return self._append(conn, change.event)

        try:
            stored = await self._write(run)
            return change.session, stored
        except _Duplicate:
            if key is not None:
                # The same key in flight twice (e.g. in one group): the other one won.
                first = await self._by_key(key)
                if first is not None:
                    return _replay(first, fingerprint), None
            raise DuplicateId(f"session id {change.session.id!r} already exists") from None

    async def _by_key(self, key: str) -> tuple[Session, str | None] | None:
        row = await self._read(lambda conn: conn.execute(BY_KEY, {"key": key}).first())
        return (self._session(row), row._mapping["idempotency_fingerprint"]) if row else None

    async def delete(self, session: Session, tombstone: Event) -> Event:
        def run(conn: Connection) -> Event:
            conn.execute(events.delete().where(events.c.session_id == session.id))
            conn.execute(chat_messages.delete().where(chat_messages.c.session_id == session.id))
            conn.execute(sessions.delete().where(sessions.c.id == session.id))
            return self._append(conn, tombstone)

        return await self._write(run)

    async def mark_published(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return

        def run(conn: Connection) -> None:
            for i in range(0, len(seqs), 500):
                chunk = list(seqs[i : i + 500])
                conn.execute(update(events).where(events.c.seq.in_(chunk)).values(published=True))

        await self._write(run)

    @abstractmethod
    async def save(self, change: Change) -> Event: ...

    @abstractmethod
    async def touch(self, activity: Mapping[str, datetime]) -> int: ...

    async def rotate_keys(self, batch: int = 500) -> int:
        """Re-seal every metadata and event payload with the newest key; returns rows rewritten."""
        done = 0
        for table, key, col in (
            (sessions, sessions.c.id, "metadata"),
            (events, events.c.seq, "data"),
            (chat_messages, chat_messages.c.seq, "content"),
            (chat_messages, chat_messages.c.seq, "metadata"),
        ):
            last: Any = None
            while True:
                stmt = select(key, table.c[col]).order_by(key).limit(batch)
                if last is not None:
                    stmt = stmt.where(key > last)

                keys = await self._write(functools.partial(self._reseal, stmt, table, key, col))
                if not keys:
                    break
                last = keys[-1]
                done += len(keys)
        return done

    def _reseal(self, stmt: Any, table: Any, key: Any, col: str, conn: Connection) -> list[Any]:
        """One batch of ``rotate_keys``: re-seal ``col`` of the rows ``stmt`` selects."""
        rows = conn.execute(stmt).all()
        for row in rows:
            conn.execute(
                update(table).where(key == row[0]).values({col: self.sealer.reseal(row[1])})
            )
        return [row[0] for row in rows]

    # -- reads ---------------------------------------------------------------------------

    async def get(self, session_id: str) -> Session | None:
        if NUL in session_id:
            return None  # cannot be stored, so cannot exist (PostgreSQL would refuse the query)
        row = await self._read(lambda conn: conn.execute(GET, {"sid": session_id}).first())
        return self._session(row) if row else None

    async def get_many(self, session_ids: Iterable[str]) -> dict[str, Session]:
        ids = [i for i in session_ids if NUL not in i]
        if not ids:
            return {}
        stmt = select(sessions).where(sessions.c.id.in_(ids))
        rows = await self._read(lambda conn: conn.execute(stmt).all())
        return {r._mapping["id"]: self._session(r) for r in rows}

    @staticmethod
    def _where(q: SessionQuery) -> list[Any]:
        clauses: list[Any] = []
        if q.kinds:
            clauses.append(sessions.c.kind.in_(q.kinds))
        if q.states:
            clauses.append(sessions.c.state.in_(q.states))
        if q.owner is not None:
            clauses.append(sessions.c.owner == q.owner)
        if q.text:
            plain = f"%{escape_like(q.text)}%"
            # The attributes are JSON text: look for the text as JSON spells it (quotes and
            # backslashes escaped), so a value containing them is found too.
            as_json = f"%{escape_like(dumps(q.text)[1:-1])}%"
            clauses.append(
                or_(
                    sessions.c.id.ilike(plain, escape="\\"),
                    sessions.c.owner.ilike(plain, escape="\\"),
                    sessions.c.attributes.ilike(as_json, escape="\\"),
                )
            )
        return clauses

    async def find(self, query: SessionQuery) -> Page:
        if unmatchable(query):
            return Page(items=[], next_cursor=None)
        clauses = self._where(query)
        if query.cursor:
            ts, sid = decode_cursor(query.cursor)
            clauses.append(
                or_(
                    sessions.c.created_at < ts,
                    and_(sessions.c.created_at == ts, sessions.c.id < sid),
                )
            )
        stmt = (
            select(sessions)
            .where(*clauses)
            .order_by(sessions.c.created_at.desc(), sessions.c.id.desc())
            .limit(query.limit + 1)
        )
        if query.offset:
            stmt = stmt.offset(query.offset)
        rows = await self._read(lambda conn: conn.execute(stmt).all())
        items = [self._session(r) for r in rows[: query.limit]]
        nxt = encode_cursor(items[-1]) if len(rows) > query.limit and items else None
        return Page(items=items, next_cursor=nxt)

    async def count(self, query: SessionQuery) -> int:
        if unmatchable(query):
            return 0
        stmt = select(func.count()).select_from(sessions).where(*self._where(query))
        return int(await self._read(lambda conn: conn.execute(stmt).scalar_one()))

    async def count_by_kind_state(self) -> dict[tuple[str, str], int]:
        stmt = select(sessions.c.kind, sessions.c.state, func.count()).group_by(
            sessions.c.kind, sessions.c.state
        )
        rows = await self._read(lambda conn: conn.execute(stmt).all())
        return {(r[0], r[1]): int(r[2]) for r in rows}

    async def events(
        self, session_id: str, *, after_version: int = 0, limit: int = 100
    ) -> list[Event]:
        if NUL in session_id:
            return []
        stmt = (
            select(events)
            .where(and_(events.c.session_id == session_id, events.c.version > after_version))
            .order_by(events.c.seq)
            .limit(limit)
        )
        return await self._events(stmt)

    async def _events(self, stmt: Any) -> list[Event]:
        rows = await self._read(lambda conn: conn.execute(stmt).all())
        return [self._event(r) for r in rows]

    async def unpublished(self, limit: int = 500) -> list[Event]:
        stmt = (
            select(events).where(events.c.published.is_(False)).order_by(events.c.seq).limit(limit)
        )
        return await self._events(stmt)

    async def events_since(
        self, *, kinds: Sequence[str], at_or_after: datetime, after_seq: int = 0, limit: int = 500
    ) -> list[Event]:
        stmt = (
            select(events)
            .where(
                events.c.kind.in_(list(kinds)),
                events.c.at >= at_or_after,
                events.c.seq > after_seq,
            )
            .order_by(events.c.seq)
            .limit(limit)
        )
        return await self._events(stmt)

    async def last_seq(self) -> int:
        stmt = select(func.coalesce(func.max(events.c.seq), 0))
        return int(await self._read(lambda conn: conn.execute(stmt).scalar_one()))

    async def events_after(
        self, seq: int, *, limit: int = 500, kinds: Sequence[str] | None = None
    ) -> list[Event]:
        stmt = select(events).where(events.c.seq > seq).order_by(events.c.seq).limit(limit)
        if kinds is not None:
            stmt = stmt.where(events.c.kind.in_([k for k in kinds if NUL not in k]))
        return await self._events(stmt)

    async def due(self, due: Due) -> list[Session]:
        column = sessions.c[due.column]
        stmt = (
            select(sessions)
            .where(
                sessions.c.kind == due.kind,
                sessions.c.state.in_(due.states),
                column < due.before,
                *([sessions.c.owner == due.owner] if due.owner is not None else []),
            )
            .order_by(column)
            .limit(due.limit)
        )
        rows = await self._read(lambda conn: conn.execute(stmt).all())
        return [self._session(r) for r in rows]


# Statements built once: executing them with a parameter dict reuses the compiled form,
# where ``.values(**literals)`` per call would rebuild and re-key the statement each time.
INSERT_SESSION = sessions.insert()
INSERT_EVENT = events.insert()
GET = select(sessions).where(sessions.c.id == bindparam("sid"))
BY_KEY = select(sessions).where(sessions.c.idempotency_key == bindparam("key"))
#: The columns a change rewrites: all but the id and what only the first insert sets.
CHANGED_COLUMNS = [
    c for c in sessions.c if c.name not in ("id", "idempotency_key", "idempotency_fingerprint")
]
CAS_UPDATE = (
    update(sessions)
    .where(and_(sessions.c.id == bindparam("b_id"), sessions.c.version == bindparam("b_version")))
    .values({c.name: bindparam(c.name) for c in CHANGED_COLUMNS})
)


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and what it wraps: SQLAlchemy keeps the driver's exception in ``orig``,
    which may wrap asyncpg's own in ``__cause__``."""
    links = [error]
    while len(links) < 6:
        last = links[-1]
        nxt = last.orig if isinstance(last, exc.DBAPIError) else last.__cause__
        if nxt is None or nxt in links:
            break
        links.append(nxt)
    return links


def _replay(first: tuple[Session, str | None], fingerprint: str | None) -> Session:
    session, stored = first
    if fingerprint is not None and stored is not None and fingerprint != stored:
        raise IdempotencyConflict("this Idempotency-Key was used for another request")
    return session


def escape_like(value: str) -> str:
    """``value`` matched literally by ``LIKE ... ESCAPE '\\'``."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def unmatchable(q: SessionQuery) -> bool:
    """A filter with a NUL character matches nothing (no stored text can contain one)."""
    return any(NUL in v for v in (*q.kinds, *q.states, q.owner or "", q.text or ""))


def check_text(session: Session, event: Event, key: str | None = None) -> None:
    # PostgreSQL text cannot hold NUL characters; refuse them on every backend alike, as a
    # clear 422 instead of a database error. (JSON columns are escaped by the encoder.)
    for name, value in (
        ("session id", session.id),
        ("kind", session.kind),
        ("owner", session.owner),
        ("state", session.state),
        ("end reason", session.end_reason),
        ("detail", session.end_detail),
        ("actor", event.actor),
        ("Idempotency-Key", key),
    ):
        if value is not None and NUL in value:
            raise InvalidInput(f"{name} must not contain NUL characters")


def encode_cursor(s: Session) -> str:
    raw = dumps([s.created_at.isoformat(), s.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, sid = orjson.loads(raw)
        return parse_iso(ts), str(sid)
    except Exception:
        raise InvalidInput("invalid cursor") from None


def _revision(sync_conn: Connection) -> str | None:
    """The database's Alembic revision; None for a database Alembic has not touched."""
    if not sync_conn.dialect.has_table(sync_conn, "alembic_version"):
        return None
    value = sync_conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return None if value is None else str(value)


def _upgrade(sync_conn: Connection, revision: str) -> None:
    if revision in ("head", HEAD_REVISION) and _revision(sync_conn) == HEAD_REVISION:
        return  # nothing to do: Alembic (and Mako) stay out of the process
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, revision)
