"""How the consumer runner treats a hole in the event log's seqs: on a store whose events
become visible in seq order (SQLite) a hole is a deleted session's events and is passed at
once; where a lower seq may still commit (PostgreSQL) it is waited for, up to the grace."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest

from sessionhub.consumers.base import Consumers, _Cursor
from sessionhub.core.model import Event
from sessionhub.store.postgres import PostgresStore
from sessionhub.store.sqlite import SqliteStore


def event(seq: int) -> Event:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return Event(f"e{seq}", "updated", "s", "generic", "alice", "alice", at, seq, {}, seq=seq)


def runner(store: Any) -> Consumers:
    consumer = SimpleNamespace(name="c", kinds=None)
    return Consumers(cast(Any, SimpleNamespace(store=store)), [cast(Any, consumer)])


@pytest.mark.parametrize(
    ("store", "handed"),
    [
        pytest.param(SqliteStore, [1, 2, 5, 6], id="sqlite: passed at once"),
        pytest.param(PostgresStore, [1, 2], id="postgresql: waited for"),
    ],
)
def test_a_hole_in_the_log(store: Any, handed: list[int]) -> None:
    consumers = runner(store)
    cursor = _Cursor(cast(Any, None))
    got = consumers._contiguous(cursor, [event(s) for s in (1, 2, 5, 6)])
    assert [e.seq for e in got] == handed


def test_a_hole_that_stays_open_past_the_grace_is_passed_on_postgresql() -> None:
    consumers = runner(PostgresStore)
    consumers.gap_grace = 0.0
    cursor = _Cursor(cast(Any, None))
    assert [e.seq for e in consumers._contiguous(cursor, [event(1), event(3)])] == [1, 3]
