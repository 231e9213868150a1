"""Migrations on both backends: a fresh database reaches the head, and a database at
0002 with rows is upgraded without losing any, with consumers starting at the end of
its log and seqs that are never handed out twice afterwards."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import inspect, text

from contract import test_store as suite
from contract.test_store import (
    T0,
    SqlStore,
    _tombstone,
    acted,
    created,
)
from sessionhub.store.schema import events as events_table
from sessionhub.store.schema import notifications as notifications_table
from sessionhub.store.schema import sessions as sessions_table

# The suite's fixtures (parametrised over SQLite and PostgreSQL), used here by name.
open_store = suite.open_store
store = suite.store
store_url = suite.store_url


def _tables_and_columns(sync_conn: Any) -> dict[str, set[str]]:
    insp = inspect(sync_conn)
    return {t: {c["name"] for c in insp.get_columns(t)} for t in insp.get_table_names()}


async def _schema(store: SqlStore) -> dict[str, set[str]]:
    async with store.engine.connect() as conn:
        return await conn.run_sync(_tables_and_columns)


async def _revision(store: SqlStore) -> str:
    async with store.engine.connect() as conn:
        return str((await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar())


async def test_a_fresh_database_gets_every_table_of_the_head(store: SqlStore) -> None:
    assert await _revision(store) == "0003"
    schema = await _schema(store)
    assert {"consumer_positions", "leases", "raw_events"} <= set(schema)
    assert schema["consumer_positions"] == {"name", "position", "updated_at"}
    assert schema["leases"] == {"name", "holder", "token", "expires_at"}
    assert schema["raw_events"] == {"seq", "source", "received_at", "payload"}
    assert "idempotency_fingerprint" in schema["sessions"]
    # The consumers that exist start at the (empty) log's end.
    assert await store.consumer_position("notifications") == 0
    assert await store.consumer_position("workspaces") == 0


async def test_upgrading_from_0002_keeps_rows_and_starts_consumers_at_the_end(
    open_store: Callable[..., SqlStore],
) -> None:

    old = open_store()
    await old.migrate("0002")
    assert await _revision(old) == "0002"
    assert "idempotency_fingerprint" not in (await _schema(old))["sessions"]
    a, b = created(), created()
    moved = acted(a.session, at=T0 + timedelta(seconds=1))
    async with old.engine.begin() as conn:
        for session in (a.session, b.session):
            await conn.execute(sessions_table.insert(), old._session_values(session))
        seqs = []
        for event in (a.event, b.event, moved.event):  # a's second event tops the log
            result = await conn.execute(events_table.insert(), old._event_values(event))
            seqs.append(result.inserted_primary_key[0])
        assert seqs == [1, 2, 3]
        changed = {k: v for k, v in old._session_values(moved.session).items() if k != "id"}
        await conn.execute(
            sessions_table.update().where(sessions_table.c.id == a.session.id), changed
        )
        await conn.execute(
            notifications_table.insert(),
            {
                "id": "n1",
                "user_id": "alice",
                "event": "ping",
                "session_id": a.session.id,
                "data": "{}",
                "created_at": T0,
            },
        )
    await old.close()

    new = open_store()
    await new.start()
    try:
        assert await _revision(new) == "0003"
        # Every row is still there, as it was.
        assert await new.get(a.session.id) == moved.session
        assert await new.get(b.session.id) == b.session
        assert [(e.id, e.seq) for e in await new.events_after(0)] == [
            (a.event.id, 1),
            (b.event.id, 2),
            (moved.event.id, 3),
        ]
        assert [n.id for n in (await new.list_notifications(["alice"], limit=5)).items] == ["n1"]
        # Existing consumers do not replay the history they had already seen.
        assert await new.last_seq() == 3
        assert await new.consumer_position("notifications") == 3
        assert await new.consumer_position("workspaces") == 3
        # Deleting the session at the top of the log does not let seq 3 come back.
        tomb = await new.delete(moved.session, _tombstone(moved.session))
        assert tomb.seq is not None and tomb.seq > 3
        assert [e.id for e in await new.events_after(3)] == [tomb.id]
        # The new column works on the upgraded table.
        _, ev = await new.insert(created(), idempotency_key="k", fingerprint="f")
        assert ev is not None and ev.seq is not None and ev.seq > tomb.seq
    finally:
        await new.close()
