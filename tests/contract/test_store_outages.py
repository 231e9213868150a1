"""The Store contract, continued: a database that cannot be reached is ``Unavailable`` (a
503 for the transports, with no SQLAlchemy or driver type leaking out), and a write cut
off that way is never reported done."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from contract.test_store import acted, created
from sessionhub.core.errors import DuplicateId, Unavailable, VersionConflict
from sessionhub.store import open_store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def unreachable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}"  # a directory: SQLite cannot open it
    return "postgresql+asyncpg://postgres@127.0.0.1:1/nothing"  # nobody listens on port 1


async def test_a_database_that_cannot_be_reached_is_unavailable(unreachable_url: str) -> None:
    store = open_store(unreachable_url)
    try:
        with pytest.raises(Unavailable) as err:
            await store.start()
        assert err.value.status == 503
        assert "not answering" in err.value.detail and "retry" in err.value.detail
        assert "127.0.0.1" not in err.value.detail  # no addresses for the client
    finally:
        await store.close()
    with pytest.raises(Unavailable):
        await store.ping()


async def test_a_refused_connection_names_its_cause() -> None:
    store = open_store("postgresql+asyncpg://postgres@127.0.0.1:1/nothing")
    with pytest.raises(Unavailable, match="ConnectionRefusedError"):
        await store.migrate()
    await store.close()


async def _backend_waiting_on_a_lock(admin: Any) -> int:
    """The pid of the store's connection once it waits for the lock ``admin`` holds."""
    for _ in range(200):
        pid = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.01)
    raise AssertionError("the store's statement never waited on the lock")


@pytest.mark.postgres
async def test_a_connection_killed_mid_write_fails_that_write_as_unavailable(
    postgres_url: str,
) -> None:
    """The server ends the connection while a save waits for a row lock: the caller hears
    ``Unavailable`` (not success), the row is unchanged, and the next writes work."""
    import asyncpg

    store = open_store(postgres_url)
    await store.start()
    dsn = postgres_url.replace("postgresql+asyncpg://", "postgresql://")
    admin = await asyncpg.connect(dsn)
    try:
        c = created()
        await store.insert(c)
        change = acted(c.session)
        blocker = admin.transaction()
        await blocker.start()
        await admin.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", c.session.id)
        save = asyncio.ensure_future(store.save(change))
        pid = await _backend_waiting_on_a_lock(admin)
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(Unavailable):
            await save
        await blocker.rollback()
        assert await store.get(c.session.id) == c.session  # nothing was written
        # The pool replaced the dead connection: the retry commits, errors stay themselves.
        assert (await store.save(change)).version == 2
        with pytest.raises(VersionConflict):
            await store.save(change)
        with pytest.raises(DuplicateId):
            await store.insert(created(c.session.id))
    finally:
        await admin.close()
        await store.close()


@pytest.mark.postgres
async def test_a_connection_killed_mid_read_is_unavailable(postgres_url: str) -> None:
    import asyncpg

    store = open_store(postgres_url)
    await store.start()
    dsn = postgres_url.replace("postgresql+asyncpg://", "postgresql://")
    admin = await asyncpg.connect(dsn)
    try:
        c = created()
        await store.insert(c)
        blocker = admin.transaction()
        await blocker.start()
        await admin.execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        read = asyncio.ensure_future(store.get(c.session.id))
        pid = await _backend_waiting_on_a_lock(admin)
        await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(Unavailable):
            await read
        await blocker.rollback()
        assert await store.get(c.session.id) == c.session
    finally:
        await admin.close()
        await store.close()
