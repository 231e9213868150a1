"""The Store contract, continued: the event log as consumers read it (seq order, positions
moved by compare-and-set), leases with fencing tokens, and raw upstream input. Runs
against SQLite and PostgreSQL like ``test_store.py``, whose fixtures it uses."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from contract import test_store as suite
from contract.test_store import (
    ROOT,
    T0,
    SqlStore,
    _tombstone,
    acted,
    created,
    updated,
)
from sessionhub.core import engine
from sessionhub.store.base import DeliveryRow, NotificationRow
from unit.kinds import Approval

# The suite's fixtures (parametrised over SQLite and PostgreSQL), used here by name.
open_store = suite.open_store
store = suite.store
store_url = suite.store_url


# -- the log in seq order ------------------------------------------------------------------


async def test_events_after_reads_the_log_oldest_first_and_filters_by_kind(
    store: SqlStore,
) -> None:
    assert await store.last_seq() == 0
    assert await store.events_after(0) == []
    a = created()
    b = engine.create(
        Approval(),
        session_id="apr_1",
        owner="alice",
        attributes={"target": "scope"},
        metadata={},
        actor=ROOT,
        now=T0,
        event_id="e_apr_1",
    )
    await store.insert(a)
    await store.insert(b)
    await store.save(ch := updated(a.session, n=1))
    await store.save(acted(ch.session))
    log = await store.events_after(0)
    assert [e.id for e in log] == [
        a.event.id,
        b.event.id,
        ch.event.id,
        log[3].id,
    ]
    seqs = [e.seq or 0 for e in log]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    assert await store.last_seq() == seqs[-1]
    assert [e.id for e in await store.events_after(seqs[0])] == [e.id for e in log[1:]]
    assert [e.id for e in await store.events_after(0, limit=2)] == [a.event.id, b.event.id]
    assert [e.kind for e in await store.events_after(0, kinds=["approval"])] == ["approval"]
    assert len(await store.events_after(0, kinds=["generic"])) == 3
    assert await store.events_after(0, kinds=[]) == []
    assert await store.events_after(seqs[-1]) == []
    # The log carries the whole event, as stored.
    assert log[0] == (await store.events(a.session.id))[0]


async def test_a_seq_is_never_handed_out_twice_after_the_top_of_the_log_is_deleted(
    store: SqlStore,
) -> None:
    """Deleting the session whose events are at the top of the log must not let the next
    events reuse their seqs: a consumer already past them would skip the new ones."""
    a, b = created(), created()
    await store.insert(a)
    await store.insert(b)
    await store.save(acted(a.session))  # a owns the top of the log
    top = await store.last_seq()
    position = top  # a consumer that has read everything so far
    tomb = await store.delete((await store.get(a.session.id)) or a.session, _tombstone(a.session))
    assert tomb.seq is not None and tomb.seq > top
    # The next event goes after the tombstone, not into the seqs that were deleted.
    fresh = created()
    _, ev = await store.insert(fresh)
    assert ev is not None and ev.seq is not None and ev.seq > tomb.seq
    assert [e.id for e in await store.events_after(position)] == [tomb.id, fresh.event.id]


# -- consumer positions --------------------------------------------------------------------


def _note(nid: str, user: str = "alice") -> NotificationRow:
    return NotificationRow(
        id=nid,
        user_id=user,
        event="thing_happened",
        session_id="ses_x",
        data={"n": nid},
        created_at=T0,
    )


def _delivery(did: str) -> DeliveryRow:
    return DeliveryRow(
        id=did, url="http://hooks.test/in", body='{"id":"x"}', next_attempt_at=T0, created_at=T0
    )


async def _note_ids(store: SqlStore) -> set[str]:
    page = await store.list_notifications(["alice", "bob"], limit=100)
    return {n.id for n in page.items}


async def test_a_consumer_position_moves_only_from_the_expected_one(store: SqlStore) -> None:
    assert await store.consumer_position("mailer") is None
    added = await store.commit_consumer(
        "mailer", expected=None, position=3, notifications=[_note("n1")]
    )
    assert added == ["n1"] and await store.consumer_position("mailer") == 3
    # A second "first" commit loses (the row exists) and writes none of its effects.
    lost = await store.commit_consumer(
        "mailer",
        expected=None,
        position=4,
        notifications=[_note("n2")],
        deliveries=[_delivery("d2")],
    )
    assert lost is None and await store.consumer_position("mailer") == 3
    # So does one that expected a position the consumer is no longer at.
    stale = await store.commit_consumer(
        "mailer", expected=2, position=9, notifications=[_note("n3")]
    )
    assert stale is None and await store.consumer_position("mailer") == 3
    assert await _note_ids(store) == {"n1"}
    assert await store.count_pending_deliveries() == 0
    # From the right position it moves, with its effects, once.
    won = await store.commit_consumer(
        "mailer",
        expected=3,
        position=7,
        notifications=[_note("n1"), _note("n4", "bob")],  # n1 exists: not new
        deliveries=[_delivery("d4")],
    )
    assert won == ["n4"] and await store.consumer_position("mailer") == 7
    assert await _note_ids(store) == {"n1", "n4"}
    assert await store.count_pending_deliveries() == 1
    # Standing still is allowed (effects without new events); going back is not.
    assert await store.commit_consumer("mailer", expected=7, position=7) == []
    with pytest.raises(ValueError, match="back"):
        await store.commit_consumer("mailer", expected=7, position=6)
    assert await store.consumer_position("mailer") == 7
    # Positions are per consumer.
    assert await store.consumer_position("other") is None


async def test_of_two_racing_commits_from_one_position_exactly_one_wins(store: SqlStore) -> None:
    await store.commit_consumer("race", expected=None, position=10)
    results = await asyncio.gather(
        store.commit_consumer("race", expected=10, position=20, notifications=[_note("from-a")]),
        store.commit_consumer("race", expected=10, position=20, notifications=[_note("from-b")]),
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and winners[0] in (["from-a"], ["from-b"])
    assert await _note_ids(store) == set(winners[0])  # the loser wrote nothing
    assert await store.consumer_position("race") == 20


# -- leases --------------------------------------------------------------------------------


async def test_a_lease_has_one_holder_and_its_token_rises_when_the_holder_changes(
    store: SqlStore,
) -> None:
    ttl = timedelta(seconds=10)
    t1 = await store.acquire_lease("leader", "node-a", ttl=ttl, now=T0)
    assert t1 is not None
    # Renewing keeps the token; another node cannot take it while it is valid.
    assert await store.acquire_lease("leader", "node-a", ttl=ttl, now=T0 + ttl / 2) == t1
    assert await store.acquire_lease("leader", "node-b", ttl=ttl, now=T0 + ttl) is None
    # The renewal moved the expiry: at T0 + 10 s it still ran until T0 + 15 s.
    assert await store.acquire_lease("leader", "node-b", ttl=ttl, now=T0 + ttl * 1.4) is None
    # Expired: it moves, with a greater token; the old holder is now refused.
    t2 = await store.acquire_lease("leader", "node-b", ttl=ttl, now=T0 + ttl * 1.5)
    assert t2 is not None and t2 > t1
    assert await store.acquire_lease("leader", "node-a", ttl=ttl, now=T0 + ttl * 1.6) is None
    # Leases are independent by name.
    assert await store.acquire_lease("sweeper", "node-a", ttl=ttl, now=T0) is not None
    # Only the holder releases; a released lease is free at once, under a new token (also
    # for the node that released it, whose earlier work must not pass as current).
    assert await store.release_lease("leader", "node-a") is False
    assert await store.release_lease("leader", "node-b") is True
    t3 = await store.acquire_lease("leader", "node-b", ttl=ttl, now=T0 + ttl * 1.7)
    assert t3 is not None and t3 > t2
    with pytest.raises(ValueError):
        await store.acquire_lease("leader", "", ttl=ttl, now=T0)


async def test_two_nodes_racing_for_a_free_lease_get_one_holder(store: SqlStore) -> None:
    ttl = timedelta(seconds=5)
    tokens = await asyncio.gather(
        *(store.acquire_lease("leader", f"node-{i}", ttl=ttl, now=T0) for i in range(6))
    )
    assert sum(1 for t in tokens if t is not None) == 1
    # And racing for an expired one: again one winner, with the next token.
    later = T0 + ttl * 2
    again = await asyncio.gather(
        *(store.acquire_lease("leader", f"other-{i}", ttl=ttl, now=later) for i in range(6))
    )
    won = [t for t in again if t is not None]
    assert len(won) == 1 and won[0] > next(t for t in tokens if t is not None)


# -- raw upstream input --------------------------------------------------------------------


async def test_raw_input_is_kept_in_order_per_source_and_trimmed_to_a_bound(
    store: SqlStore,
) -> None:

    seqs = await store.append_raw(
        "nina", [(T0 + timedelta(seconds=i), f'{{"n":{i}}}') for i in range(5)]
    )
    assert len(seqs) == 5 and seqs == sorted(seqs) and len(set(seqs)) == 5
    other = await store.append_raw("kato", [(T0, "x")])
    assert await store.append_raw("nina", []) == []
    got = await store.read_raw("nina")
    assert [r.payload for r in got] == [f'{{"n":{i}}}' for i in range(5)]
    assert [r.seq for r in got] == seqs and {r.source for r in got} == {"nina"}
    assert got[2].received_at == T0 + timedelta(seconds=2)
    assert [r.seq for r in await store.read_raw("nina", after_seq=seqs[1], limit=2)] == seqs[2:4]
    # Trim keeps the newest; the other source is untouched.
    assert await store.trim_raw("nina", keep=2) == 3
    assert [r.seq for r in await store.read_raw("nina")] == seqs[3:]
    assert await store.trim_raw("nina", keep=2) == 0
    assert [r.seq for r in await store.read_raw("kato")] == other
    # Trimmed down to nothing, seqs still only grow (a reader tails by seq).
    assert await store.trim_raw("nina", keep=0) == 2
    assert await store.read_raw("nina") == []
    [after] = await store.append_raw("nina", [(T0, "again")])
    assert after > seqs[-1] and after > other[0]
    with pytest.raises(ValueError):
        await store.trim_raw("nina", keep=-1)
