"""A real ``sessionhub serve`` takes a burst of changes, is SIGKILLed mid-burst and restarted.

Every change answered 2xx must be in the database afterwards (at least at that version,
with a gapless event log), and every event committed before the kill must be published
after the restart (the outbox is drained: no event is left unpublished).
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.processes import Server

from sessionhub.auth import Authenticator

pytestmark = pytest.mark.slow

SECRET = "crash-test-secret-0123456789abcdef0123"
DEADLINE = 25.0  # the whole test stays under 30 s


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for s in started:
        s.stop()


async def burst(
    server: Server, headers: dict[str, str], stop_after: int
) -> tuple[dict[str, int], int]:
    """Concurrent workers create sessions and change them until the server dies.

    Returns the highest version answered 2xx per session id, and how many requests failed
    because the server was killed under them. The server is SIGKILLed (from inside the
    burst, with requests in flight) once ``stop_after`` changes have been acknowledged.
    """
    acked: dict[str, int] = {}
    failures = 0
    done = 0
    killed = asyncio.Event()

    async def worker(client: httpx.AsyncClient, n: int) -> None:
        nonlocal failures, done
        for i in range(200):  # bounded; the kill ends it much sooner
            if killed.is_set():
                return
            try:
                r = await client.post(
                    "/api/sessions",
                    json={"attributes": {"label": f"w{n}-{i}"}},
                    headers={**headers, "Idempotency-Key": f"w{n}-{i}"},
                )
                assert r.status_code in (200, 201), r.text
                sid, version = r.json()["id"], r.json()["version"]
                acked[sid] = max(acked.get(sid, 0), version)
                for step in ("patch", "patch", "end"):
                    if step == "patch":
                        r = await client.patch(
                            f"/api/sessions/{sid}", json={"metadata": {"step": i}}, headers=headers
                        )
                    else:
                        r = await client.post(f"/api/sessions/{sid}/actions/end", headers=headers)
                    assert r.status_code == 200, r.text
                    acked[sid] = max(acked[sid], r.json()["version"])
                    done += 1
                    if done >= stop_after and not killed.is_set():
                        killed.set()
                        server.kill()  # mid-burst: the other workers have requests in flight
            except httpx.TransportError:
                failures += 1
                return

    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=10) as client:
        await asyncio.wait_for(asyncio.gather(*(worker(client, n) for n in range(12))), DEADLINE)
    assert killed.is_set(), "the burst ended before the kill"
    return acked, failures


async def unpublished(database_url: str | None, db_file: Path) -> int:
    if database_url is None:
        conn = sqlite3.connect(db_file)
        try:
            return int(
                conn.execute("SELECT count(*) FROM events WHERE NOT published").fetchone()[0]
            )
        finally:
            conn.close()
    import asyncpg

    pg = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return int(await pg.fetchval("SELECT count(*) FROM events WHERE NOT published"))
    finally:
        await pg.close()


def metric_total(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None: SQLite in the data directory; else the test PostgreSQL (emptied first)."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


async def test_sigkill_mid_burst_loses_nothing_acknowledged(
    database_url: str | None, tmp_path: Path, servers: list[Server]
) -> None:
    started = time.monotonic()
    backend = "sqlite" if database_url is None else "postgres"
    data = tmp_path / "data"
    headers = {"Authorization": f"Bearer {Authenticator(secret=SECRET).issue('crash', ['admin'])}"}

    first = Server(data, database_url, tmp_path / "first.log")
    servers.append(first)
    await first.wait_ready()
    acked, failures = await burst(first, headers, stop_after=120)
    assert first.proc.returncode == -signal.SIGKILL
    assert len(acked) >= 10
    pending_before = await unpublished(database_url, data / "sessionhub.db")

    second = Server(data, database_url, tmp_path / "second.log")
    servers.append(second)
    await second.wait_ready()
    async with httpx.AsyncClient(base_url=second.url, headers=headers, timeout=10) as c:
        for sid, version in acked.items():
            r = await c.get(f"/api/sessions/{sid}")
            assert r.status_code == 200, f"acknowledged session {sid} lost: {r.text}"
            assert r.json()["version"] >= version, (sid, r.json()["version"], version)
            r = await c.get(f"/api/sessions/{sid}/events")
            versions = [e["version"] for e in r.json()["items"]]
            assert versions == list(range(1, len(versions) + 1)) and versions[-1] >= version
        metrics = (await c.get("/metrics")).text
        # The restarted server made no changes itself: what it published is the outbox.
        assert metric_total(metrics, "sessionhub_events_published_total") == pending_before

    assert await unpublished(database_url, data / "sessionhub.db") == 0
    log = second.log()
    if pending_before:
        assert f"republished {pending_before} events from the outbox" in log
    assert "Traceback" not in log
    assert time.monotonic() - started < 30
    print(
        f"\n{backend}: {len(acked)} sessions acknowledged, {failures} requests cut off, "
        f"{pending_before} events republished after the restart"
    )
