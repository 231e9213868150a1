"""The Store contract, continued: a store's life - keys rotated over the rows at rest, what
survives closing and reopening, readiness before start and after close, and pooled
connections the database closed. Runs against SQLite and PostgreSQL like ``test_store.py``,
whose fixtures it uses."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from contract import test_store as suite
from contract.test_store import SqlStore, acted, created, raw_rows
from sessionhub.store import open_store as make_store
from sessionhub.store.postgres import PostgresStore
from sessionhub.store.schema import events as events_table
from sessionhub.store.schema import sessions as sessions_table
from sessionhub.store.sqlite import SqliteStore

# The suite's fixtures (parametrised over SQLite and PostgreSQL), used here by name.
open_store = suite.open_store
store = suite.store
store_url = suite.store_url


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


# -- the database's connections --------------------------------------------------------


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
