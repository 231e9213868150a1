"""What an idle connection keeps on the native engine. A node holds one connection per socket,
tens of thousands of them, so an idle one must not carry what only a busy one needs: no
send queue, no reply batch, no fragment list, no ``__dict__`` on its protocol, no copy of
the path or the headers it did not send (``bench/fanout.py`` measures the bytes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.live import LiveServer

from sessionhub.server.realtime.conn import Conn

from .helpers import Raw, until


async def _subscribed(live: LiveServer) -> Raw:
    raw = await Raw.open(live.ws_url)
    assert "connect" in await raw.call("connect", {"token": live.token("alice")})
    assert "subscribe" in await raw.call("subscribe", {"channel": "user:alice"})
    return raw


async def test_an_idle_connection_keeps_no_per_message_state(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server()
    readers = [await _subscribed(live) for _ in range(2)]
    try:
        # Traffic first (replies batched, a burst queued and flushed), so what is checked is
        # the state a connection goes back to, not the one it starts in.
        for n in range(3):
            await live.publish("user:alice", b'{"n":%d}' % n)
        for r in readers:
            assert [(await r.push())["push"]["pub"]["offset"] for _ in range(3)] == [1, 2, 3]
            assert "presence_stats" in await r.call("presence_stats", {"channel": "user:alice"})
        conns: list[Conn] = list(live.realtime._all)
        await until(lambda: all(not c.queue for c in conns), what="queues flushed")
        assert len(conns) == 2
        for conn in conns:
            assert conn.queue == () and conn._batches is None
            sink: Any = conn.sink
            assert not hasattr(sink, "__dict__"), "the protocol class lost its slots"
            assert sink._parser._fragments is None
            assert conn.topics == ["user:alice"]
        first, second = (c.handshake for c in conns)
        # One string for the path and for the address, one shared empty mapping for the
        # headers that were not sent (the token came in the connect command).
        assert first.path == "/connection/websocket" and first.path is second.path
        assert first.peer == "127.0.0.1" and first.peer is second.peer
        assert first.headers == {} and first.headers is second.headers
    finally:
        for r in readers:
            await r.close()
