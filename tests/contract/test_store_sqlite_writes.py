"""SQLite's change writes run straight on the driver (``store/sqlite.py``): the row and
event they store are exactly what SQLAlchemy's own insert stores for the same values, so
every query (due sweeps compare timestamps as text) sees one format."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

from contract.test_store import T0, created, updated
from sessionhub.store import open_store


def _rows(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute(sql, args))


async def test_a_driver_written_change_is_stored_like_an_insert(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    store = open_store(f"sqlite+aiosqlite:///{db}")
    await store.start()
    try:
        a = created("ses_a")
        await store.insert(a)  # SQLAlchemy's insert
        change = updated(a.session, at=T0 + timedelta(seconds=1), note="x")
        stored = await store.save(change)  # the driver
        b = created("ses_b", at=T0 + timedelta(seconds=1))
        await store.insert(b)
        assert stored.seq is not None and b.event.seq is None
        assert await store.get("ses_a") == change.session
        assert [e.id for e in await store.events("ses_a")] == [a.event.id, change.event.id]
    finally:
        await store.close()
    cols = "updated_at, last_activity_at, attributes, counters, version, state"
    (a_row,) = _rows(db, f"SELECT {cols} FROM sessions WHERE id = ?", "ses_a")
    (b_row,) = _rows(db, f"SELECT {cols} FROM sessions WHERE id = ?", "ses_b")
    # The same instant, written once by the driver path and once by SQLAlchemy: same text.
    assert a_row[0] == b_row[0] and isinstance(a_row[0], str)
    assert a_row[2:4] == b_row[2:4] and a_row[4] == 2
    events = _rows(db, "SELECT seq, at, published FROM events ORDER BY seq")
    assert [e[0] for e in events] == [1, 2, 3]
    assert events[1][1] == events[2][1] and events[1][2] == 0
