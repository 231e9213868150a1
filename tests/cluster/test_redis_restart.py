"""Redis restarts (without persistence, as deploy/ runs it) under a live cluster: requests
that need it answer 503 with Retry-After (never a 500), writes stay durable and are
published once it is back, subscribers are told ``recovered: false`` (every topic has a new
epoch), and everything is live again by itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.processes import Server

from .harness import Cluster, bearer, create_database, drop_database, pg_fetchval, token, until
from .sdk import client, subscribe
from .services import RedisServer
from .sse import SseReader

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

OUTAGE = 3.0  # seconds Redis stays down


async def test_a_redis_restart_answers_503_keeps_writes_and_flags_the_new_epoch(
    make_cluster: Callable[..., Awaitable[Cluster]], redis_server: RedisServer
) -> None:
    cluster = await make_cluster(redis_server.url)
    user = "alice-redis"
    topic = f"user:{user}"
    clients = [client(cluster.ws(i), token(user)) for i in range(3)]
    stream: SseReader | None = None
    try:
        for c in clients:
            await c.connect()
        subs = [await subscribe(c, topic) for c in clients]
        stream = await SseReader(cluster.node_url(2), topic, token(user)).start()
        async with httpx.AsyncClient(
            base_url=cluster.url, headers=bearer(user), timeout=10
        ) as http:
            sid = (await http.post("/api/sessions", json={})).json()["id"]
            for s in subs:
                await until(lambda s=s: len(s.pubs) == 1, what="the first publication")

            redis_server.stop()
            acked = 1
            statuses: dict[str, list[int]] = {"patch": [], "get": [], "stream": [], "list": []}
            retry_after: set[str | None] = set()
            end = time.monotonic() + OUTAGE
            while time.monotonic() < end:
                r = await http.patch(f"/api/sessions/{sid}", json={"metadata": {"n": acked}})
                statuses["patch"].append(r.status_code)
                if r.status_code == 200:
                    acked = r.json()["version"]
                # These read a stream position from Redis: 503, with a hint when to retry.
                for what, req in (
                    ("get", http.get(f"/api/sessions/{sid}")),
                    ("list", http.get("/api/sessions")),
                    ("stream", http.get("/api/stream", params={"topics": topic})),
                ):
                    r = await req
                    statuses[what].append(r.status_code)
                    if r.status_code == 503:
                        retry_after.add(r.headers.get("retry-after"))
                        assert r.headers["content-type"] == "application/problem+json"
                await asyncio.sleep(0.2)
            # Writes never fail for want of Redis: they are durable, their events wait.
            assert set(statuses["patch"]) == {200}, statuses
            for what in ("get", "list", "stream"):
                assert set(statuses[what]) == {503}, statuses
            assert retry_after and all(v and v.isdigit() for v in retry_after), retry_after
            assert acked >= 5

            redis_server.start()  # empty: every topic gets a new epoch
            back = time.monotonic()

            # Each subscriber is told it could not recover (not a silent gap)...
            for s in subs:
                await until(
                    lambda s=s: len(s.subscribed) >= 2, within=20, what="resubscribe after Redis"
                )
                again = s.subscribed[1]  # the first resubscribe after the outage
                assert again.was_recovering and not again.recovered
            # ...and so is the SSE stream, which resumes with its Last-Event-ID.
            await until(lambda: stream is not None and stream.ended, what="the SSE stream ends")
            assert "disconnect" in stream.kinds()
            last = stream.last_id
            await stream.close()
            stream = await SseReader(cluster.node_url(2), topic, token(user), last).start()
            assert stream.kinds()[:2] == ["unrecovered", "subscribed"]
            told = time.monotonic() - back

            # Live again, by itself: a change made now reaches every node's subscriber. (It
            # may not be the last thing they get: the nodes publish what waited in their
            # outboxes as Redis comes back, some maybe after this newer change.)
            r = await http.patch(f"/api/sessions/{sid}", json={"metadata": {"n": "after"}})
            assert r.status_code == 200

            def after(pubs: list[dict[str, Any]]) -> bool:
                return any(d["data"]["session"]["metadata"].get("n") == "after" for d in pubs)

            for s in subs:
                await until(lambda s=s: after(s.data), what="a live publication after the restart")
            await until(lambda: after([p["data"] for p in stream.pubs()]), what="a live SSE event")

            # Every acknowledged write is stored, in order, and published.
            r = await http.get(f"/api/sessions/{sid}")
            assert r.status_code == 200 and r.json()["version"] == acked + 1
            events = (await http.get(f"/api/sessions/{sid}/events")).json()["items"]
            assert [e["version"] for e in events] == list(range(1, acked + 2))
        await until(
            lambda: pg_fetchval(
                cluster.database_url, "SELECT count(*) = 0 FROM events WHERE NOT published"
            ),
            what="every event published",
        )
        print(f"after Redis came back: clients told recovered=false within {told:.2f} s")
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        if stream is not None:
            await stream.close()
        for c in clients:
            await c.disconnect()


async def test_a_node_started_while_redis_is_down_serves_once_it_is_back(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The broker's contract: "Redis need not be up yet: the node connects when it is".
    A node (re)started during a Redis outage must come up (writes are durable without
    Redis) and go live by itself, as the nodes that were already running do."""
    from tests.conftest import POSTGRES_URL, service_unavailable

    try:
        database = await create_database(POSTGRES_URL, f"sessionhub_redisdown_{os.getpid()}")
    except Exception as exc:
        service_unavailable("PostgreSQL", f"{type(exc).__name__}: {exc}")
    redis_server.stop()
    node = Server(
        tmp_path / "node",
        database,
        tmp_path / "node.log",
        env={"SESSIONHUB_BROKER_URL": redis_server.url, "SESSIONHUB_NODE_ID": "late"},
    )
    c = None
    try:
        await node.wait_ready(20)
        async with httpx.AsyncClient(base_url=node.url, headers=bearer("late")) as http:
            r = await http.post("/api/sessions", json={})
            assert r.status_code == 201, r.text  # durable; its event waits for Redis
            redis_server.start()
            c = client(node.url.replace("http", "ws") + "/connection/websocket", token("late"))
            await c.connect()
            seen = await _subscribe_when_up(c, "user:late")
            r = await http.post("/api/sessions", json={})
            assert r.status_code == 201
            await until(lambda: len(seen.pubs) >= 1, what="a live publication")
    finally:
        if c is not None:
            await c.disconnect()
        node.stop()
        await drop_database(database)


async def _subscribe_when_up(c: Any, topic: str) -> Any:
    """Subscribe, retrying while the node has not reached Redis yet (bounded)."""
    for _ in range(50):
        with contextlib.suppress(AssertionError):
            return await subscribe(c, topic)
        await asyncio.sleep(0.2)
    raise AssertionError(f"could not subscribe to {topic}")
