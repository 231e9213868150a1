"""PostgreSQL restarts (a crash: ``pg_ctl stop -m immediate``) under a cluster taking writes
through nginx: requests answer 503 with Retry-After while it is down (never a 500 or a
502), every node recovers by itself, and no acknowledged write is lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from .harness import Cluster, bearer, create_database, pg_fetchval, token, until
from .sdk import client, subscribe
from .services import PostgresServer, RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.postgres]

OUTAGE = 3.0


@dataclass
class Load:
    """What the writers were told."""

    statuses: list[int] = field(default_factory=list)
    retry_after: set[str | None] = field(default_factory=set)
    #: session id -> the highest version answered 2xx.
    acked: dict[str, int] = field(default_factory=dict)
    #: Idempotency-Key -> the session a create answered (first time or on a retry).
    created: dict[str, str] = field(default_factory=dict)

    def note(self, r: httpx.Response) -> bool:
        self.statuses.append(r.status_code)
        if r.status_code == 503:
            self.retry_after.add(r.headers.get("retry-after"))
        return r.status_code < 300


async def _writers(
    http: httpx.AsyncClient, load: Load, sids: list[str], stop: asyncio.Event
) -> None:
    async def patcher(sid: str) -> None:
        for i in range(10_000):  # bounded; ``stop`` ends it
            if stop.is_set():
                return
            r = await http.patch(f"/api/sessions/{sid}", json={"metadata": {"i": i}})
            if load.note(r):
                load.acked[sid] = max(load.acked.get(sid, 0), r.json()["version"])
            else:
                await asyncio.sleep(0.1)

    async def creator() -> None:
        for i in range(10_000):
            key = f"key-{i}"
            # A client that honours 503: retries the same request, same key, until it lands
            # (a create committed just before the crash is then answered, not made twice).
            for _ in range(200):
                if stop.is_set():
                    return
                r = await http.post("/api/sessions", json={}, headers={"Idempotency-Key": key})
                if load.note(r):
                    load.created[key] = r.json()["id"]
                    load.acked[r.json()["id"]] = max(
                        load.acked.get(r.json()["id"], 0), r.json()["version"]
                    )
                    break
                await asyncio.sleep(0.1)

    await asyncio.gather(creator(), *(patcher(s) for s in sids))


async def test_a_postgres_restart_answers_503_then_recovers_without_losing_a_write(
    make_cluster: Callable[..., Awaitable[Cluster]],
    redis_server: RedisServer,
    postgres_server: PostgresServer,
) -> None:
    database = await create_database(postgres_server.url(), "sessionhub")
    cluster = await make_cluster(redis_server.url, database)
    user = "alice-pg"
    watcher = client(cluster.ws(1), token(user))
    load = Load()
    stop = asyncio.Event()
    try:
        await watcher.connect()
        seen = await subscribe(watcher, f"user:{user}")
        limits = httpx.Limits(max_connections=8)
        async with httpx.AsyncClient(
            base_url=cluster.url, headers=bearer(user), timeout=15, limits=limits
        ) as http:
            sids = [(await http.post("/api/sessions", json={})).json()["id"] for _ in range(3)]
            writers = asyncio.get_running_loop().create_task(_writers(http, load, sids, stop))
            await asyncio.sleep(1.0)
            before = len(load.acked), sum(load.acked.values())

            await asyncio.to_thread(postgres_server.stop, "immediate")
            await asyncio.sleep(OUTAGE)
            await asyncio.to_thread(postgres_server.start)
            back = time.monotonic()

            # Every node is ready again by itself, and writes succeed again.
            async def all_ready() -> bool:
                for i in range(3):
                    async with httpx.AsyncClient(base_url=cluster.node_url(i)) as c:
                        if (await c.get("/api/ready", timeout=2)).status_code != 200:
                            return False
                return True

            await until(all_ready, within=20, what="every node ready after the restart")
            ready_in = time.monotonic() - back
            mark = len(load.statuses)
            await until(
                lambda: sum(1 for s in load.statuses[mark:] if s < 300) >= 10,
                within=15,
                what="writes succeeding again",
            )
            stop.set()
            await asyncio.wait_for(writers, 20)

            assert sum(load.acked.values()) > before[1]
            codes = set(load.statuses)
            assert 503 in codes, "the outage should have been seen"
            assert codes <= {200, 201, 503}, sorted(codes)  # never a 500, never a 502
            assert load.retry_after and all(v and v.isdigit() for v in load.retry_after)
            # No acknowledged write lost: every session at least at its acknowledged version.
            for sid, version in load.acked.items():
                r = await http.get(f"/api/sessions/{sid}")
                assert r.status_code == 200, r.text
                assert r.json()["version"] >= version, (sid, r.json()["version"], version)
            # One create per key, however often it was retried.
            count = await pg_fetchval(
                database, f"SELECT count(*) FROM sessions WHERE owner = '{user}'"
            )
            assert count == len(sids) + len(load.created)

            # Leadership is back (leases live in the database), and delivery is live.
            await until(lambda: _one_leader_each(cluster), within=10, what="one leader per role")
            r = await http.patch(f"/api/sessions/{sids[0]}", json={"metadata": {"i": "last"}})
            assert r.status_code == 200
            last = r.json()["version"]
            await until(
                lambda: any(d["session_id"] == sids[0] and d["version"] == last for d in seen.data),
                what="a live publication after the restart",
            )
        await until(
            lambda: pg_fetchval(database, "SELECT count(*) = 0 FROM events WHERE NOT published"),
            what="every event published",
        )
        print(
            f"PostgreSQL restart: {load.statuses.count(503)} answers 503, nodes ready "
            f"{ready_in:.2f} s after it was back, {len(load.acked)} sessions checked"
        )
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        stop.set()
        await watcher.disconnect()


async def _one_leader_each(cluster: Cluster) -> bool:
    return all([len(await cluster.leaders(role)) == 1 for role in ("scheduler", "consumers")])
