"""What an idle connection keeps on the native engine, and when the node flushes.

A node holds one connection per socket, tens of thousands of them, so an idle one must not
carry what only a busy one needs: no send queue, no reply batch, no fragment list, no
``__dict__`` on its protocol, no copy of the path or the headers it did not send
(``bench/fanout.py`` measures the bytes), no frame parser of its own between frames."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
from tests.faults.rawws import RawSocket, client_frame
from tests.live import LiveServer

from sessionhub.core.subscriptions import Subscriptions
from sessionhub.server.realtime import wsframe
from sessionhub.server.realtime.conn import Conn
from sessionhub.server.realtime.node import FLUSH_PAUSE
from sessionhub.server.realtime.socket import RawWriter

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
            assert sink._parser.is_shared, "an idle connection keeps a parser of its own"
            assert conn.topics == ("user:alice",)
            # The transport itself, not a bound ``write`` of 80 bytes per connection.
            assert conn.writer is sink._transport
            centrifugo: Any = conn  # a CentrifugoConn: its state has the subscriptions
            subs = centrifugo.state.subs
            assert isinstance(subs, Subscriptions) and list(subs) == ["user:alice"]
        # Connections that follow one topic share its one-topic tuple.
        assert conns[0].topics is conns[1].topics
        first, second = (c.handshake for c in conns)
        # Nothing in the upgrade was theirs alone (the token came in the connect command):
        # one frozen handshake for the path and the address.
        assert first.path == "/connection/websocket" and first.peer == "127.0.0.1"
        assert first.headers == {} and first is second
    finally:
        for r in readers:
            await r.close()


async def test_a_flush_right_after_a_long_one_waits_a_share_of_it(
    make_server: Callable[..., LiveServer],
) -> None:
    """Under load the next flush waits ``FLUSH_PAUSE`` of the last pass's duration after it
    ended (capped by ``burst_window``), so that what a long pass set off joins one write per
    subscriber; a flush long after the last goes out on the next loop turn."""
    live = make_server()

    async def schedule(took: float, ended_ago: float) -> float | None:
        node = live.realtime
        node._flush_took = took
        node._last_fanout = time.monotonic() - ended_ago
        node._schedule_flush()
        handle: Any = node._flush_handle
        assert handle is not None
        when = getattr(handle, "when", None)  # call_soon's handle has no time
        delay = None if when is None else when() - asyncio.get_running_loop().time()
        handle.cancel()
        node._flush_handle = None
        return delay

    # A 4 ms pass that just ended: the next waits about 1 ms (uvloop's timers count in ms).
    delay = await live.call(schedule(0.004, 0.0))
    assert delay is not None and 0.0 < delay <= 0.0015, delay
    # A pass of a second: the pause is capped at burst_window (2 ms).
    delay = await live.call(schedule(1.0, 0.0))
    assert delay is not None and 0.001 <= delay <= 0.0025, delay
    # Long after the last flush, or after a short one: at once.
    assert await live.call(schedule(0.004, 1.0)) is None
    assert await live.call(schedule(0.00001, 0.0)) is None
    assert FLUSH_PAUSE == 0.25

    # A lone publication (written at once, after a quiet spell) is a pass of its own: what
    # comes after it is paced by that pass (here one subscriber: no pause), not by an
    # earlier burst's flush.
    reader = await _subscribed(live)
    try:

        async def after_a_burst() -> None:
            live.realtime._flush_took = 0.004

        await live.call(after_a_burst())
        await asyncio.sleep(0.05)  # quiet for longer than burst_window
        await live.publish("user:alice", b'{"lone":true}')
        assert (await reader.push())["push"]["pub"]["data"] == {"lone": True}
        assert 0.0 <= live.realtime._flush_took < 0.004
    finally:
        await reader.close()


class _Recorder:
    """A raw writer that notes what it is given and passes it on."""

    def __init__(self, sink: list[bytes], original: RawWriter) -> None:
        self.sink, self.original = sink, original

    def write(self, data: bytes) -> None:
        self.sink.append(data)
        self.original.write(data)


async def test_a_burst_hands_every_subscriber_the_same_joined_bytes(
    make_server: Callable[..., LiveServer],
) -> None:
    """In a burst the subscribers of a topic queue the same frames in the same order: the
    flush joins them once and writes that one buffer to each (the join per subscriber was a
    fifth of the CPU of a window-mode fan-out to 1,000)."""
    live = make_server()
    readers = [await _subscribed(live) for _ in range(3)]
    written: dict[Conn, list[bytes]] = {}
    try:
        conns: list[Conn] = list(live.realtime._all)

        async def record_writes() -> None:
            for conn in conns:
                original = conn.writer
                assert original is not None
                sink = written.setdefault(conn, [])

                conn.writer = _Recorder(sink, original)

        async def burst() -> None:
            broker = live.runtime.hub.broker
            for n in range(3):  # the first goes out at once; the others are a burst
                await broker.publish(["user:alice"], b'{"n":%d}' % n)

        await live.call(record_writes())
        await asyncio.sleep(0.05)  # quiet: the first publication takes the direct path
        await live.call(burst())
        for r in readers:
            got = [(await r.push())["push"]["pub"]["data"]["n"] for _ in range(3)]
            assert got == [0, 1, 2]
        flushed = [writes[-1] for writes in written.values()]
        assert len(flushed) == 3 and all(data is flushed[0] for data in flushed)
        assert flushed[0].count(b'"n":1') == 1 and flushed[0].count(b'"n":2') == 1
    finally:
        for r in readers:
            await r.close()


async def _text(sock: RawSocket, wait: float = 5.0) -> dict[str, Any]:
    """The next text frame the server sends ``sock``, as JSON."""
    async with asyncio.timeout(wait):
        while True:
            for op, payload in sock._parser.feed(await sock.reader.read(1 << 16)):
                if op == wsframe.OP_TEXT:
                    out: dict[str, Any] = orjson.loads(payload)
                    return out


async def test_connections_share_a_parser_but_never_its_partial_frames(
    make_server: Callable[..., LiveServer],
) -> None:
    """An idle connection feeds the shared parser; one whose frame or fragmented message
    arrives in parts takes a parser of its own until the message is whole, so what another
    connection sends meanwhile, or a bad frame on a third, never mixes into it."""
    live = make_server()
    node = live.realtime
    socks: list[RawSocket] = []
    conns: list[Conn] = []
    try:
        for _ in range(3):
            socks.append(await RawSocket.open(live.port, "/connection/websocket"))
            await until(lambda: len(node._all) == len(socks), what="registered")
            conns.append(list(node._all)[-1])
        a, b, c = socks

        def parser(i: int) -> Any:
            sink: Any = conns[i].sink
            return sink._parser

        def command(cid: int, **cmd: Any) -> bytes:
            return orjson.dumps({"id": cid, **cmd})

        token = live.token("alice")
        # A frame in two parts: a's half waits in a parser of its own while b talks.
        frame = client_frame(wsframe.OP_TEXT, command(1, connect={"token": token}))
        a.send(frame[:9])
        await until(lambda: not parser(0).is_shared, what="a parser of a's own")
        b.send(client_frame(wsframe.OP_TEXT, command(1, connect={"token": token})))
        assert "connect" in await _text(b)
        a.send(frame[9:])
        assert "connect" in await _text(a)
        await until(lambda: parser(0).is_shared, what="a back on the shared parser")
        # A fragmented message: its first part is held while b sends a whole one.
        sub = command(2, subscribe={"channel": "user:alice"})
        a.send(client_frame(wsframe.OP_TEXT, sub[:10], fin=False))
        await until(lambda: not parser(0).is_shared, what="a's fragments held")
        b.send(client_frame(wsframe.OP_TEXT, sub))
        assert (await _text(b))["id"] == 2
        a.send(client_frame(wsframe.OP_CONT, sub[10:]))
        assert (await _text(a))["id"] == 2
        # A bad frame after a fragment start, in one write, on the shared parser: c is
        # closed, and the fragment it began is not what b's next message continues.
        c.send(
            client_frame(wsframe.OP_TEXT, b'{"id":1,', fin=False)
            + client_frame(wsframe.OP_TEXT, b"x", rsv=1)
        )
        assert await c.close_code() == wsframe.CLOSE_PROTOCOL_ERROR
        b.send(client_frame(wsframe.OP_TEXT, command(3, presence_stats={"channel": "user:alice"})))
        assert (await _text(b))["id"] == 3

        async def servers_shared() -> wsframe.FrameParser:
            return wsframe.shared(parser(0).max_size)  # the server thread's own

        assert parser(0) is parser(1) is await live.call(servers_shared())
    finally:
        for sock in socks:
            sock.abort()


async def test_uvicorn_holds_one_entry_for_every_socket_and_still_waits_for_their_goodbyes(
    make_server: Callable[..., LiveServer],
) -> None:
    """The engine's established sockets stand in uvicorn's ``server_state.connections`` as
    one entry (a set entry each cost 64-128 bytes), whose ``shutdown`` is each socket's:
    stopping the server still tells every client to come back (3001) before it closes."""
    live = make_server()
    node = live.realtime
    socks = [await RawSocket.open(live.port, "/connection/websocket") for _ in range(3)]
    try:
        await until(lambda: len(node._all) == 3, what="registered")
        entries = list(live.server.server_state.connections)
        assert len(entries) == 1 and type(entries[0]).__name__ == "_Sockets"
        socks[0].abort()  # one gone: the entry stays for the others
        await until(lambda: len(node._all) == 2, what="the first one lost")
        assert live.server.server_state.connections == set(entries)
        # What uvicorn calls on each entry when it stops (before the app's own shutdown).
        live.loop.call_soon_threadsafe(entries[0].shutdown)
        codes = await asyncio.gather(*(s.close_code() for s in socks[1:]))
        assert codes == [3001, 3001]
        # The entry leaves with the last socket: uvicorn's wait for connections ends.
        await until(lambda: not live.server.server_state.connections, what="the entry gone")
    finally:
        for sock in socks:
            sock.abort()
