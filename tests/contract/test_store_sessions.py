"""The Store contract, continued: idempotency fingerprints and text search over sessions.
Runs against SQLite and PostgreSQL like ``test_store.py``, whose fixtures it uses."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from contract import test_store as suite
from contract.test_store import (
    KIND,
    ROOT,
    T0,
    SqlStore,
    created,
    new_id,
    queued,
)
from sessionhub.core import engine
from sessionhub.core.engine import Change
from sessionhub.core.errors import IdempotencyConflict, InvalidInput
from sessionhub.core.query import SessionQuery

# The suite's fixtures (parametrised over SQLite and PostgreSQL), used here by name.
open_store = suite.open_store
store = suite.store
store_url = suite.store_url


# -- idempotency fingerprints --------------------------------------------------------------


async def test_a_key_reused_for_another_request_is_a_conflict(store: SqlStore) -> None:
    first, _ = await store.insert(created(), idempotency_key="k", fingerprint="sha:aaa")
    # The same request again: the first session, nothing written.
    again, ev = await store.insert(created(), idempotency_key="k", fingerprint="sha:aaa")
    assert ev is None and again == first
    # Another request under the same key: refused, nothing written.
    with pytest.raises(IdempotencyConflict) as err:
        await store.insert(created(), idempotency_key="k", fingerprint="sha:bbb")
    assert err.value.status == 422
    assert err.value.detail == "this Idempotency-Key was used for another request"
    # A caller that sends no fingerprint is not compared.
    unknown, ev = await store.insert(created(), idempotency_key="k")
    assert ev is None and unknown == first
    # Another owner's keys are their own.
    _, ev = await store.insert(created(owner="bob"), idempotency_key="k", fingerprint="sha:bbb")
    assert ev is not None
    assert await store.count(SessionQuery()) == 2
    assert len(await store.unpublished()) == 2


async def test_a_key_stored_without_a_fingerprint_replays_for_any(store: SqlStore) -> None:
    """Sessions created before fingerprints (or by a caller without one) keep replaying."""
    first, _ = await store.insert(created(), idempotency_key="old")
    again, ev = await store.insert(created(), idempotency_key="old", fingerprint="sha:new")
    assert ev is None and again == first


async def test_a_fingerprint_survives_changes_to_the_session(store: SqlStore) -> None:
    c = created()
    first, _ = await store.insert(c, idempotency_key="k", fingerprint="f1")
    moved = engine.update(KIND, first, actor=ROOT, now=T0, event_id=new_id(), metadata={"a": 1})
    await store.save(moved)
    with pytest.raises(IdempotencyConflict):
        await store.insert(created(), idempotency_key="k", fingerprint="f2")
    replay, _ = await store.insert(created(), idempotency_key="k", fingerprint="f1")
    assert replay == moved.session  # the session as it is now


async def test_one_key_with_two_requests_in_one_group_creates_once_and_refuses_the_other(
    store: SqlStore,
) -> None:

    a, b = created(), created()
    async with queued(store, 2):
        tasks = [
            asyncio.ensure_future(store.insert(a, idempotency_key="same", fingerprint="fa")),
            asyncio.ensure_future(store.insert(b, idempotency_key="same", fingerprint="fb")),
        ]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [isinstance(r, IdempotencyConflict) for r in results].count(True) == 1
    assert await store.count(SessionQuery()) == 1


async def test_a_fingerprint_is_short_text(store: SqlStore) -> None:
    with pytest.raises(InvalidInput):
        await store.insert(created(), idempotency_key="k", fingerprint="x" * 129)
    with pytest.raises(InvalidInput):
        await store.insert(created(), idempotency_key="k", fingerprint="a\x00b")
    assert await store.count(SessionQuery()) == 0


# -- text search ---------------------------------------------------------------------------


def labelled(label: str | None, *, sid: str | None = None, owner: str = "alice") -> Change:
    attrs: dict[str, Any] = {} if label is None else {"label": label}
    return engine.create(
        KIND,
        session_id=sid or new_id("ses_"),
        owner=owner,
        attributes=attrs,
        metadata={"secret": "Needle in metadata"},  # metadata is not searched (sealed)
        actor=ROOT,
        now=T0,
        event_id=new_id(),
    )


async def _found(store: SqlStore, text: str, **filters: Any) -> set[str]:
    q = SessionQuery(text=text, limit=100, **filters)
    page = await store.find(q)
    ids = {s.id for s in page.items}
    assert await store.count(q) == len(ids)  # count and find agree
    return ids


async def test_text_matches_id_owner_or_attributes_case_insensitively(store: SqlStore) -> None:
    changes = {
        "by_label": labelled("Orion Nebula", sid="ses_m42"),
        "by_id": labelled(None, sid="ses_ORION_7"),
        "by_owner": labelled(None, sid="ses_x1", owner="orionfan"),
        "quoted": labelled('say "hi" to C:\\dir', sid="ses_x2", owner="bob"),
        "percent": labelled("100% done", sid="ses_x3", owner="bob"),
        "underscore": labelled("a_b", sid="ses_x4", owner="bob"),
        "plain": labelled("axb 1000 done", sid="ses_x5", owner="bob"),
    }
    for c in changes.values():
        await store.insert(c)
    ids = {name: c.session.id for name, c in changes.items()}
    assert await _found(store, "orion") == {ids["by_label"], ids["by_id"], ids["by_owner"]}
    assert await _found(store, "NEBULA") == {ids["by_label"]}
    assert await _found(store, "orion", owner="alice") == {ids["by_label"], ids["by_id"]}
    # Wildcards are literal: "%" and "_" match only themselves.
    assert await _found(store, "0% d") == {ids["percent"]}
    assert await _found(store, "%") == {ids["percent"]}
    assert await _found(store, "a_b") == {ids["underscore"]}
    # Quotes and backslashes are found as written, though the attributes are JSON text.
    assert await _found(store, '"hi"') == {ids["quoted"]}
    assert await _found(store, "c:\\dir") == {ids["quoted"]}
    # Metadata is not searched; a NUL matches nothing; no match is an empty page.
    assert await _found(store, "needle") == set()
    assert await _found(store, "a\x00b") == set()
    assert await _found(store, "andromeda") == set()
    # Combined with paging: the text filter holds on every page.
    first = await store.find(SessionQuery(text="orion", limit=2))
    assert len(first.items) == 2 and first.next_cursor is not None
    rest = await store.find(SessionQuery(text="orion", limit=2, cursor=first.next_cursor))
    assert {s.id for s in first.items + rest.items} == {
        ids["by_label"],
        ids["by_id"],
        ids["by_owner"],
    }
