"""Delivery across nodes: a change made through the load balancer (any node) reaches every
subscriber on every node, over the official SDKs and SSE, in the same order everywhere; a
client that reconnects to another node recovers exactly what it missed."""

from __future__ import annotations

import asyncio
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from centrifuge import ClientState
from tests.realtime.helpers import Proxy, node_or_skip

from .harness import NAMES, Cluster, bearer, token, until
from .sdk import client, subscribe
from .sse import SseReader

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parents[2]
JS_SCRIPT = Path(__file__).with_name("centrifuge_cluster.mjs")


async def _published_by_node(cluster: Cluster) -> list[float]:
    """How many events each node has published (committed there) so far."""
    out = []
    for i in range(len(NAMES)):
        m = await cluster.metrics(i)
        out.append(sum(v for k, v in m.items() if k.startswith("sessionhub_events_published")))
    return out


async def _changes(cluster: Cluster, user: str, sessions: int, patches: int) -> list[str]:
    """``sessions`` sessions changed at once through the load balancer, each one's changes
    one after another (create, ``patches`` patches, end): consecutive requests of one
    session land on different nodes (round robin)."""
    headers = bearer(user)
    # One connection per request: nginx picks the next node for each.
    async with httpx.AsyncClient(base_url=cluster.url, headers=headers, timeout=10) as http:

        async def one(n: int) -> str:
            r = await http.post("/api/sessions", json={"attributes": {"label": f"s{n}"}})
            assert r.status_code == 201, r.text
            sid: str = r.json()["id"]
            for i in range(patches):
                r = await http.patch(f"/api/sessions/{sid}", json={"metadata": {"i": i}})
                assert r.status_code == 200, r.text
            r = await http.post(f"/api/sessions/{sid}/actions/end")
            assert r.status_code == 200, r.text
            return sid

        return list(await asyncio.gather(*(one(n) for n in range(sessions))))


def _per_session(events: list[dict[str, Any]]) -> dict[str, list[int]]:
    versions: dict[str, list[int]] = defaultdict(list)
    for e in events:
        versions[e["session_id"]].append(e["version"])
    return versions


async def test_the_balancer_spreads_requests_over_every_node_without_stickiness(
    cluster: Cluster,
) -> None:
    # Six requests on one keep-alive connection: nginx still picks a node per request.
    async with httpx.AsyncClient(base_url=cluster.url, timeout=5) as http:
        ids = [(await http.get("/api/health")).json()["node"]["id"] for _ in range(6)]
    assert set(ids) == set(NAMES)
    leads = [
        (await cluster.health(cluster.node_url(i)))["node"]["leads_consumers"] for i in range(3)
    ]
    assert leads.count(True) == 1, leads  # exactly one node runs the consumers


async def test_changes_through_the_balancer_reach_every_node_in_order(cluster: Cluster) -> None:
    user = "alice-delivery"
    alice = token(user)
    # A subscriber on each node, directly, and one through nginx (its WebSocket upgrade).
    clients = [client(cluster.ws(i), alice) for i in range(3)] + [client(cluster.ws(None), alice)]
    for c in clients:
        await c.connect()
    subs = [await subscribe(c, f"user:{user}") for c in clients]
    # SSE on each node, and through nginx (which must not buffer the stream).
    bases = [cluster.node_url(i) for i in range(3)] + [cluster.url]
    streams = [await SseReader(b, f"user:{user}", alice).start() for b in bases]
    before = await _published_by_node(cluster)

    sessions, patches = 4, 3
    sids = await _changes(cluster, user, sessions, patches)
    total = sessions * (patches + 2)
    for s in subs:
        await until(lambda s=s: len(s.pubs) >= total, what=f"{total} publications")
    for st in streams:
        await until(lambda st=st: len(st.pubs()) >= total, what=f"{total} SSE events")
    await asyncio.sleep(0.3)  # a repeat, if there were one, would show up by now

    after = await _published_by_node(cluster)
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
    reference = [(d["session_id"], d["version"]) for d in subs[0].data]
    for s in subs:
        # Offsets without a gap or a repeat, and the same order on every node.
        assert s.offsets == list(range(1, total + 1))
        assert [(d["session_id"], d["version"]) for d in s.data] == reference
    for st in streams:
        assert [p["offset"] for p in st.pubs()] == list(range(1, total + 1))
        assert [(p["data"]["session_id"], p["data"]["version"]) for p in st.pubs()] == reference
    # Per session, versions in order: each session's changes went through several nodes.
    expected = list(range(1, patches + 3))
    assert _per_session(subs[0].data) == dict.fromkeys(sids, expected)
    for st in streams:
        await st.close()
    for c in clients:
        await c.disconnect()


async def test_a_client_reconnecting_to_another_node_recovers_exactly_what_it_missed(
    cluster: Cluster,
) -> None:
    user = "alice-recovery"
    # The client's network path: a proxy first to node A, then (after a cut) to node B.
    proxy = await Proxy(cluster.ports[0]).start()
    c = client(proxy.ws_url, token(user))
    try:
        await c.connect()
        seen = await subscribe(c, f"user:{user}")
        headers = bearer(user)
        async with httpx.AsyncClient(base_url=cluster.url, headers=headers, timeout=10) as http:
            sid = (await http.post("/api/sessions", json={})).json()["id"]
            await until(lambda: len(seen.pubs) == 1, what="the first publication")
            proxy.cut()
            await until(lambda: c.state == ClientState.CONNECTING, what="the client notices")
            proxy.target_port = cluster.ports[1]  # it comes back on another node
            for i in range(4):  # missed meanwhile, made through every node
                r = await http.patch(f"/api/sessions/{sid}", json={"metadata": {"away": i}})
                assert r.status_code == 200, r.text
            proxy.restore()
            await until(lambda: len(seen.subscribed) == 2, what="resubscribed", within=15)
            r = await http.patch(f"/api/sessions/{sid}", json={"metadata": {"away": "back"}})
            assert r.status_code == 200
            await until(lambda: len(seen.pubs) == 6, what="recovered and live publications")
        again = seen.subscribed[1]
        assert again.was_recovering and again.recovered
        assert seen.offsets == [1, 2, 3, 4, 5, 6]
        assert [d["version"] for d in seen.data] == [1, 2, 3, 4, 5, 6]
        assert [d["data"]["session"]["metadata"].get("away") for d in seen.data[1:]] == [
            0,
            1,
            2,
            3,
            "back",
        ]
        # And it is on node B now.
        health = await cluster.health(cluster.node_url(1))
        assert health["node"]["connections"] >= 1
    finally:
        await c.disconnect()
        await proxy.close()


@pytest.mark.node
async def test_the_js_sdk_on_every_node_sees_changes_made_anywhere(cluster: Cluster) -> None:
    node = node_or_skip()
    user = "alice-js"
    urls = [cluster.ws(i) for i in range(3)] + [cluster.ws(None)]
    proc = await asyncio.create_subprocess_exec(
        node,
        str(JS_SCRIPT),
        cwd=ROOT,
        env={
            **os.environ,
            "WS_URLS": ",".join(urls),
            "TOKEN": token(user),
            "TOPIC": f"user:{user}",
            "EXPECT": "8",
        },
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line.strip() == b"ready", line + await proc.stderr.read()
        await _changes(cluster, user, sessions=2, patches=2)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    seen: list[list[list[Any]]] = json.loads(out.decode().strip().splitlines()[-1])
    assert len(seen) == 4
    for pubs in seen:
        assert [p[0] for p in pubs] == list(range(1, 9))  # offsets, no gap, no repeat
        assert pubs == seen[0]  # the same order on every node
    versions: dict[str, list[int]] = defaultdict(list)
    for _, sid, version in seen[0]:
        versions[sid].append(version)
    assert sorted(versions.values()) == [[1, 2, 3, 4], [1, 2, 3, 4]]
