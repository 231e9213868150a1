"""Behind a load balancer every connection reaches a node from the balancer's address; the
client's own address comes in ``X-Forwarded-For``. The per-address limit on open sockets
and streams (``SESSIONHUB_REALTIME_MAX_PER_ADDRESS``) must count clients, not the balancer -
else one node behind nginx refuses everyone once that many sockets are open in total.

uvicorn already takes HTTP clients' addresses from ``X-Forwarded-For`` when the peer is a
trusted proxy (``FORWARDED_ALLOW_IPS``, 127.0.0.1 by default), so SSE streams are counted
per client; WebSockets on the native engine are counted by the socket's peer address.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.processes import Server
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from .harness import token

pytestmark = pytest.mark.slow

LIMIT = 2


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Server]:
    server = Server(
        tmp_path / "data",
        None,
        tmp_path / "node.log",
        env={"SESSIONHUB_REALTIME_MAX_PER_ADDRESS": str(LIMIT)},
    )
    await server.wait_ready()
    yield server
    server.stop()


def _from(client: int) -> dict[str, str]:
    """What nginx sends for a client at 10.0.0.<client> (deploy/nginx/proxy.conf)."""
    return {"X-Forwarded-For": f"10.0.0.{client}", "X-Real-IP": f"10.0.0.{client}"}


async def test_sse_streams_are_counted_per_forwarded_client(node: Server) -> None:
    alice = token("alice")
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as http:
        streams = [
            http.stream(
                "GET",
                "/api/stream",
                params={"topics": "user:alice", "token": alice},
                headers=_from(i),
            )
            for i in range(LIMIT + 1)
        ]
        opened = [await s.__aenter__() for s in streams]
        try:
            assert [r.status_code for r in opened] == [200] * (LIMIT + 1)
        finally:
            for s in streams:
                await s.__aexit__(None, None, None)


async def test_websockets_are_counted_per_forwarded_client(node: Server) -> None:
    url = node.url.replace("http", "ws") + "/connection/websocket"
    sockets = []
    try:
        for i in range(LIMIT + 1):
            try:
                sockets.append(await connect(url, additional_headers=_from(i), open_timeout=5))
            except InvalidStatus as exc:
                pytest.fail(
                    f"client {i} (its own address) refused with {exc.response.status_code}: "
                    "the limit counted the proxy's address, not the clients'"
                )
    finally:
        await asyncio.gather(*(s.close() for s in sockets))
