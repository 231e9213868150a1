"""The embedded store: SQLite in WAL mode, one group-commit writer thread, reads in threads.

SQLite runs with ``synchronous=FULL`` (a commit is on disk when it returns) and has one
writer, so writes queue in-process instead of spinning on ``SQLITE_BUSY``. Every operation
runs whole in a thread over the stdlib driver (one thread hop per operation, where
aiosqlite costs several per statement): reads on a small pool, writes on the group-commit
writer (``_GroupWriter``), which commits every write waiting in one transaction and one
fsync; migrations run on the writer too. The async ``engine`` (aiosqlite) serves only
``transaction()`` and is made on first use: a server that never asks for one never imports
SQLAlchemy's asyncio extension, aiosqlite and greenlet (about 8 MB resident).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from sqlalchemy import Column, Table, create_engine, event, exc, make_url
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Dialect, Engine

from ..core.engine import Change
from ..core.errors import Unavailable
from ..core.model import Event
from .schema import events, sessions
from .sealing import Sealer
from .sql import CHANGED_COLUMNS, SqlStore, _upgrade

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

T = TypeVar("T")

#: Heartbeats written (``touch``): a session's activity only ever moves forward.
_RAW_TOUCH = "UPDATE sessions SET last_activity_at = ? WHERE id = ? AND last_activity_at < ?"


class SqliteStore(SqlStore):
    """``Store`` on an SQLite file (``sqlite+aiosqlite:///path``)."""

    # One writer, and a seq is taken inside its transaction: a visible seq means every lower
    # one committed or was deleted.
    seq_in_order: ClassVar[bool] = True

    outage_types: ClassVar[tuple[type[BaseException], ...]] = (
        OSError,
        TimeoutError,
        sqlite3.OperationalError,  # raised straight by the driver in the writer's savepoints
    )
    is_sqlite: ClassVar[bool] = True

    def __init__(self, url: str, *, sealer: Sealer | None = None) -> None:
        if not url.startswith("sqlite"):
            raise ValueError(
                f"unsupported database URL {url!r} for SQLite (use sqlite+aiosqlite:///)"
            )
        super().__init__(url, sealer=sealer)
        self._async: AsyncEngine | None = None
        self._sync: Engine = create_engine(
            make_url(url).set(drivername="sqlite+pysqlite"),
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=5,
            max_overflow=5,
        )
        event.listen(self._sync, "connect", _sqlite_pragmas)
        self._write_lock = asyncio.Lock()  # among transaction() users
        dialect = self._sync.dialect
        self._raw_cas = _RawStatement.cas_update(CHANGED_COLUMNS, dialect)
        self._raw_append = _RawStatement.insert(events, dialect)
        # A time as SQLAlchemy's column type stores it (and reads it back).
        stamp = _RawStatement._slot(sessions.c.last_activity_at, "ts", dialect)[1]
        self._stamp: Callable[[datetime], Any] = stamp or (lambda value: value)
        self._writer: _GroupWriter | None = None
        self._readers: ThreadPoolExecutor | None = None

    @property
    def engine(self) -> AsyncEngine:  # type: ignore[override]
        """The asyncio engine (aiosqlite), made on first use (``transaction()``, tests)."""
        if self._async is None:
            from sqlalchemy.ext.asyncio import create_async_engine

            self._async = create_async_engine(self.url, connect_args={"timeout": 30})
            event.listen(self._async.sync_engine, "connect", _sqlite_pragmas)
        return self._async

    def _upsert(self, table: Table) -> Any:
        return sqlite_insert(table)

    def _lock_chat(self, conn: Connection, session_id: str) -> None:
        pass  # one writer: appends take turns already

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._closed = False
        if self._writer is None:
            self._writer = _GroupWriter(self._sync)
            self._readers = ThreadPoolExecutor(4, thread_name_prefix="sessionhub-sqlite-read")
            path = self._sync.url.database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        await self.migrate()

    async def close(self) -> None:
        self._closed = True
        if self._writer is not None:
            # Not while a transaction() holds the writer parked (it would never resume); stopping
            # commits what is queued first, off the loop so their callers can be answered.
            async with self._write_lock:
                await asyncio.to_thread(self._writer.stop)
        if self._readers is not None:
            self._readers.shutdown(wait=True)
        self._writer = None
        self._readers = None
        self._sync.dispose()
        if self._async is not None:
            await self._async.dispose()

    async def migrate(self, revision: str = "head") -> None:
        """As ``SqlStore.migrate``, on the sync engine: as an exclusive job of the writer
        once the store is started, so nothing else writes meanwhile."""

        def run(_conn: Connection | None) -> None:
            with self._sync.begin() as conn:
                _upgrade(conn, revision)

        try:
            if self._writer is not None:
                await self._writer.submit(run, exclusive=True)
            else:
                await asyncio.to_thread(run, None)
        except Exception as error:
            self._raise_outage(error)
            raise

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self._write_lock:
            resume = threading.Event()
            try:
                if self._writer is not None:
                    await self._park(self._writer, resume)
                async with self.engine.begin() as conn:
                    yield conn
            finally:
                resume.set()

    @staticmethod
    async def _park(writer: _GroupWriter, resume: threading.Event) -> None:
        """Hold the group writer between groups until ``resume`` is set."""
        loop = asyncio.get_running_loop()
        parked: asyncio.Future[None] = loop.create_future()

        def park(_conn: Connection | None) -> None:
            loop.call_soon_threadsafe(_set_done, parked)
            resume.wait()

        writer.submit(park, exclusive=True)
        await parked

    # -- running operations --------------------------------------------------------------

    async def _run_read(self, fn: Callable[[Connection], T]) -> T:
        if self._readers is None:
            raise Unavailable("the store is not started")
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._in_read, fn)

    def _in_read(self, fn: Callable[[Connection], T]) -> T:
        with self._sync.connect() as conn:
            return fn(conn)

    async def _run_write(self, fn: Callable[[Connection], T]) -> T:
        if self._writer is None:
            raise Unavailable("the store is not started")
        return await self._writer.submit(fn)

    # -- writes ----------------------------------------------------------------------------

    async def save(self, change: Change) -> Event:
        values = self._cas_values(change)

        event_values = self._event_values(change.event)
        cas, append = self._raw_cas, self._raw_append

        def run(conn: Connection) -> Event | None:
            # Straight on the driver: this is every change's write, and SQLAlchemy's
            # statement machinery costs more than SQLite spends on the two statements.
            raw = conn.connection.dbapi_connection
            assert raw is not None
            if cas.run(raw, values).rowcount != 1:
                return None  # lost the compare-and-set: nothing written
            seq = append.run(raw, event_values).lastrowid
            return dataclasses.replace(change.event, seq=seq)

        stored = await self._write(run)
        if stored is not None:
            return stored
        raise self._conflict(change, await self.get(change.session.id))

    async def touch(self, activity: Mapping[str, datetime]) -> int:
        if not activity:
            return 0
        # Straight on the driver, as save is: up to one row per live session every sweep,
        # and each row through SQLAlchemy's executemany is Python work on the writer's core.
        stamp = self._stamp
        rows = [(t, sid, t) for sid, t in ((sid, stamp(ts)) for sid, ts in activity.items())]

        def run(conn: Connection) -> int:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            try:
                return max(0, raw.executemany(_RAW_TOUCH, rows).rowcount or 0)
            except sqlite3.Error as error:
                raise exc.DBAPIError.instance(_RAW_TOUCH, rows, error, sqlite3.Error) from error

        return await self._write(run)


# -- statements on the driver ----------------------------------------------------------------


class _RawStatement:
    """One statement run straight on the sqlite3 driver: its SQL with ``?`` placeholders
    and, per placeholder, the parameter's name and the column type's own bind processor
    (SQLAlchemy's, so a value is stored exactly as SQLAlchemy would store it and reads back
    the same through it)."""

    __slots__ = ("_slots", "sql")

    def __init__(self, sql: str, slots: list[tuple[str, Callable[[Any], Any] | None]]) -> None:
        self.sql = sql
        self._slots = slots

    def params(self, values: Mapping[str, Any]) -> list[Any]:
        return [values[name] if proc is None else proc(values[name]) for name, proc in self._slots]

    def run(self, raw: Any, values: Mapping[str, Any]) -> Any:
        """Execute on the driver connection ``raw``; a driver error is raised as the
        SQLAlchemy error it would have been (``IntegrityError``, ``OperationalError``...)."""
        params = self.params(values)
        try:
            return raw.execute(self.sql, params)
        except sqlite3.Error as error:
            raise exc.DBAPIError.instance(self.sql, params, error, sqlite3.Error) from error

    @staticmethod
    def _slot(column: Column[Any], name: str, dialect: Dialect) -> tuple[str, Any]:
        return name, column.type.bind_processor(dialect)

    @classmethod
    def insert(cls, table: Table, dialect: Dialect) -> _RawStatement:
        """``INSERT`` of every column but an autoincrement key (``lastrowid`` gives it)."""
        cols = [c for c in table.c if not (c.primary_key and c.autoincrement is True)]
        names = ", ".join(c.name for c in cols)
        marks = ", ".join("?" for _ in cols)
        slots = [cls._slot(c, c.name, dialect) for c in cols]
        return cls(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", slots)

    @classmethod
    def cas_update(cls, columns: list[Column[Any]], dialect: Dialect) -> _RawStatement:
        """``CAS_UPDATE`` of ``sql.py``: the changed columns where id and version match
        (parameters ``b_id`` and ``b_version``)."""
        table = columns[0].table
        sets = ", ".join(f"{c.name} = ?" for c in columns)
        slots = [cls._slot(c, c.name, dialect) for c in columns]
        slots += [cls._slot(table.c.id, "b_id", dialect)]
        slots += [cls._slot(table.c.version, "b_version", dialect)]
        sql = f"UPDATE {table.name} SET {sets} WHERE id = ? AND version = ?"
        return cls(sql, slots)


# -- group commit ------------------------------------------------------------------------------


class _Job:
    """One queued write: ``fn`` to run in the batch transaction and where to report."""

    __slots__ = ("exclusive", "fn", "future", "loop")

    def __init__(
        self,
        fn: Callable[[Connection], Any],
        future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
        exclusive: bool = False,
    ) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop
        self.exclusive = exclusive


class _GroupWriter:
    """SQLite's one writer: a thread that commits queued writes in groups.

    Writers queue here instead of each taking a lock, a thread hop and a transaction of
    its own. The thread takes every job waiting (up to ``max_batch``) and runs them in ONE
    ``BEGIN IMMEDIATE ... COMMIT``, so one fsync covers the whole group, and it starts the
    next group as soon as the last COMMIT returns, without waiting for the event loop.

    Per-write semantics are kept with a SAVEPOINT around each job: a job that raises is
    rolled back to its savepoint and fails alone (a compare-and-set that matches no row
    simply writes nothing). Every caller learns its outcome only after the COMMIT, so a
    result (or a failure computed against uncommitted rows) is never reported for a write
    that is not durable; if BEGIN or COMMIT fails, every job of the group fails with that
    error. ``exclusive`` jobs run alone, outside any transaction (``SqliteStore.transaction``
    parks the thread with one while it writes over another connection).
    """

    def __init__(self, engine: Engine, *, max_batch: int = 256) -> None:
        self._engine = engine
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name="sessionhub-sqlite-write", daemon=True
        )
        self._stopping = False
        #: Groups committed and jobs in them (tests and diagnostics).
        self.groups = 0
        self.jobs = 0
        self._thread.start()

    def submit(
        self, fn: Callable[[Connection], T], *, exclusive: bool = False
    ) -> asyncio.Future[T]:
        """Queue ``fn``; the future resolves (on the caller's loop) after its group commits."""
        if self._stopping:
            raise Unavailable("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(fn, future, loop, exclusive))
        return future

    def queued(self) -> int:
        """Jobs waiting for the thread (approximate while it runs)."""
        return self._queue.qsize()

    def stop(self) -> None:
        """Finish every job queued so far, then end the thread."""
        if not self._stopping:
            self._stopping = True
            self._queue.put(None)
        self._thread.join()

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        held: _Job | None = None
        while True:
            job = held if held is not None else self._queue.get()
            held = None
            if job is None:
                return
            if job.exclusive:
                self._finish([(job, *_call(job.fn, None))])
                continue
            batch = [job]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                if nxt.exclusive:
                    held = nxt  # runs right after this group, in queue order
                    break
                batch.append(nxt)
            self._finish(self._commit(batch))
            if stop:
                return

    def _commit(self, batch: list[_Job]) -> list[tuple[_Job, Any, BaseException | None]]:
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            with self._engine.connect() as conn:
                # IMMEDIATE takes the write lock up front (waiting out busy_timeout behind
                # another connection's writer) rather than failing on a later upgrade.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                # Savepoints straight on the driver: they are per job, and SQLAlchemy's
                # statement machinery would cost more than SQLite spends on them.
                raw = conn.connection.dbapi_connection
                assert raw is not None
                try:
                    for job in batch:
                        raw.execute("SAVEPOINT job")
                        result, error = _call(job.fn, conn)
                        if error is not None:
                            raw.execute("ROLLBACK TO job")
                        raw.execute("RELEASE job")
                        outcomes.append((job, result, error))
                    conn.commit()
                except BaseException:
                    conn.rollback()
                    raise
        except BaseException as exc:  # the group is not durable: every job fails
            return [(job, None, exc) for job in batch]
        self.groups += 1
        self.jobs += len(batch)
        return outcomes

    @staticmethod
    def _finish(outcomes: list[tuple[_Job, Any, BaseException | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Any, BaseException | None]]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        for loop, items in by_loop.items():
            # One wake-up of the loop per group, not one per job.
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, items)


def _call(fn: Callable[[Connection], Any], conn: Any) -> tuple[Any, BaseException | None]:
    try:
        return fn(conn), None
    except Exception as exc:
        return None, exc


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _resolve(items: list[tuple[_Job, Any, BaseException | None]]) -> None:
    for job, result, error in items:
        if job.future.done():
            continue  # the caller was cancelled; the write stands or falls with its group
        if error is None:
            job.future.set_result(result)
        else:
            job.future.set_exception(error)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: a transaction is durable when COMMIT returns, even across power loss.
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
