"""Shared fixtures: an injected clock, an in-process app over httpx, tokens, service URLs."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from tests.inprocess import serve_in_process
from tests.processes import Server

from sessionhub.server.runtime import Runtime, build_runtime
from sessionhub.settings import Settings

SECRET = "test-secret-0123456789abcdef0123456789"
REQUIRE_SERVICES = os.environ.get("SESSIONHUB_REQUIRE_SERVICES") == "1"
POSTGRES_URL = os.environ.get(
    "SESSIONHUB_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("SESSIONHUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


class FakeClock:
    """A clock tests move by hand: ``clock()`` is now, ``clock.advance(seconds)`` moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def service_unavailable(what: str, reason: str) -> None:
    """Skip (fresh machine) or fail (CI) when a required service is missing."""
    msg = f"{what} not reachable ({reason})"
    if REQUIRE_SERVICES:
        pytest.fail(msg + " and SESSIONHUB_REQUIRE_SERVICES=1")
    pytest.skip(msg + "; set SESSIONHUB_TEST_POSTGRES_URL / start the service to run this test")


async def reset_postgres(url: str) -> None:
    """Drop sessionhub's tables so each test starts from an empty schema."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            for table in (
                "events",
                "sessions",
                "notifications",
                "chat_messages",
                "webhook_deliveries",
                "consumer_positions",
                "leases",
                "raw_events",
                "alembic_version",
            ):
                await conn.execute(text(f"DROP TABLE IF EXISTS {table} CASCADE"))
    finally:
        await engine.dispose()


_CREATED_DATABASES: set[tuple[str, str]] = set()
_OWN_URL: dict[str, str] = {}


async def _own_database(url: str) -> str:
    """A database of this test process's own (created once), so concurrent runs never collide."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    base = make_url(url)
    name = f"{base.database or 'test'}_sessionhub_{os.getpid()}"
    engine = create_async_engine(base, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            exists = await conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            )
            if not exists:
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()
    _CREATED_DATABASES.add((base.render_as_string(hide_password=False), name))
    return base.set(database=name).render_as_string(hide_password=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Drop the per-process databases again."""
    if not _CREATED_DATABASES:
        return

    async def drop() -> None:
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        for base, name in _CREATED_DATABASES:
            engine = create_async_engine(base, isolation_level="AUTOCOMMIT")
            try:
                async with engine.connect() as conn:
                    await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            finally:
                await engine.dispose()

    try:
        asyncio.run(drop())
    except Exception as exc:  # leaving a test database behind must not fail the run
        print(f"note: could not drop test databases: {exc}")


@pytest.fixture
async def postgres_url() -> str:
    """A clean PostgreSQL database URL (this process's own database, tables dropped)."""
    try:
        if POSTGRES_URL not in _OWN_URL:
            _OWN_URL[POSTGRES_URL] = await asyncio.wait_for(_own_database(POSTGRES_URL), 10)
        url = _OWN_URL[POSTGRES_URL]
        await asyncio.wait_for(reset_postgres(url), 10)
    except Exception as exc:
        service_unavailable("PostgreSQL", f"{type(exc).__name__}: {exc}")
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", jwt_secret=SECRET, sweep_interval=3600.0)


@pytest.fixture
def make_runtime(clock: FakeClock) -> Callable[[Settings], Runtime]:
    def make(s: Settings) -> Runtime:
        return build_runtime(s, clock=clock)

    return make


@pytest.fixture
async def runtime(settings: Settings, make_runtime: Callable[[Settings], Runtime]) -> Runtime:
    return make_runtime(settings)


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the app in-process, with the app's lifespan running."""
    async with serve_in_process(runtime) as c:
        yield c


@pytest.fixture
def token(runtime: Runtime) -> Callable[..., str]:
    """``token("alice")`` or ``token("root", "admin")``: a signed bearer token."""

    def make(sub: str, *roles: str) -> str:
        return runtime.auth.issue(sub, roles)

    return make


@pytest.fixture
def auth(token: Callable[..., str]) -> Callable[..., dict[str, str]]:
    """``auth("alice")`` -> headers with that user's bearer token."""

    def make(sub: str, *roles: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token(sub, *roles)}"}

    return make


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Real ``sessionhub serve`` processes a test starts (append them): stopped afterwards."""
    started: list[Server] = []
    yield started
    for s in started:
        s.stop()
