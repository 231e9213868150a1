"""Memory after a storm: a real server's RSS stays flat over rounds of abuse (issue 13,
finding 10: 107 -> 166 MB after one round, and it stayed there).

One round: 600 malformed REST requests, 100 streams resumed from junk positions, bad frames
on every socket path, 100 request heads of a megabyte (the server used to buffer each
whole: what stayed in RSS), 50 request targets of 20 KB, and 500 sockets that never answer
a ping (closed by the ping policy). What a round may keep is what a server keeps anyway
(allocator arenas, warmed caches): the first round may grow RSS a little, later rounds must
not add to it beyond allocator noise.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import psutil
import pytest
from tests.processes import SECRET, Server

from sessionhub.auth import Authenticator
from sessionhub.server.realtime import wsframe

from .rawws import RawSocket, client_frame, close_frame, upgrade_head

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

ROUNDS = 3
#: RSS the first round may add (MB), and each later one (allocator noise).
FIRST_ROUND_MB = 25.0
LATER_ROUND_MB = 8.0


async def _bounded(n: int, make: Callable[[int], Awaitable[None]], width: int = 25) -> None:
    """Run ``make(i)`` for ``i < n``, ``width`` at a time."""
    for start in range(0, n, width):  # bounded: n / width rounds
        await asyncio.gather(*(make(i) for i in range(start, min(n, start + width))))


async def storm(server: Server, admin: str, alice: str, share: str) -> None:
    user = {"Authorization": f"Bearer {alice}"}
    paths = [
        "/connection/websocket",
        f"/ws?token={admin}",
        f"/stream/{share}?token={alice}&role=viewer",
    ]
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        junk = {**user, "content-type": "application/json"}

        async def rest(i: int) -> None:
            await http.post("/api/sessions", content=b"{not json", headers=junk)
            await http.post("/api/sessions", json={"metadata": {"x": "y" * 70_000}}, headers=user)
            await http.get("/api/sessions", params={"cursor": "0" * 400}, headers=user)
            await http.get(f"/api/sessions/nope{i}", headers=user)
            await http.post("/api/sessions", json={"kind": f"nokind{i}"}, headers=user)
            await http.request("TRACE", "/api/sessions", headers=user)

        await _bounded(100, rest)

        async def resume(i: int) -> None:
            last = ["garbage", "3", "-1:x", "sessions@3"][i % 4]
            params = {"topics": "user:alice"}
            headers = {**user, "Last-Event-ID": last}
            async with http.stream("GET", "/api/stream", params=params, headers=headers) as r:
                async for _ in r.aiter_bytes():
                    break

        await _bounded(100, resume)
    bad = [
        client_frame(wsframe.OP_TEXT, b"\x00junk"),
        client_frame(wsframe.OP_TEXT, b"a" * (70 << 10)),
        close_frame(999),
        client_frame(wsframe.OP_TEXT, b"x", mask=False),
    ]

    async def frames(i: int) -> None:
        sock = await RawSocket.open(server.port, paths[i % len(paths)])
        sock.send(bad[i % len(bad)])
        await sock.frames(0.3)
        sock.abort()

    await _bounded(120, frames)

    async def big_head(_: int) -> None:
        sock = await RawSocket.connect(server.port)
        pad = b"a" * (1 << 20)
        sock.send(b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Pad: " + pad + b"\r\n\r\n")
        await sock.read_head(5)
        sock.abort()

    await _bounded(100, big_head, width=50)

    async def long_target(i: int) -> None:
        sock = await RawSocket.connect(server.port)
        sock.send(upgrade_head(f"{paths[i % len(paths)]}&x={'a' * 20_000}"))
        await sock.read_head(2)
        sock.abort()

    await _bounded(50, long_target)
    idle: list[RawSocket] = []
    for i in range(10):  # 500 sockets, 50 at a time
        batch = await asyncio.gather(
            *(RawSocket.open(server.port, paths[i % len(paths)]) for _ in range(50))
        )
        idle += batch
    for sock in idle:
        sock.pong = False
    codes = await asyncio.gather(*(s.close_code(10) for s in idle))
    for sock in idle:
        sock.abort()
    assert None not in codes, "every silent socket is closed by the ping policy"


async def test_rss_stays_flat_over_rounds_of_abuse(tmp_path: Path) -> None:
    env = {"SESSIONHUB_PING_INTERVAL": "1", "SESSIONHUB_LOG_LEVEL": "warning"}
    server = Server(tmp_path / "data", None, tmp_path / "server.log", env=env)
    try:
        await server.wait_ready()
        process = psutil.Process(server.proc.pid)
        auth = Authenticator(secret=SECRET)
        admin, alice = auth.issue("root", ["admin"]), auth.issue("alice", [])
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            r = await http.post(
                "/api/screen_share/start", json={}, headers={"Authorization": f"Bearer {alice}"}
            )
            share = r.json()["session_id"]
        await asyncio.sleep(1)

        def rss() -> float:
            return float(process.memory_info().rss) / 2**20

        sizes = [rss()]
        fds = [process.num_fds()]
        for _ in range(ROUNDS):
            started = time.monotonic()
            await storm(server, admin, alice, share)
            await asyncio.sleep(1.5)  # what a round let go of is let go of by now
            sizes.append(rss())
            fds.append(process.num_fds())
            took = time.monotonic() - started
    finally:
        server.stop()
    line = " -> ".join(f"{s:.1f}" for s in sizes)
    print(f"\nRSS MB before and after each round: {line}; fds {fds}; a round takes {took:.0f} s")
    assert sizes[1] - sizes[0] < FIRST_ROUND_MB, sizes
    for before, after in itertools.pairwise(sizes[1:]):
        assert after - before < LATER_ROUND_MB, sizes
    assert fds[-1] <= fds[1] + 5, f"file descriptors kept: {fds}"  # a leak would be hundreds
