"""The Store contract (store/base.py), one suite run against SQLite and PostgreSQL.

This module holds the suite's fixtures and helpers and the basic reads and writes (insert
and save, idempotency keys, the outbox, touch, due, find and count, delete and events). The
rest of the contract is in the ``test_store_*.py`` next to it, by concept: a store's life
(``test_store_lifecycle.py``), concurrent writes and group commit
(``test_store_concurrency.py``), sessions, consumers, side tables, migrations, outages.

The fixtures live here rather than in ``conftest.py`` (the Redis suites' fixtures) because
those modules import them by name from this one, with the helpers they share.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from sessionhub.core import engine
from sessionhub.core.engine import Change
from sessionhub.core.errors import DuplicateId, InvalidInput, VersionConflict
from sessionhub.core.model import DELETED, Event, Session
from sessionhub.core.principal import SYSTEM_PRINCIPAL, Principal
from sessionhub.core.query import Due, SessionQuery
from sessionhub.kinds.generic import Generic
from sessionhub.store import open_store as make_store
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


# -- shared helpers ----------------------------------------------------------------------
# Used by the group commit tests (test_store_concurrency.py) and test_store_sessions.py.


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
