"""The Store contract, continued: the side tables of the services above the hub - chat
messages, notifications, webhook deliveries. Runs against SQLite and PostgreSQL like
``test_store.py``, whose fixtures it uses."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from cryptography.fernet import Fernet

from contract import test_store as suite
from contract.test_store import (
    T0,
    SqlStore,
    _tombstone,
    created,
    raw_rows,
)
from sessionhub.store.base import DeliveryRow, NotificationRow
from sessionhub.store.schema import chat_messages

# The suite's fixtures (parametrised over SQLite and PostgreSQL), used here by name.
open_store = suite.open_store
store = suite.store
store_url = suite.store_url


# -- chat messages -------------------------------------------------------------------------


async def test_chat_messages_are_numbered_per_session_and_read_in_pages(store: SqlStore) -> None:
    for i in range(5):
        position = await store.append_message(
            "ses_a",
            message_id=f"m{i}",
            role="user",
            content=f"hello {i}",
            metadata={"i": i},
            at=T0 + timedelta(seconds=i),
        )
        assert position == i + 1
        if i < 2:  # another session's messages do not shift these positions
            await store.append_message(
                "ses_b", message_id=f"b{i}", role="assistant", content="x", metadata={}, at=T0
            )
    assert await store.count_messages("ses_a") == 5
    assert await store.count_messages("ses_b") == 2
    assert await store.count_messages("ses_none") == 0
    page = await store.read_messages("ses_a", offset=1, limit=3)
    assert [(m.id, m.position, m.content, m.metadata) for m in page] == [
        ("m1", 2, "hello 1", {"i": 1}),
        ("m2", 3, "hello 2", {"i": 2}),
        ("m3", 4, "hello 3", {"i": 3}),
    ]
    assert page[0].role == "user" and page[0].session_id == "ses_a"
    assert page[0].created_at == T0 + timedelta(seconds=1)
    assert [m.id for m in await store.read_messages("ses_a", offset=4, limit=10)] == ["m4"]
    assert await store.read_messages("ses_a", offset=5, limit=10) == []


async def test_concurrent_appends_get_distinct_positions(store: SqlStore) -> None:
    positions = await asyncio.gather(
        *(
            store.append_message(
                "ses_c", message_id=f"c{i}", role="user", content="x", metadata={}, at=T0
            )
            for i in range(10)
        )
    )
    assert sorted(positions) == list(range(1, 11))


async def test_chat_content_and_metadata_are_sealed_at_rest(
    open_store: Callable[..., SqlStore],
) -> None:

    s = open_store([Fernet.generate_key().decode()])
    await s.start()
    try:
        await s.append_message(
            "ses_a",
            message_id="m1",
            role="user",
            content="the launch code",
            metadata={"pin": "2468"},
            at=T0,
        )
        [row] = await raw_rows(s, chat_messages)
        assert "launch" not in row["content"] and "2468" not in row["metadata"]
        [m] = await s.read_messages("ses_a", offset=0, limit=1)
        assert m.content == "the launch code" and m.metadata == {"pin": "2468"}
        assert await s.rotate_keys() == 2  # the message's content and metadata are re-sealed
    finally:
        await s.close()


async def test_deleting_a_session_deletes_its_chat_in_the_same_write(store: SqlStore) -> None:
    a, b = created(), created()
    await store.insert(a)
    await store.insert(b)
    for s in (a.session, b.session):
        await store.append_message(
            s.id, message_id=f"m-{s.id}", role="user", content="hi", metadata={}, at=T0
        )
    await store.delete(a.session, _tombstone(a.session))
    assert await store.count_messages(a.session.id) == 0
    assert await store.count_messages(b.session.id) == 1


# -- notifications -------------------------------------------------------------------------


def note(nid: str, user: str = "alice", at: datetime = T0, event: str = "ping") -> NotificationRow:
    return NotificationRow(
        id=nid, user_id=user, event=event, session_id="ses_x", data={"id": nid}, created_at=at
    )


def delivery(did: str, due: datetime = T0) -> DeliveryRow:
    return DeliveryRow(
        id=did,
        url=f"http://hooks.test/{did}",
        body=f'{{"id":"{did}"}}',
        next_attempt_at=due,
        created_at=T0,
    )


async def test_notifications_and_deliveries_are_inserted_once(store: SqlStore) -> None:
    first = await store.insert_notifications([note("n1"), note("n2")], [delivery("d1")])
    assert first.notifications == ["n1", "n2"] and first.deliveries == ["d1"]
    again = await store.insert_notifications(
        [note("n2"), note("n3")], [delivery("d1"), delivery("d2")]
    )
    assert again.notifications == ["n3"] and again.deliveries == ["d2"]
    nothing = await store.insert_notifications([])
    assert nothing.notifications == [] and nothing.deliveries == []
    page = await store.list_notifications(["alice"], limit=10)
    assert [n.id for n in page.items] == ["n3", "n2", "n1"] and page.total == 3
    assert page.items[0].data == {"id": "n3"} and page.items[0].read_at is None
    assert await store.count_pending_deliveries() == 2


async def test_notifications_list_newest_first_in_pages_with_counts(store: SqlStore) -> None:
    await store.insert_notifications(
        [note(f"a{i}") for i in range(5)] + [note("bob1", "bob"), note("adm", "@admins")]
    )
    await store.mark_notifications_read(["alice"], at=T0, ids=["a1", "a3"])
    page = await store.list_notifications(["alice"], limit=2)
    assert [n.id for n in page.items] == ["a4", "a3"]
    assert (page.total, page.unread) == (5, 3) and page.next_before == page.items[-1].seq
    page2 = await store.list_notifications(["alice"], limit=2, before_seq=page.next_before)
    assert [n.id for n in page2.items] == ["a2", "a1"] and page2.total == 5
    page3 = await store.list_notifications(["alice"], limit=2, before_seq=page2.next_before)
    assert [n.id for n in page3.items] == ["a0"] and page3.next_before is None
    # A page that ends exactly at the last row has no next one.
    assert (await store.list_notifications(["alice"], limit=5)).next_before is None
    # Unread only: ``total`` counts the filter, ``unread`` all unread of the recipients.
    unread = await store.list_notifications(["alice"], limit=10, unread_only=True)
    assert [n.id for n in unread.items] == ["a4", "a2", "a0"]
    assert (unread.total, unread.unread) == (3, 3)
    both = await store.list_notifications(["alice", "@admins"], limit=10)
    assert {n.id for n in both.items} == {f"a{i}" for i in range(5)} | {"adm"}
    assert await store.list_notifications([], limit=10) == type(page)([], 0, 0, None)
    # A cursor beyond any seq reads from the newest.
    huge = await store.list_notifications(["alice"], limit=1, before_seq=10**30)
    assert [n.id for n in huge.items] == ["a4"]


async def test_marking_notifications_read(store: SqlStore) -> None:
    await store.insert_notifications([note("a1"), note("a2"), note("a3"), note("b1", "bob")])
    later = T0 + timedelta(minutes=1)
    # Only the recipients' own, only unread ones count.
    assert await store.mark_notifications_read(["alice"], at=later, ids=["a1", "b1"]) == 1
    assert await store.mark_notifications_read(["alice"], at=later, ids=["a1"]) == 0
    assert await store.mark_notifications_read(["alice"], at=later, ids=[]) == 0
    page = await store.list_notifications(["alice", "bob"], limit=10)
    read = {n.id: n.read_at for n in page.items}
    assert read == {"a1": later, "a2": None, "a3": None, "b1": None}
    assert await store.mark_notifications_read(["alice"], at=later) == 2  # everything
    assert (await store.list_notifications(["alice"], limit=10)).unread == 0
    assert (await store.list_notifications(["bob"], limit=10)).unread == 1


async def test_newest_notification_time(store: SqlStore) -> None:
    assert await store.newest_notification_at() is None
    await store.insert_notifications(
        [note("n1", at=T0 + timedelta(hours=1)), note("n2", at=T0), note("n3", "bob", at=T0)]
    )
    newest = await store.newest_notification_at()
    assert newest == T0 + timedelta(hours=1) and newest.tzinfo is not None


# -- webhook deliveries --------------------------------------------------------------------


async def test_due_deliveries_soonest_first_and_claimed_once(store: SqlStore) -> None:
    await store.insert_notifications(
        [],
        [
            delivery("late", T0 + timedelta(seconds=30)),
            delivery("first", T0 - timedelta(seconds=5)),
            delivery("second", T0),
        ],
    )
    due = await store.due_deliveries(T0, limit=10)
    assert [d.id for d in due] == ["first", "second"]
    assert due[0].attempts == 0 and due[0].status == "pending" and due[0].url.endswith("first")
    assert [d.id for d in await store.due_deliveries(T0, limit=1)] == ["first"]
    # Claiming is compare-and-set on attempts: once per attempt, whoever is first.
    lease = T0 + timedelta(seconds=60)
    claims = await asyncio.gather(
        store.claim_delivery("first", 0, lease), store.claim_delivery("first", 0, lease)
    )
    assert sorted(claims) == [False, True]
    assert [d.id for d in await store.due_deliveries(T0, limit=10)] == ["second"]
    [claimed] = [d for d in await store.list_deliveries() if d.id == "first"]
    assert claimed.attempts == 1 and claimed.next_attempt_at == lease
    assert await store.claim_delivery("first", 0, lease) is False  # that attempt is taken
    assert await store.claim_delivery("nope", 0, lease) is False


async def test_finishing_deliveries_and_listing_them_by_status(store: SqlStore) -> None:
    await store.insert_notifications([], [delivery("ok"), delivery("bad"), delivery("again")])
    done = T0 + timedelta(seconds=1)
    for d in ("ok", "bad", "again"):
        assert await store.claim_delivery(d, 0, done)
    await store.finish_delivery("ok", last_error=None, delivered_at=done)
    await store.finish_delivery("bad", last_error="HTTP 500", failed_at=done)
    retry = T0 + timedelta(seconds=4)
    await store.finish_delivery("again", last_error="HTTP 503", retry_at=retry)
    by_id = {d.id: d for d in await store.list_deliveries()}
    assert by_id["ok"].status == "delivered" and by_id["ok"].delivered_at == done
    assert by_id["bad"].status == "failed" and by_id["bad"].last_error == "HTTP 500"
    assert by_id["again"].status == "pending" and by_id["again"].next_attempt_at == retry
    assert [d.id for d in await store.list_deliveries()] == ["again", "bad", "ok"]  # newest first
    assert [d.id for d in await store.list_deliveries(status="delivered")] == ["ok"]
    assert [d.id for d in await store.list_deliveries(status="failed")] == ["bad"]
    assert [d.id for d in await store.list_deliveries(status="pending")] == ["again"]
    assert [d.id for d in await store.list_deliveries(limit=1)] == ["again"]
    assert await store.count_pending_deliveries() == 1
    assert await store.due_deliveries(retry - timedelta(seconds=1), 10) == []
    assert [d.id for d in await store.due_deliveries(retry, 10)] == ["again"]
    # A finished delivery cannot be claimed again.
    assert await store.claim_delivery("ok", 1, retry) is False
    with pytest.raises(ValueError):
        await store.finish_delivery("again", last_error=None)
    with pytest.raises(ValueError):
        await store.finish_delivery("again", last_error=None, delivered_at=done, failed_at=done)
    with pytest.raises(ValueError):
        await store.list_deliveries(status="lost")  # type: ignore[arg-type]
