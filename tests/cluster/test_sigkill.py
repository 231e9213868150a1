"""SIGKILL of the node that leads everything, with events it committed but could not
publish: its clients' presence lapses everywhere (``lost``) within one lease period,
leadership moves to another node within a few seconds, and another node publishes what the
dead one left unpublished."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest
import redis.asyncio as aioredis
from tests.realtime.helpers import Proxy

from sessionhub.presence.redis import RedisPresence

from .harness import Cluster, bearer, pg_fetchval, token, until
from .sdk import client, subscribe
from .services import RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

PING = 1.0  # SESSIONHUB_PING_INTERVAL: presence leases last 3 pings
LEASE = 3 * PING
LEADER_LEASE = 2.0  # SESSIONHUB_LEADER_LEASE_SECONDS


class PresenceChannel:
    """Listens, on Redis itself, to the presence events every node announces."""

    def __init__(self, url: str) -> None:
        self.redis = aioredis.Redis.from_url(url)
        self.pubsub = self.redis.pubsub()
        self.channel = RedisPresence(url).channel
        self.events: list[tuple[bytes, bytes, float]] = []  # (kind, body, when)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> PresenceChannel:
        await self.pubsub.subscribe(self.channel)
        self._task = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        while True:
            msg = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is not None:
                _node, kind, body = msg["data"].split(b":", 2)
                self.events.append((kind, body, time.monotonic()))

    def lost(self, client_id: str) -> list[float]:
        """When a ``lost`` (a lapsed lease, kind ``x``) of ``client_id`` was announced."""
        return [t for kind, body, t in self.events if kind == b"x" and client_id.encode() in body]

    def left(self, client_id: str) -> list[float]:
        return [t for kind, body, t in self.events if kind == b"l" and client_id.encode() in body]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]
        await self.redis.aclose()


async def test_sigkill_of_the_leader_moves_leadership_lapses_presence_and_loses_no_event(
    make_cluster: Callable[..., Awaitable[Cluster]], redis_server: RedisServer
) -> None:
    # Node A reaches Redis through a proxy the test can cut: A then commits changes (2xx)
    # whose events wait in its outbox - and dies before it can publish them.
    to_redis = await Proxy(redis_server.port).start()
    cluster = await make_cluster(
        redis_server.url,
        staggered=True,  # node A starts alone and takes every lease
        redis_urls={0: f"redis://127.0.0.1:{to_redis.port}/0"},
        SESSIONHUB_PING_INTERVAL=str(PING),
        SESSIONHUB_LEADER_LEASE_SECONDS=str(LEADER_LEASE),
    )
    channel = await PresenceChannel(redis_server.url).start()
    user = "alice-kill"
    watcher = client(cluster.ws(1), token("root", "admin"))  # on node B
    victim = client(cluster.ws(0), token(user))  # on node A
    try:
        assert await cluster.leaders("scheduler") == [0]
        assert await cluster.leaders("consumers") == [0]
        await watcher.connect()
        seen = await subscribe(watcher, f"user:{user}", join_leave=True)
        await victim.connect()
        await subscribe(victim, f"user:{user}")
        await until(
            lambda: any(c == victim.client_id for c, _ in seen.joins), what="the victim's join"
        )

        to_redis.cut()
        acked: dict[str, int] = {}
        async with httpx.AsyncClient(
            base_url=cluster.node_url(0), headers=bearer(user), timeout=10
        ) as a:
            r = await a.post("/api/sessions", json={})
            assert r.status_code == 201, r.text
            sid = r.json()["id"]
            for i in range(2):
                r = await a.patch(f"/api/sessions/{sid}", json={"metadata": {"i": i}})
                assert r.status_code == 200, r.text  # durable; its event waits for Redis
            acked[sid] = r.json()["version"]
        unpublished = await pg_fetchval(
            cluster.database_url, "SELECT count(*) FROM events WHERE NOT published"
        )
        assert unpublished >= 3, "the events should be waiting in node A's outbox"

        cluster.kill(0)
        killed = time.monotonic()

        # 1. Presence: the victim's lease lapses, announced once as lost, and the watcher on
        # node B is told it left - within one lease period (plus one expiry tick).
        await until(
            lambda: any(c == victim.client_id for c, _ in seen.leaves),
            within=LEASE + PING + 3,
            what="the victim's leave on node B",
        )
        [lost_at] = channel.lost(victim.client_id)
        assert channel.left(victim.client_id) == []  # a lapse, not an orderly leave
        assert lost_at - killed <= LEASE + PING + 1.0, lost_at - killed

        # 2. Leadership: another node leads each role within a few seconds of the kill.
        async def moved() -> bool:
            return (
                len(await cluster.leaders("scheduler")) == 1
                and len(await cluster.leaders("consumers")) == 1
            )

        await until(moved, within=LEADER_LEASE * 2 + 2, what="new leaders")
        took_leaders = time.monotonic() - killed
        assert set(await cluster.leaders("scheduler")) <= {1, 2}

        # 3. The outbox: the sweeping node publishes what A committed and never published.
        await until(
            lambda: [d["version"] for d in seen.data if d["session_id"] == sid] == [1, 2, 3],
            within=20,
            what="node A's unpublished events, published by another node",
        )
        await until(
            lambda: pg_fetchval(
                cluster.database_url, "SELECT count(*) = 0 FROM events WHERE NOT published"
            ),
            within=5,
            what="every event marked published",
        )
        took_outbox = time.monotonic() - killed
        assert seen.offsets == list(range(1, len(seen.offsets) + 1))
        print(
            f"after the SIGKILL: lost announced in {lost_at - killed:.2f} s, new leaders in "
            f"{took_leaders:.2f} s, unpublished events out in {took_outbox:.2f} s"
        )
        # Everything acknowledged is stored, and the survivors serve it.
        async with httpx.AsyncClient(base_url=cluster.url, headers=bearer(user)) as http:
            r = await http.get(f"/api/sessions/{sid}")
            assert r.status_code == 200 and r.json()["version"] == acked[sid]
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        await victim.disconnect()
        await watcher.disconnect()
        await channel.close()
        await to_redis.close()
