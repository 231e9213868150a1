"""The Store contract (store/base.py), one suite run against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import event, select, text
from sqlalchemy.exc import IntegrityError

from sessionhub.core import engine
from sessionhub.core.engine import Change
from sessionhub.core.errors import DuplicateId, IllegalTransition, InvalidInput, VersionConflict
from sessionhub.core.model import DELETED, Event, Session
from sessionhub.core.principal import SYSTEM_PRINCIPAL, Principal
from sessionhub.core.query import Due, SessionQuery
from sessionhub.kinds.generic import Generic
from sessionhub.store import open_store as make_store
from sessionhub.store.postgres import PostgresStore
from sessionhub.store.schema import events as events_table
from sessionhub.store.schema import sessions as sessions_table
from sessionhub.store.sql import SqlStore
from sessionhub.store.sqlite import SqliteStore

T0 = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
KIND = Generic()
ALICE = Principal("alice")
ROOT = Principal("root", frozenset({"admin"}))
_ids = itertools.count(1)


def new_id(prefix: str = "e") -> str:
    return f"{prefix}{next(_ids):06d}"


def created(
    sid: str | None = None,
    owner: str = "alice",
    at: datetime = T0,
    metadata: dict[str, Any] | None = None,
    kind: Any = KIND,
) -> Change:
    return engine.create(
        kind,
        session_id=sid or new_id("ses_"),
        owner=owner,
        attributes={},
        metadata=metadata or {},
        actor=ROOT,
        now=at,
        event_id=new_id(),
    )


def acted(s: Session, action: str = "end", at: datetime = T0) -> Change:
    return engine.act(KIND, s, action, actor=SYSTEM_PRINCIPAL, now=at, event_id=new_id())


def updated(s: Session, at: datetime = T0, **meta: Any) -> Change:
    return engine.update(KIND, s, actor=ROOT, now=at, event_id=new_id(), metadata=meta)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def open_store(store_url: str) -> Callable[..., SqlStore]:
    def make(keys: list[str] | None = None) -> SqlStore:
        store = make_store(store_url, encryption_keys=keys or [])
        assert isinstance(store, SqlStore)
        return store

    return make


@pytest.fixture
async def store(open_store: Callable[..., SqlStore]) -> AsyncIterator[SqlStore]:
    s = open_store()
    await s.start()
    try:
        yield s
    finally:
        await s.close()


async def raw_rows(store: SqlStore, table: Any) -> list[dict[str, Any]]:
    async with store.engine.connect() as conn:
        return [dict(r._mapping) for r in (await conn.execute(select(table))).all()]


# -- insert / save -------------------------------------------------------------------------


async def test_insert_writes_the_row_and_its_event_together(store: SqlStore) -> None:
    c = created(metadata={"k": [1, "two"]})
    session, ev = await store.insert(c)
    assert session == c.session and ev is not None and ev.seq is not None
    assert await store.get(c.session.id) == c.session  # round-trips exactly, tz-aware UTC
    stored = await store.events(c.session.id)
    assert stored == [ev] and stored[0].data["session"]["id"] == c.session.id
    assert [e.id for e in await store.unpublished()] == [c.event.id]


async def test_a_failing_event_insert_leaves_no_session_row(store: SqlStore) -> None:
    first = created()
    await store.insert(first)
    clash = engine.create(
        KIND,
        session_id="ses_clash",
        owner="alice",
        attributes={},
        metadata={},
        actor=ALICE,
        now=T0,
        event_id=first.event.id,  # the event's unique id collides -> the transaction rolls back
    )
    with pytest.raises(IntegrityError):
        await store.insert(clash)
    assert await store.get("ses_clash") is None
    assert len(await store.unpublished()) == 1


async def test_a_failing_event_append_leaves_the_row_unchanged(store: SqlStore) -> None:
    first = created()
    await store.insert(first)
    change = acted(first.session)
    bad = Change(
        change.before, change.session, Event(**{**_ev(change.event), "id": first.event.id})
    )
    with pytest.raises(IntegrityError):
        await store.save(bad)
    assert await store.get(first.session.id) == first.session


def _ev(e: Event) -> dict[str, Any]:
    return {f: getattr(e, f) for f in e.__slots__}  # type: ignore[attr-defined]


async def test_insert_of_an_existing_id_is_a_duplicate(store: SqlStore) -> None:
    c = created("ses_dup")
    await store.insert(c)
    with pytest.raises(DuplicateId):
        await store.insert(created("ses_dup"))
    assert len(await store.events("ses_dup")) == 1


async def test_save_is_compare_and_set_on_version(store: SqlStore) -> None:
    c = created()
    await store.insert(c)
    first = updated(c.session, note="a")
    ev = await store.save(first)
    assert ev.version == 2 and (await store.get(c.session.id)) == first.session
    stale = acted(c.session)  # still based on version 1
    with pytest.raises(VersionConflict) as err:
        await store.save(stale)
    assert err.value.extra["current"]["version"] == 2
    assert err.value.extra["current"]["metadata"] == {"note": "a"}
    # Nothing written by the loser: same row, no extra event.
    assert (await store.get(c.session.id)) == first.session
    assert [e.version for e in await store.events(c.session.id)] == [1, 2]


async def test_save_of_a_deleted_session_conflicts_with_no_current(store: SqlStore) -> None:
    c = created()
    await store.insert(c)
    await store.delete(c.session, _tombstone(c.session))
    with pytest.raises(VersionConflict) as err:
        await store.save(acted(c.session))
    assert err.value.extra["current"] is None


# -- idempotency ---------------------------------------------------------------------------


async def test_an_idempotency_key_is_used_once_per_owner(store: SqlStore) -> None:
    first = created()
    s1, ev1 = await store.insert(first, idempotency_key="k1")
    assert ev1 is not None
    s2, ev2 = await store.insert(created(), idempotency_key="k1")
    assert ev2 is None and s2 == s1
    assert await store.count(SessionQuery()) == 1
    assert len(await store.unpublished()) == 1
    # Another owner's key space is separate.
    s3, ev3 = await store.insert(created(owner="bob"), idempotency_key="k1")
    assert ev3 is not None and s3.id != s1.id
    # The replay answers the current state, not the one at creation.
    await store.save(acted(s1))
    s4, ev4 = await store.insert(created(), idempotency_key="k1")
    assert ev4 is None and s4.state == "ended" and s4.version == 2


# -- outbox --------------------------------------------------------------------------------


async def test_unpublished_is_oldest_first_and_mark_published_is_idempotent(
    store: SqlStore,
) -> None:
    c = created()
    await store.insert(c)
    await store.save(u := updated(c.session, a=1))
    await store.save(acted(u.session))
    pending = await store.unpublished()
    assert [e.version for e in pending] == [1, 2, 3]
    seqs = [e.seq for e in pending]
    assert seqs == sorted(seqs)
    assert [e.version for e in await store.unpublished(limit=2)] == [1, 2]
    await store.mark_published([pending[0].seq or 0])
    await store.mark_published([pending[0].seq or 0])
    assert [e.version for e in await store.unpublished()] == [2, 3]
    await store.mark_published([e.seq or 0 for e in pending])
    await store.mark_published([])
    assert await store.unpublished() == []


async def test_mark_published_handles_more_than_one_chunk(store: SqlStore) -> None:
    seqs = []
    for _ in range(3):
        _, ev = await store.insert(created())
        assert ev is not None and ev.seq is not None
        seqs.append(ev.seq)
    await store.mark_published([*seqs, *range(10_000, 10_600)])  # unknown seqs are ignored
    assert await store.unpublished() == []


# -- touch ---------------------------------------------------------------------------------


async def test_touch_only_moves_activity_forward_and_never_bumps_version(store: SqlStore) -> None:
    a, b = created(), created()
    await store.insert(a)
    await store.insert(b)
    later = T0 + timedelta(seconds=30)
    n = await store.touch({a.session.id: later, b.session.id: T0 - timedelta(seconds=5)})
    assert n == 1
    sa, sb = await store.get(a.session.id), await store.get(b.session.id)
    assert sa is not None and sb is not None
    assert sa.last_activity_at == later and sa.version == 1 and sa.updated_at == T0
    assert sb.last_activity_at == T0 and sb.version == 1
    assert await store.touch({}) == 0
    assert await store.touch({"ses_missing": later}) == 0
    assert await store.touch({a.session.id: later}) == 0  # equal is not forward
    assert len(await store.events(a.session.id)) == 1  # no event for a heartbeat


# -- due -----------------------------------------------------------------------------------


async def test_due_finds_sessions_past_a_deadline_by_kind_state_and_column(
    store: SqlStore,
) -> None:
    old = created(at=T0)
    fresh = created(at=T0 + timedelta(minutes=10))
    ended = created(at=T0)
    for c in (old, fresh, ended):
        await store.insert(c)
    await store.save(acted(ended.session, at=T0))
    deadline = T0 + timedelta(minutes=5)
    due = await store.due(Due("generic", frozenset({"active"}), "last_activity_at", deadline))
    assert [s.id for s in due] == [old.session.id]
    both = await store.due(Due("generic", frozenset({"active", "ended"}), "updated_at", deadline))
    assert {s.id for s in both} == {old.session.id, ended.session.id}
    assert await store.due(Due("other", frozenset({"active"}), "last_activity_at", deadline)) == []
    assert (
        len(
            await store.due(
                Due("generic", frozenset({"active", "ended"}), "updated_at", deadline, limit=1)
            )
        )
        == 1
    )
    # A touch moves a session out of the heartbeat sweep.
    await store.touch({old.session.id: deadline})
    assert (
        await store.due(Due("generic", frozenset({"active"}), "last_activity_at", deadline)) == []
    )


async def test_due_orders_oldest_first(store: SqlStore) -> None:
    cs = [created(at=T0 + timedelta(seconds=s)) for s in (30, 10, 20)]
    for c in cs:
        await store.insert(c)
    due = await store.due(
        Due("generic", frozenset({"active"}), "last_activity_at", T0 + timedelta(hours=1))
    )
    assert [s.created_at for s in due] == sorted(c.session.created_at for c in cs)


# -- find / count --------------------------------------------------------------------------


async def test_find_pages_through_everything_without_duplicates_or_gaps(store: SqlStore) -> None:
    ids = set()
    for i in range(23):
        # Several sessions share a timestamp, so the id must break ties.
        c = created(at=T0 + timedelta(seconds=i // 4), owner="alice" if i % 3 else "bob")
        await store.insert(c)
        ids.add(c.session.id)
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await store.find(SessionQuery(limit=5, cursor=cursor))
        seen += [s.id for s in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 23 and set(seen) == ids
    # Newest first.
    rows = await store.get_many(seen)
    keys = [(rows[i].created_at, i) for i in seen]
    assert keys == sorted(keys, reverse=True)
    # A page that ends exactly at the last row has no next cursor.
    assert (await store.find(SessionQuery(limit=23))).next_cursor is None
    assert (await store.find(SessionQuery(limit=22))).next_cursor is not None


async def test_find_and_count_filter_by_kind_state_and_owner(store: SqlStore) -> None:
    a1, a2, b1 = created(owner="alice"), created(owner="alice"), created(owner="bob")
    for c in (a1, a2, b1):
        await store.insert(c)
    await store.save(acted(a2.session))
    q = SessionQuery(owner="alice")
    assert {s.id for s in (await store.find(q)).items} == {a1.session.id, a2.session.id}
    assert await store.count(q) == 2
    q = SessionQuery(states=("ended",))
    assert [s.id for s in (await store.find(q)).items] == [a2.session.id]
    q = SessionQuery(kinds=("generic",), states=("active", "ended"), owner="bob")
    assert await store.count(q) == 1
    assert await store.count(SessionQuery(kinds=("nope",))) == 0
    assert await store.count_by_kind_state() == {("generic", "active"): 2, ("generic", "ended"): 1}


async def test_find_with_a_bad_cursor_is_invalid_input(store: SqlStore) -> None:
    for cursor in ("!!!", "bm90IGpzb24", "WzEsMiwzXQ"):  # not base64 / not JSON / [1,2,3]
        with pytest.raises(InvalidInput, match="cursor"):
            await store.find(SessionQuery(cursor=cursor))


async def test_get_many_and_get_of_unknown_ids(store: SqlStore) -> None:
    a, b = created(), created()
    await store.insert(a)
    await store.insert(b)
    got = await store.get_many([a.session.id, b.session.id, "ses_nope"])
    assert set(got) == {a.session.id, b.session.id}
    assert await store.get_many([]) == {}
    assert await store.get("ses_nope") is None


# -- delete, events ------------------------------------------------------------------------


def _tombstone(s: Session) -> Event:
    return Event(
        id=new_id(),
        type=DELETED,
        session_id=s.id,
        kind=s.kind,
        owner=s.owner,
        actor="system",
        at=T0,
        version=s.version + 1,
        data={"state": s.state},
    )


async def test_delete_removes_row_and_events_and_appends_a_tombstone(store: SqlStore) -> None:
    c, other = created(), created()
    await store.insert(c)
    await store.insert(other)
    await store.save(acted(c.session))
    tomb = await store.delete((await store.get(c.session.id)) or c.session, _tombstone(c.session))
    assert tomb.seq is not None and tomb.type == DELETED
    assert await store.get(c.session.id) is None
    assert [e.type for e in await store.events(c.session.id)] == [DELETED]
    assert [e.type for e in await store.unpublished()][-1] == DELETED
    assert await store.get(other.session.id) == other.session
    assert len(await store.events(other.session.id)) == 1


async def test_events_are_in_order_and_filter_by_version(store: SqlStore) -> None:
    c = created()
    await store.insert(c)
    s = c.session
    for i in range(4):
        ch = updated(s, i=i)
        await store.save(ch)
        s = ch.session
    evs = await store.events(c.session.id)
    assert [e.version for e in evs] == [1, 2, 3, 4, 5]
    assert [e.type for e in evs][:2] == ["session.created", "session.updated"]
    assert [e.version for e in await store.events(c.session.id, after_version=3)] == [4, 5]
    assert [e.version for e in await store.events(c.session.id, limit=2)] == [1, 2]
    assert await store.events("ses_nope") == []


# -- encryption at rest ----------------------------------------------------------------------


async def test_rotate_keys_reseals_every_row(open_store: Callable[..., SqlStore]) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    s_old = open_store([old])
    await s_old.start()
    try:
        c = created(metadata={"password": "hunter2"})
        await s_old.insert(c)
        for row in await raw_rows(s_old, sessions_table):
            assert "hunter2" not in row["metadata"]
        for row in await raw_rows(s_old, events_table):
            assert "hunter2" not in row["data"]
    finally:
        await s_old.close()

    both = open_store([new, old])
    await both.start()
    try:
        s = await both.get(c.session.id)
        assert s is not None and s.metadata == {"password": "hunter2"}  # old key still reads
        assert await both.rotate_keys(batch=1) == 2  # one session row + one event row
    finally:
        await both.close()

    new_only = open_store([new])
    await new_only.start()
    try:
        s = await new_only.get(c.session.id)
        assert s is not None and s.metadata == {"password": "hunter2"}
        assert (await new_only.events(c.session.id))[0].data["session"]["metadata"] == {
            "password": "hunter2"
        }
    finally:
        await new_only.close()

    old_only = open_store([old])
    await old_only.start()
    try:
        with pytest.raises(RuntimeError, match="cannot be decrypted"):
            await old_only.get(c.session.id)
    finally:
        await old_only.close()


# -- durability, readiness -----------------------------------------------------------------


async def test_a_committed_change_survives_closing_and_reopening(
    open_store: Callable[..., SqlStore],
) -> None:
    first = open_store()
    await first.start()
    c = created(metadata={"x": 1})
    await first.insert(c)
    await first.save(ch := acted(c.session))
    await first.close()

    again = open_store()
    await again.start()  # migrations are idempotent
    try:
        assert await again.get(c.session.id) == ch.session
        assert [e.version for e in await again.unpublished()] == [1, 2]
    finally:
        await again.close()


async def test_ping_answers_while_open_and_fails_when_closed(
    open_store: Callable[..., SqlStore],
) -> None:
    s = open_store()
    await s.start()
    await s.ping()
    await s.close()
    with pytest.raises(Exception):  # noqa: B017 - any failure is "not ready"
        await s.ping()


async def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    s = SqliteStore(f"sqlite+aiosqlite:///{tmp_path / 'x' / 'w.db'}")
    await s.start()  # creates the parent directory
    try:
        async with s.engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA synchronous"))).scalar() == 2  # FULL
    finally:
        await s.close()


def test_an_unknown_database_url_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database URL"):
        make_store("mysql://x")


async def test_a_store_that_is_not_started_or_closed_is_unavailable(
    open_store: Callable[..., SqlStore],
) -> None:
    from sessionhub.core.errors import Unavailable

    s = open_store()
    await s.start()
    await s.start()  # starting twice is harmless
    c = created()
    await s.insert(c)
    await s.close()
    with pytest.raises(Unavailable):
        await s.ping()
    again = open_store()
    await again.start()
    try:
        assert await again.get(c.session.id) == c.session
    finally:
        await again.close()


async def test_concurrent_writers_all_commit(store: SqlStore) -> None:
    """Many concurrent inserts and saves: each is written exactly once (one writer queue)."""
    changes = [created() for _ in range(40)]
    await asyncio.gather(*(store.insert(c) for c in changes))
    await asyncio.gather(*(store.save(acted(c.session)) for c in changes))
    assert await store.count(SessionQuery(states=("ended",))) == 40
    assert len(await store.unpublished(limit=1000)) == 80


# -- group commit (SQLite) -----------------------------------------------------------------


@asynccontextmanager
async def queued(store: SqlStore, writes: int) -> AsyncIterator[None]:
    """Let the ``writes`` started inside the block queue up, then release them together.

    On SQLite, ``transaction()`` parks the group writer, so everything queued meanwhile is committed
    as ONE group when the block ends. PostgreSQL has no group writer (a pool of concurrent
    transactions); there the same tests check the same per-write outcomes."""
    if not store.is_sqlite:
        yield
        return
    async with store.transaction():
        yield
        assert isinstance(store, SqliteStore)
        writer = store._writer
        assert writer is not None
        for _ in range(2000):  # bounded: some writes read first (idempotency keys)
            if writer.queued() >= writes:
                break
            await asyncio.sleep(0.001)
        assert writer.queued() == writes


def _groups(store: SqlStore) -> tuple[int, int]:
    """(groups committed, writes in them) so far; (0, 0) without a group writer."""
    writer = getattr(store, "_writer", None)
    return (writer.groups, writer.jobs) if writer is not None else (0, 0)


def _since(store: SqlStore, before: tuple[int, int]) -> tuple[int, int]:
    now = _groups(store)
    return now[0] - before[0], now[1] - before[1]


async def test_concurrent_saves_on_different_sessions_commit_as_one_group(
    store: SqlStore,
) -> None:
    firsts = [created() for _ in range(20)]
    await asyncio.gather(*(store.insert(c) for c in firsts))
    changes = [acted(c.session) for c in firsts]
    before = _groups(store)
    async with queued(store, 20):
        saves = [asyncio.ensure_future(store.save(c)) for c in changes]
    stored = await asyncio.gather(*saves)
    if store.is_sqlite:
        assert _since(store, before) == (1, 20)  # one transaction, one fsync for all
    assert [e.id for e in stored] == [c.event.id for c in changes]
    assert len({e.seq for e in stored}) == 20
    for c in changes:
        assert await store.get(c.session.id) == c.session
        assert [e.id for e in await store.events(c.session.id)] == [
            firsts[changes.index(c)].event.id,
            c.event.id,
        ]


async def test_a_failing_write_in_a_group_fails_alone(store: SqlStore) -> None:
    """A lost compare-and-set, a duplicate id and a half-done write (its event clashes after
    its row was inserted) each fail alone; the rest of the same group commits."""
    base = [created() for _ in range(3)]
    await asyncio.gather(*(store.insert(c) for c in base))
    moved = updated(base[0].session, note="first")
    await store.save(moved)
    good = [acted(base[1].session), acted(base[2].session)]
    stale = acted(base[0].session)  # still based on version 1
    fresh = created()
    duplicate = created(base[1].session.id)
    half = engine.create(
        KIND,
        session_id="ses_half",
        owner="alice",
        attributes={},
        metadata={},
        actor=ALICE,
        now=T0,
        event_id=base[2].event.id,  # inserts its row, then its event collides
    )
    before = _groups(store)
    async with queued(store, 6):
        tasks = [
            asyncio.ensure_future(store.save(good[0])),
            asyncio.ensure_future(store.save(stale)),
            asyncio.ensure_future(store.insert(duplicate)),
            asyncio.ensure_future(store.insert(half)),
            asyncio.ensure_future(store.insert(fresh)),
            asyncio.ensure_future(store.save(good[1])),
        ]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    if store.is_sqlite:
        assert _since(store, before) == (1, 6)
    assert isinstance(results[0], Event) and isinstance(results[5], Event)
    assert isinstance(results[1], VersionConflict)
    assert results[1].extra["current"]["version"] == 2
    assert isinstance(results[2], DuplicateId)
    assert isinstance(results[3], IntegrityError)
    assert isinstance(results[4], tuple) and results[4][0] == fresh.session
    assert isinstance(results[4][1], Event)
    # The winners are durable, the losers wrote nothing (not even half a write).
    assert await store.get(base[0].session.id) == moved.session
    assert await store.get(base[1].session.id) == good[0].session
    assert await store.get(base[2].session.id) == good[1].session
    assert await store.get("ses_half") is None
    assert await store.get(fresh.session.id) == fresh.session
    assert [e.version for e in await store.events(base[0].session.id)] == [1, 2]
    assert len(await store.unpublished(limit=100)) == 3 + 1 + 2 + 1


async def test_one_idempotency_key_twice_in_one_group_creates_once(store: SqlStore) -> None:
    a, b = created(), created()
    async with queued(store, 2):
        tasks = [
            asyncio.ensure_future(store.insert(a, idempotency_key="same")),
            asyncio.ensure_future(store.insert(b, idempotency_key="same")),
        ]
    (s1, ev1), (s2, ev2) = await asyncio.gather(*tasks)
    assert s1 == s2 and s1 in (a.session, b.session)  # either may be first in the queue
    assert [ev1 is None, ev2 is None].count(True) == 1
    assert await store.count(SessionQuery()) == 1


async def test_a_group_whose_commit_fails_fails_every_write_in_it(tmp_path: Path) -> None:
    """If the group's COMMIT fails, no caller hears of success and nothing is written;
    the writer then carries on with the next group."""
    s = SqliteStore(f"sqlite+aiosqlite:///{tmp_path / 'g.db'}")
    await s.start()
    try:
        firsts = [created() for _ in range(5)]
        await asyncio.gather(*(s.insert(c) for c in firsts))
        assert s._sync is not None

        def refuse(_conn: Any) -> None:
            raise RuntimeError("disk on fire")  # injected: COMMIT fails

        event.listen(s._sync, "commit", refuse)
        before = _groups(s)
        async with queued(s, 7):
            tasks = [asyncio.ensure_future(s.save(acted(c.session))) for c in firsts]
            tasks.append(asyncio.ensure_future(s.insert(created("ses_lost"))))
            tasks.append(asyncio.ensure_future(s.save(acted(firsts[0].session))))  # a CAS loser
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, RuntimeError) and "disk on fire" in str(r) for r in results)
        assert _since(s, before) == (0, 0)
        for c in firsts:
            assert await s.get(c.session.id) == c.session  # unchanged
        assert await s.get("ses_lost") is None
        assert len(await s.unpublished(limit=100)) == 5
        event.remove(s._sync, "commit", refuse)
        await s.save(acted(firsts[0].session))  # the writer is still alive
        assert (await s.get(firsts[0].session.id)).state == "ended"  # type: ignore[union-attr]
    finally:
        await s.close()


async def test_tx_excludes_the_group_writer(store: SqlStore) -> None:
    """``transaction()`` (features' own tables) is the only writer while it runs: a save queued
    meanwhile waits for it and then commits."""
    c = created()
    await store.insert(c)
    async with store.transaction() as conn:
        task = asyncio.ensure_future(store.save(acted(c.session)))
        for _ in range(5):
            await asyncio.sleep(0)
        if store.is_sqlite:
            assert not task.done()
        await conn.execute(text("SELECT 1"))
    assert (await task).version == 2


# -- the hub's written-session cache over a shared store -----------------------------------


async def test_a_node_changes_its_own_sessions_without_a_read_and_survives_stale_ones(
    store_url: str,
) -> None:
    """A node keeps the sessions it committed and changes them without reading first; when
    another node changed one meanwhile, the compare-and-set catches the stale copy and the
    change is decided again on a fresh read (no lost update, no spurious 409/412)."""
    from sessionhub.broker.memory import MemoryBroker
    from sessionhub.hub import Hub
    from sessionhub.kinds.registry import Registry

    node1 = Hub(make_store(store_url), MemoryBroker(), Registry([Generic()]))
    node2 = Hub(make_store(store_url), MemoryBroker(), Registry([Generic()]))
    await node1.start()
    await node2.start()
    try:
        reads = 0
        real_get = node1.store.get

        async def counting_get(sid: str) -> Session | None:
            nonlocal reads
            reads += 1
            return await real_get(sid)

        node1.store.get = counting_get  # type: ignore[method-assign]
        s, _ = await node1.create(ALICE, "generic")
        s2 = await node1.update(ALICE, s.id, metadata={"by": "node1"}, expected_version=1)
        assert s2.version == 2 and reads == 0  # its own session: no read

        await node2.update(ALICE, s.id, metadata={"by": "node2"}, merge_metadata=True)
        await node2.update(ALICE, s.id, attributes={"label": "two"})
        # node1's copy is at version 2, the row at 4: If-Match 4 is right, not a 412.
        s5 = await node1.update(ALICE, s.id, counters={"n": 1}, expected_version=4)
        assert s5.version == 5 and reads == 1
        assert s5.metadata == {"by": "node2"} and s5.attributes["label"] == "two"  # nothing lost
        await node2.act(ALICE, s.id, "end")
        # Ended elsewhere: node1's copy says active, the compare-and-set says otherwise (one
        # read for the conflict's current), and the fresh read (another) makes it illegal.
        with pytest.raises(IllegalTransition) as err:
            await node1.act(ALICE, s.id, "end")
        assert err.value.extra["current"]["version"] == 6
        assert reads == 3
        assert [e.version for e in await node1.store.events(s.id)] == [1, 2, 3, 4, 5, 6]
    finally:
        await node1.close()
        await node2.close()


async def test_two_racing_changes_on_one_node_both_apply_without_if_match(store_url: str) -> None:
    """Without If-Match a change is a merge onto the current version (issue 13): two racing
    changes on one node are serialised and both apply; with If-Match on the same version,
    optimistic concurrency decides, and exactly one gets its 409."""
    from sessionhub.broker.memory import MemoryBroker
    from sessionhub.hub import Hub
    from sessionhub.kinds.registry import Registry

    hub = Hub(make_store(store_url), MemoryBroker(), Registry([Generic()]))
    await hub.start()
    try:
        s, _ = await hub.create(ALICE, "generic")
        results = await asyncio.gather(
            hub.update(ALICE, s.id, attributes={"label": "a"}),
            hub.update(ALICE, s.id, metadata={"m": 1}),
        )
        assert sorted(r.version for r in results) == [2, 3]
        final = await hub.get(ALICE, s.id)
        assert final.attributes["label"] == "a" and final.metadata == {"m": 1}  # both kept
        racing = await asyncio.gather(
            hub.update(ALICE, s.id, attributes={"label": "x"}, expected_version=3),
            hub.update(ALICE, s.id, attributes={"label": "y"}, expected_version=3),
            return_exceptions=True,
        )
        lost = [r for r in racing if not isinstance(r, Session)]
        assert len(lost) == 1 and getattr(lost[0], "status", None) in (409, 412)
        assert [e.version for e in await hub.store.events(s.id)] == [1, 2, 3, 4]
    finally:
        await hub.close()


@pytest.mark.postgres
async def test_connections_the_database_closed_are_replaced_unnoticed(
    postgres_url: str,
) -> None:
    """A restart or failover closes every pooled connection; the next calls (a read and a
    write) must get fresh ones instead of failing."""
    import asyncpg

    store = PostgresStore(postgres_url)
    await store.start()
    try:
        c = created()
        await store.insert(c)
        # Fill the pool with several live connections, then kill them all server-side.
        await asyncio.gather(*(store.get(c.session.id) for _ in range(5)))
        dsn = postgres_url.replace("postgresql+asyncpg://", "postgresql://")
        admin = await asyncpg.connect(dsn)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        assert killed >= 1
        await asyncio.sleep(0.05)  # the FATAL message and the close reach the client
        got = await store.get(c.session.id)
        assert got == c.session
        ev = await store.save(acted(got))
        assert ev.version == 2 and [e.version for e in await store.events(got.id)] == [1, 2]
    finally:
        await store.close()
