"""The store for many nodes: PostgreSQL over asyncpg, a pool of concurrent transactions.

PostgreSQL groups WAL flushes of concurrent commits itself, so there is no writer queue:
each operation runs on a pooled connection (``run_sync``). Reads and single-statement
writes run in autocommit (one round trip instead of BEGIN, the statement, COMMIT);
``save`` is ONE statement, the compare-and-set ``UPDATE`` as a CTE feeding the event
``INSERT``. Migrations run under a transaction-level advisory lock, so several nodes can
start at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import asyncpg
from sqlalchemy import Table, and_, bindparam, event, exc, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.util import greenlet_spawn

from ..core.engine import Change
from ..core.errors import Unavailable
from ..core.model import Event
from .schema import events, sessions
from .sealing import Sealer
from .sql import CHANGED_COLUMNS, SqlStore

T = TypeVar("T")
#: The advisory lock key that serialises migrations across nodes.
MIGRATION_LOCK = 745210331
#: The first key of the per-session chat locks (the second is a hash of the session id).
CHAT_LOCK = 745210332
_CHAT_LOCK = text(f"SELECT pg_advisory_xact_lock({CHAT_LOCK}, hashtext(:sid))")
_TOUCH_CHUNK = 5000


class PostgresStore(SqlStore):
    """``Store`` on PostgreSQL (``postgresql+asyncpg://...``)."""

    outage_types: ClassVar[tuple[type[BaseException], ...]] = (
        OSError,
        TimeoutError,
        asyncpg.PostgresConnectionError,  # refused, lost, rejected
        asyncpg.exceptions.OperatorInterventionError,  # shutdown, starting up, cancelled
        asyncpg.exceptions.TooManyConnectionsError,
        asyncpg.InterfaceError,  # "connection is closed"
        exc.TimeoutError,  # every pooled connection busy for pool_timeout: come back later
    )

    def __init__(self, url: str, *, sealer: Sealer | None = None, pool_size: int = 20) -> None:
        if not url.startswith("postgresql"):
            raise ValueError(
                f"unsupported database URL {url!r} for PostgreSQL (use postgresql+asyncpg://)"
            )
        super().__init__(url, sealer=sealer)
        # No pool_pre_ping: on asyncpg it costs three round trips per checkout (BEGIN,
        # ";", ROLLBACK). asyncpg notices by itself a connection the server closed
        # (restart, failover, pg_terminate_backend); the checkout hook hands out only
        # live ones, with no round trip.
        # No overflow: an overflow connection is closed when it is returned, so under a
        # steady load above the pool size every request paid for a new connection (TCP,
        # TLS negotiation, authentication: a fifth of a PATCH's CPU time). Beyond the pool,
        # callers wait for a connection (up to ``pool_timeout``, then 503).
        self.engine = create_async_engine(url, pool_size=pool_size, max_overflow=0, pool_timeout=10)
        event.listen(self.engine.sync_engine, "checkout", _discard_closed)
        self._open = False
        self._raw_save = _DriverStatement(_SAVE, self.engine.dialect)

    def _upsert(self, table: Table) -> Any:
        return pg_insert(table)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._closed = False
        await self.migrate()
        self._open = True

    async def close(self) -> None:
        self._closed = True
        self._open = False
        await self.engine.dispose()

    async def _lock_migrations(self, conn: AsyncConnection) -> None:
        await conn.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.begin() as conn:
            yield conn

    # -- running operations --------------------------------------------------------------

    def _check_open(self) -> None:
        # A disposed engine would quietly open a new pool: a closed store says so instead.
        if not self._open:
            raise Unavailable("the store is closed" if self._closed else "the store is not started")

    async def _run_read(self, fn: Callable[[Connection], T]) -> T:
        # In autocommit a read is one round trip instead of three (BEGIN, the SELECT,
        # ROLLBACK). Nothing is lost: under READ COMMITTED each statement takes its own
        # snapshot inside a transaction too.
        return await self._autocommit(fn)

    async def _run_write(self, fn: Callable[[Connection], T]) -> T:
        self._check_open()
        async with self.engine.begin() as conn:
            return await conn.run_sync(fn)

    async def _run_write_one(self, fn: Callable[[Connection], T]) -> T:
        # One statement is its own transaction: durable when it returns, no BEGIN/COMMIT.
        return await self._autocommit(fn)

    async def _autocommit(self, fn: Callable[[Connection], T]) -> T:
        self._check_open()
        async with self.engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            return await auto.run_sync(fn)

    def _lock_chat(self, conn: Connection, session_id: str) -> None:
        # Concurrent transactions would not see each other's uncommitted messages and hand
        # out one position twice: a transaction-level lock per session (the two-key space,
        # apart from the migration lock's) makes them take turns.
        conn.execute(_CHAT_LOCK, {"sid": session_id})

    # -- writes ----------------------------------------------------------------------------

    async def _fetchval(self, statement: _DriverStatement, values: Mapping[str, Any]) -> Any:
        """Run one statement straight on a pooled asyncpg connection, in autocommit: the
        hot path of a change. Through SQLAlchemy's execution (compiled-cache lookup,
        parameter processing, the greenlet hop per call) a ``save`` cost about twice the
        CPU time of the round trip itself."""
        self._check_open()
        params = statement.params(values)
        try:
            pooled = await self.engine.raw_connection()
        except Exception as error:
            self._raise_outage(error)
            raise
        try:
            driver: Any = pooled.driver_connection  # the asyncpg connection
            return await driver.fetchval(statement.sql, *params)
        except asyncpg.IntegrityConstraintViolationError as error:
            # As SQLAlchemy would raise it (the connection is fine: autocommit, no state).
            raise exc.IntegrityError(statement.sql, params, error) from error
        except BaseException as error:
            if not isinstance(error, asyncpg.PostgresError) or isinstance(
                error, asyncpg.PostgresConnectionError
            ):
                # Lost, cancelled mid-statement or timed out: not handed out again.
                await greenlet_spawn(pooled.invalidate, error)
            if isinstance(error, Exception):
                self._raise_outage(error)
            raise
        finally:
            await greenlet_spawn(pooled.close)

    async def save(self, change: Change) -> Event:
        values = self._cas_values(change)
        for name, value in self._event_values(change.event).items():
            values[f"e_{name}"] = value
        seq: int | None = await self._fetchval(self._raw_save, values)
        if seq is not None:
            return dataclasses.replace(change.event, seq=seq)
        raise self._conflict(change, await self.get(change.session.id))

    async def touch(self, activity: Mapping[str, datetime]) -> int:
        if not activity:
            return 0
        items = [(sid, ts if ts.tzinfo else ts.replace(tzinfo=UTC)) for sid, ts in activity.items()]

        def run(conn: Connection) -> int:
            changed = 0
            for i in range(0, len(items), _TOUCH_CHUNK):
                chunk = items[i : i + _TOUCH_CHUNK]
                result = conn.execute(
                    _TOUCH, {"ids": [sid for sid, _ in chunk], "ts": [ts for _, ts in chunk]}
                )
                changed += max(0, result.rowcount or 0)
            return changed

        return await self._write(run)


# ``save`` in ONE statement (one round trip, atomic as any statement): the compare-and-set
# UPDATE as a CTE, and the event inserted only for the row it moved.
_EVENT_COLUMNS = [c.name for c in events.c if c.name != "seq"]
_SAVE = (
    events.insert()
    .from_select(
        _EVENT_COLUMNS,
        select(*(bindparam(f"e_{n}", type_=events.c[n].type) for n in _EVENT_COLUMNS)).select_from(
            update(sessions)
            .where(
                and_(
                    sessions.c.id == bindparam("b_id"), sessions.c.version == bindparam("b_version")
                )
            )
            .values({c.name: bindparam(c.name, type_=c.type) for c in CHANGED_COLUMNS})
            .returning(sessions.c.id)
            .cte("moved")
        ),
    )
    .returning(events.c.seq)
)


class _DriverStatement:
    """A statement compiled once for asyncpg: its SQL (``$n`` placeholders) and, per
    placeholder, the parameter's name and its type's bind processor (SQLAlchemy's, so a
    value is stored exactly as it would be through SQLAlchemy)."""

    __slots__ = ("_slots", "sql")

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled: Any = statement.compile(dialect=dialect)  # an SQLCompiler: positional
        self.sql = compiled.string
        names = compiled.positiontup or []
        self._slots = [(n, compiled.binds[n].type.bind_processor(dialect)) for n in names]

    def params(self, values: Mapping[str, Any]) -> list[Any]:
        return [values[name] if proc is None else proc(values[name]) for name, proc in self._slots]


# One statement per chunk over unnest()ed arrays: a single round trip, and a true row count
# (asyncpg's executemany reports none).
_TOUCH = text(
    "UPDATE sessions AS s SET last_activity_at = v.ts "
    "FROM unnest(CAST(:ids AS text[]), CAST(:ts AS timestamptz[])) AS v(id, ts) "
    "WHERE s.id = v.id AND s.last_activity_at < v.ts"
)


def _discard_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Pool checkout hook: refuse a connection whose server side is gone (the pool then
    opens a fresh one)."""
    raw = getattr(dbapi_connection, "_connection", None)
    if raw is not None and raw.is_closed():
        raise exc.DisconnectionError("the database closed this connection")
