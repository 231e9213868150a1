"""The Store contract, continued: concurrent writes - many writers at once, SQLite's group
commit (one transaction for every write queued together, each failing alone), and the
hub's written-session cache when nodes or racing changes share one store. Runs against
SQLite and PostgreSQL like ``test_store.py``, whose fixtures it uses."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError

from contract import test_store as suite
from contract.test_store import (
    ALICE,
    KIND,
    T0,
    SqlStore,
    acted,
    created,
    queued,
    updated,
)
from sessionhub.core import engine
from sessionhub.core.errors import DuplicateId, IllegalTransition, VersionConflict
from sessionhub.core.model import Event, Session
from sessionhub.core.query import SessionQuery
from sessionhub.kinds.generic import Generic
from sessionhub.store import open_store as make_store
from sessionhub.store.sqlite import SqliteStore

# The suite's fixtures (parametrised over SQLite and PostgreSQL), used here by name.
open_store = suite.open_store
store = suite.store
store_url = suite.store_url


async def test_concurrent_writers_all_commit(store: SqlStore) -> None:
    """Many concurrent inserts and saves: each is written exactly once (one writer queue)."""
    changes = [created() for _ in range(40)]
    await asyncio.gather(*(store.insert(c) for c in changes))
    await asyncio.gather(*(store.save(acted(c.session)) for c in changes))
    assert await store.count(SessionQuery(states=("ended",))) == 40
    assert len(await store.unpublished(limit=1000)) == 80


# -- group commit (SQLite) -----------------------------------------------------------------


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


async def test_a_half_done_change_in_a_group_is_rolled_back_and_the_rest_commits(
    store: SqlStore,
) -> None:
    """A change whose row is updated and whose event then collides, among good changes in
    one group: the half-done change wrote nothing (its savepoint is rolled back), and every
    other change is durable exactly once."""
    base = [created() for _ in range(4)]
    await asyncio.gather(*(store.insert(c) for c in base))
    good = [acted(base[i].session) for i in (0, 1, 3)]
    half = engine.act(KIND, base[2].session, "end", actor=ALICE, now=T0, event_id=base[0].event.id)
    before = _groups(store)
    async with queued(store, 4):
        tasks = [
            asyncio.ensure_future(store.save(good[0])),
            asyncio.ensure_future(store.save(half)),
            asyncio.ensure_future(store.save(good[1])),
            asyncio.ensure_future(store.save(good[2])),
        ]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    if store.is_sqlite:
        assert _since(store, before) == (1, 4)
    assert isinstance(results[1], IntegrityError)
    assert all(isinstance(results[i], Event) for i in (0, 2, 3))
    assert await store.get(base[2].session.id) == base[2].session  # not even its row
    for change in good:
        assert await store.get(change.session.id) == change.session
        assert [e.id for e in await store.events(change.session.id)][-1] == change.event.id
    seqs = [r.seq for r in results if isinstance(r, Event)]
    assert len(set(seqs)) == 3
    assert len(await store.unpublished(limit=100)) == 4 + 3


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
