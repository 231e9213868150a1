"""The SQLAlchemy 2 async store: SQLite (default, embedded) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import (
    and_,
    bindparam,
    create_engine,
    event,
    exc,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ..core.engine import Change
from ..core.errors import DuplicateId, InvalidInput, Unavailable, VersionConflict
from ..core.model import Event, Session, parse_iso
from .base import Due, Page, SessionQuery
from .schema import chat_messages, events, sessions
from .sealing import Sealer

log = logging.getLogger("sessionhub.store")

_MIGRATIONS = Path(__file__).parent / "migrations"
T = TypeVar("T")


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


class _Duplicate(Exception):
    pass


class SqlStore:
    """``Store`` over SQLAlchemy Core.

    SQLite runs in WAL mode with ``synchronous=FULL`` (a commit is on disk when it returns)
    and one writer: writes queue in-process instead of spinning on ``SQLITE_BUSY``.
    PostgreSQL uses a pool; compare-and-set on ``version`` keeps concurrent writers (and
    nodes) honest.

    Every operation is written once, as a plain function of a synchronous connection, and
    run by ``_read``/``_write``. On PostgreSQL that function runs on the asyncpg connection
    (``run_sync``). On SQLite it runs whole in a thread over the stdlib driver (one thread
    hop per operation, where aiosqlite costs several per statement): reads on a small
    pool, writes on the group-commit writer (``_GroupWriter``), which commits every write
    waiting in one transaction and one fsync. ``engine`` (async) and ``transaction()`` stay
    available for features with tables of their own; on SQLite ``transaction()`` parks the writer
    while it runs, so it still is the only writer.
    """

    def __init__(self, url: str, *, sealer: Sealer | None = None, pool_size: int = 10) -> None:
        self.url = url
        self.sealer = sealer or Sealer()
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine: AsyncEngine = create_async_engine(url, connect_args={"timeout": 30})
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        elif url.startswith("postgresql"):
            # No pool_pre_ping: on asyncpg it costs three round trips per checkout (BEGIN,
            # ";", ROLLBACK). asyncpg notices by itself a connection the server closed
            # (restart, failover, pg_terminate_backend); the checkout hook hands out only
            # live ones, with no round trip.
            self.engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size)
            event.listen(self.engine.sync_engine, "checkout", _discard_closed)
        else:
            raise ValueError(
                f"unsupported database URL {url!r} (use sqlite+aiosqlite:/// or postgresql+asyncpg://)"
            )
        self._write_lock = asyncio.Lock() if self.is_sqlite else None  # among transaction() users
        self._closed = False
        self._sync: Engine | None = None
        self._writer: _GroupWriter | None = None
        self._readers: ThreadPoolExecutor | None = None
        if self.is_sqlite:
            self._sync = create_engine(
                self.engine.url.set(drivername="sqlite+pysqlite"),
                connect_args={"timeout": 30, "check_same_thread": False},
                pool_size=5,
                max_overflow=5,
            )
            event.listen(self._sync, "connect", _sqlite_pragmas)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._closed = False
        if self.is_sqlite and self._writer is None:
            assert self._sync is not None
            self._writer = _GroupWriter(self._sync)
            self._readers = ThreadPoolExecutor(4, thread_name_prefix="sessionhub-sqlite-read")
            path = self.engine.url.database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        await self.migrate()

    async def migrate(self) -> None:
        """Apply Alembic migrations up to head (serialised across nodes on PostgreSQL)."""
        async with self.engine.begin() as conn:
            if not self.is_sqlite:
                await conn.execute(text("SELECT pg_advisory_xact_lock(745210331)"))
            await conn.run_sync(_upgrade)

    async def close(self) -> None:
        self._closed = True
        if self._writer is not None:
            # Not while a transaction() holds the writer parked (it would never resume); stopping
            # commits what is queued first, off the loop so their callers can be answered.
            assert self._write_lock is not None
            async with self._write_lock:
                await asyncio.to_thread(self._writer.stop)
        if self._readers is not None:
            self._readers.shutdown(wait=True)
        self._writer = None
        self._readers = None
        if self._sync is not None:
            self._sync.dispose()
        await self.engine.dispose()

    async def ping(self) -> None:
        # A disposed engine would quietly open a new pool, so a closed store must say so.
        if self._closed:
            raise Unavailable("the store is closed")
        await self._read(lambda conn: conn.execute(select(1)).scalar_one())

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction of its own (for services keeping side tables: chat,
        notifications, webhooks). On SQLite the group writer is paused meanwhile, so this
        is still the only writer and never waits on SQLITE_BUSY."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
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

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` on a connection outside any write transaction."""
        if self._sync is None:
            # PostgreSQL: in autocommit, a read is one round trip instead of three (BEGIN,
            # the SELECT, ROLLBACK). Nothing is lost: under READ COMMITTED each statement
            # takes its own snapshot inside a transaction too.
            async with self.engine.connect() as conn:
                auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
                return await auto.run_sync(fn)
        return await self._in_thread(self._readers, self._sync_read, fn)

    async def _write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one transaction: committed if it returns, rolled back if it raises."""
        if self._sync is None:
            async with self.transaction() as conn:
                return await conn.run_sync(fn)
        if self._writer is None:
            raise Unavailable("the store is not started")
        return await self._writer.submit(fn)

    async def _autocommit(self, fn: Callable[[Connection], T]) -> T:
        """PostgreSQL: run ``fn``, one statement, as its own transaction (no BEGIN/COMMIT
        round trips); it is durable when it returns."""
        async with self.engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            return await auto.run_sync(fn)

    async def _in_thread(
        self,
        pool: ThreadPoolExecutor | None,
        run: Callable[[Callable[[Connection], T]], T],
        fn: Callable[[Connection], T],
    ) -> T:
        if pool is None:
            raise Unavailable("the store is not started")
        return await asyncio.get_running_loop().run_in_executor(pool, run, fn)

    def _sync_read(self, fn: Callable[[Connection], T]) -> T:
        assert self._sync is not None
        with self._sync.connect() as conn:
            return fn(conn)

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
            "attributes": _dumps(s.attributes),
            "metadata": self.sealer.seal(_dumps(s.metadata)),
            "counters": _dumps(s.counters),
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
            "data": self.sealer.seal(_dumps(e.data)),
            "published": False,
        }

    def _event(self, r: Row[Any]) -> Event:
        m = r._mapping
        return Event(
            id=m["id"],
            type=m["type"],
            session_id=m["session_id"],
            kind=m["kind"],
            owner=m["owner"],
            actor=m["actor"],
            at=m["at"],
            version=m["version"],
            data=orjson.loads(self.sealer.open(m["data"])),
            seq=m["seq"],
        )

    def _append(self, conn: Connection, e: Event) -> Event:
        result = conn.execute(_INSERT_EVENT, self._event_values(e))
        seq = result.inserted_primary_key[0] if result.inserted_primary_key else None
        return dataclasses.replace(e, seq=seq)

    # -- writes --------------------------------------------------------------------------

    async def insert(
        self, change: Change, *, idempotency_key: str | None = None
    ) -> tuple[Session, Event | None]:
        _check_text(change.session, change.event, idempotency_key)
        key = f"{change.session.owner}\x1f{idempotency_key}" if idempotency_key else None
        if key is not None:
            existing = await self._by_key(key)
            if existing is not None:
                return existing, None
        values = self._session_values(change.session)
        values["idempotency_key"] = key

        def run(conn: Connection) -> Event:
            try:
                conn.execute(_INSERT_SESSION, values)
            except IntegrityError as exc:
                raise _Duplicate from exc
            return self._append(conn, change.event)

        try:
            stored = await self._write(run)
            return change.session, stored
        except _Duplicate:
            if key is not None:
                existing = await self._by_key(key)
                if existing is not None:
                    return existing, None
            raise DuplicateId(f"session id {change.session.id!r} already exists") from None

    async def _by_key(self, key: str) -> Session | None:
        row = await self._read(lambda conn: conn.execute(_BY_KEY, {"key": key}).first())
        return self._session(row) if row else None

    async def save(self, change: Change) -> Event:
        assert change.before is not None
        _check_text(change.session, change.event)
        values = self._session_values(change.session)
        del values["id"]
        values["b_id"] = change.session.id
        values["b_version"] = change.before.version

        def run(conn: Connection) -> Event | None:
            if conn.execute(_CAS_UPDATE, values).rowcount != 1:
                return None  # lost the compare-and-set: nothing written
            return self._append(conn, change.event)

        def run_pg(conn: Connection) -> Event | None:
            for name, value in self._event_values(change.event).items():
                values[f"e_{name}"] = value
            seq = conn.execute(_PG_SAVE, values).scalar()
            return None if seq is None else dataclasses.replace(change.event, seq=seq)

        stored = await (self._write(run) if self.is_sqlite else self._autocommit(run_pg))
        if stored is not None:
            return stored
        current = await self.get(change.session.id)
        raise VersionConflict(
            f"session {change.session.id!r} changed concurrently (now version "
            f"{current.version if current else 'deleted'}, you had {change.before.version})",
            current=current.to_dict() if current else None,
        )

    async def delete(self, session: Session, tombstone: Event) -> Event:
        def run(conn: Connection) -> Event:
            conn.execute(events.delete().where(events.c.session_id == session.id))
            conn.execute(sessions.delete().where(sessions.c.id == session.id))
            return self._append(conn, tombstone)

        return await self._write(run)

    async def touch(self, activity: Mapping[str, datetime]) -> int:
        if not activity:
            return 0
        if not self.is_sqlite:
            return await self._touch_pg(activity)
        stmt = (
            update(sessions)
            .where(and_(sessions.c.id == _bind("sid"), sessions.c.last_activity_at < _bind("ts")))
            .values(last_activity_at=_bind("ts"))
        )
        params = [{"sid": sid, "ts": ts} for sid, ts in activity.items()]
        return await self._write(lambda conn: max(0, conn.execute(stmt, params).rowcount or 0))

    async def _touch_pg(self, activity: Mapping[str, datetime]) -> int:
        # One statement per chunk over unnest()ed arrays: a single round trip, and a true
        # row count (asyncpg's executemany reports none).
        stmt = text(
            "UPDATE sessions AS s SET last_activity_at = v.ts "
            "FROM unnest(CAST(:ids AS text[]), CAST(:ts AS timestamptz[])) AS v(id, ts) "
            "WHERE s.id = v.id AND s.last_activity_at < v.ts"
        )
        items = [(sid, ts if ts.tzinfo else ts.replace(tzinfo=UTC)) for sid, ts in activity.items()]

        def run(conn: Connection) -> int:
            changed = 0
            for i in range(0, len(items), 5000):
                chunk = items[i : i + 5000]
                result = conn.execute(
                    stmt, {"ids": [sid for sid, _ in chunk], "ts": [ts for _, ts in chunk]}
                )
                changed += max(0, result.rowcount or 0)
            return changed

        return await self._write(run)

    async def mark_published(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return

        def run(conn: Connection) -> None:
            for i in range(0, len(seqs), 500):
                chunk = list(seqs[i : i + 500])
                conn.execute(update(events).where(events.c.seq.in_(chunk)).values(published=True))

        await self._write(run)

    # -- reads ---------------------------------------------------------------------------

    async def get(self, session_id: str) -> Session | None:
        if _NUL in session_id:
            return None  # cannot be stored, so cannot exist (PostgreSQL would refuse the query)
        row = await self._read(lambda conn: conn.execute(_GET, {"sid": session_id}).first())
        return self._session(row) if row else None

    async def get_many(self, session_ids: Iterable[str]) -> dict[str, Session]:
        ids = [i for i in session_ids if _NUL not in i]
        if not ids:
            return {}
        stmt = select(sessions).where(sessions.c.id.in_(ids))
        rows = await self._read(lambda conn: conn.execute(stmt).all())
        return {r._mapping["id"]: self._session(r) for r in rows}

    def _where(self, q: SessionQuery) -> list[Any]:
        clauses: list[Any] = []
        if q.kinds:
            clauses.append(sessions.c.kind.in_(q.kinds))
        if q.states:
            clauses.append(sessions.c.state.in_(q.states))
        if q.owner is not None:
            clauses.append(sessions.c.owner == q.owner)
        return clauses

    async def find(self, query: SessionQuery) -> Page:
        if _unmatchable(query):
            return Page(items=[], next_cursor=None)
        clauses = self._where(query)
        if query.cursor:
            ts, sid = _decode_cursor(query.cursor)
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
        nxt = _encode_cursor(items[-1]) if len(rows) > query.limit and items else None
        return Page(items=items, next_cursor=nxt)

    async def count(self, query: SessionQuery) -> int:
        if _unmatchable(query):
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
        if _NUL in session_id:
            return []
        stmt = (
            select(events)
            .where(and_(events.c.session_id == session_id, events.c.version > after_version))
            .order_by(events.c.seq)
            .limit(limit)
        )
        rows = await self._read(lambda conn: conn.execute(stmt).all())
        return [self._event(r) for r in rows]

    async def unpublished(self, limit: int = 500) -> list[Event]:
        stmt = (
            select(events).where(events.c.published.is_(False)).order_by(events.c.seq).limit(limit)
        )
        rows = await self._read(lambda conn: conn.execute(stmt).all())
        return [self._event(r) for r in rows]

    async def events_since(
        self, *, kinds: Sequence[str], at_or_after: datetime, after_seq: int = 0, limit: int = 500
    ) -> list[Event]:
        """Events of ``kinds`` stamped at or after ``at_or_after`` with ``seq > after_seq``,
        oldest first: a page of a scan that services use to rebuild derived records."""
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
        rows = await self._read(lambda conn: conn.execute(stmt).all())
        return [self._event(r) for r in rows]

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

    async def rotate_keys(self, batch: int = 500) -> int:
        """Re-seal every metadata and event payload with the newest key; returns rows rewritten."""
        done = 0
        for table, key, col in (
            (sessions, sessions.c.id, "metadata"),
            (events, events.c.seq, "data"),
            # Workspace chat messages (features/workspaces.py) are sealed too.
            (chat_messages, chat_messages.c.seq, "content"),
            (chat_messages, chat_messages.c.seq, "metadata"),
        ):
            last: Any = None
            while True:
                async with self.transaction() as conn:
                    stmt = select(key, table.c[col]).order_by(key).limit(batch)
                    if last is not None:
                        stmt = stmt.where(key > last)
                    rows = (await conn.execute(stmt)).all()
                    for row in rows:
                        await conn.execute(
                            update(table)
                            .where(key == row[0])
                            .values({col: self.sealer.reseal(row[1])})
                        )
                if not rows:
                    break
                last = rows[-1][0]
                done += len(rows)
        return done


# -- SQLite group commit ---------------------------------------------------------------------


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
    error. ``exclusive`` jobs run alone, outside any transaction (``SqlStore.transaction`` parks
    the thread with one while it writes over another connection).
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


# Statements built once: executing them with a parameter dict reuses the compiled form,
# where ``.values(**literals)`` per call would rebuild and re-key the statement each time.
_INSERT_SESSION = sessions.insert()
_INSERT_EVENT = events.insert()
_GET = select(sessions).where(sessions.c.id == bindparam("sid"))
_BY_KEY = select(sessions).where(sessions.c.idempotency_key == bindparam("key"))
_CAS_UPDATE = (
    update(sessions)
    .where(and_(sessions.c.id == bindparam("b_id"), sessions.c.version == bindparam("b_version")))
    .values(
        {c.name: bindparam(c.name) for c in sessions.c if c.name not in ("id", "idempotency_key")}
    )
)

# PostgreSQL's save in ONE statement (one round trip, atomic as any statement): the
# compare-and-set UPDATE as a CTE, and the event inserted only for the row it moved.
_PG_EVENT_COLUMNS = [c.name for c in events.c if c.name != "seq"]
_PG_SAVE = (
    events.insert()
    .from_select(
        _PG_EVENT_COLUMNS,
        select(
            *(bindparam(f"e_{n}", type_=events.c[n].type) for n in _PG_EVENT_COLUMNS)
        ).select_from(
            update(sessions)
            .where(
                and_(
                    sessions.c.id == bindparam("b_id"), sessions.c.version == bindparam("b_version")
                )
            )
            .values(
                {
                    c.name: bindparam(c.name, type_=c.type)
                    for c in sessions.c
                    if c.name not in ("id", "idempotency_key")
                }
            )
            .returning(sessions.c.id)
            .cte("moved")
        ),
    )
    .returning(events.c.seq)
)

_NUL = "\x00"


def _unmatchable(q: SessionQuery) -> bool:
    """A filter with a NUL character matches nothing (no stored text can contain one)."""
    return any(_NUL in v for v in (*q.kinds, *q.states, q.owner or ""))


def _check_text(session: Session, event: Event, key: str | None = None) -> None:
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
        if value is not None and _NUL in value:
            raise InvalidInput(f"{name} must not contain NUL characters")


def _bind(name: str) -> Any:
    from sqlalchemy import bindparam

    return bindparam(name)


def _encode_cursor(s: Session) -> str:
    raw = _dumps([s.created_at.isoformat(), s.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, sid = orjson.loads(raw)
        return parse_iso(ts), str(sid)
    except Exception:
        raise InvalidInput("invalid cursor") from None


def _discard_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Pool checkout hook: refuse a connection whose server side is gone (the pool then
    opens a fresh one)."""
    raw = getattr(dbapi_connection, "_connection", None)
    if raw is not None and raw.is_closed():
        raise exc.DisconnectionError("the database closed this connection")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: a transaction is durable when COMMIT returns, even across power loss.
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _upgrade(sync_conn: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")


def open_store(url: str, *, encryption_keys: Sequence[str] = ()) -> SqlStore:
    """The store for ``url`` (``sqlite+aiosqlite:///path`` or ``postgresql+asyncpg://...``)."""
    return SqlStore(url, sealer=Sealer(encryption_keys))
