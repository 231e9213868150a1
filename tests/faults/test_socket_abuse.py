"""Abusive clients on every socket path: each gets its documented answer, never a hang, and
``/api/health`` stays fast throughout.

Per path (``PATHS``: the Centrifugo protocol, KATO's ``/ws``, the screen-share relay, NINA's
``/ws/unified`` on a simulated rig): garbage, frames RFC 6455 forbids, messages over the
wire's limit, 10,000 commands in one frame, close codes a peer may not send, request targets
and heads too long (414/431), heads dribbled byte by byte (slowloris: 408), 500 silent
sockets (closed by the ping policy) and the per-address limit (429). All on a real server
(``tests/live.py``: the native engine ``sessionhub serve`` runs), all waits bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from tests.live import LiveServer, make_settings, until
from tests.nina.harness import RIG, SMALL, TZ
from tests.processes import SECRET, Server

from sessionhub.auth import Authenticator
from sessionhub.connectors.nina.simulator import NinaSimulator
from sessionhub.server.realtime import wsframe

from .rawws import RawSocket, client_frame, close_frame, upgrade_head

pytestmark = pytest.mark.slow

PING = 1.0  # the servers' ping interval here: a silent socket is closed within two
HEAD_TIMEOUT = 1.0  # seconds a request head may take (``Settings.extra["http_head_timeout"]``)
NO_ANSWER = None  # the wire ignores the message: no close within the wait


@dataclass(frozen=True)
class Wire:
    """One socket path and what its wire answers to abuse (a close code, or NO_ANSWER)."""

    name: str
    #: Largest message the wire takes (``Conn.max_message``).
    max_message: int
    garbage: int | None
    binary: int | None
    #: A close code the socket gets for silence (no pong): 1011, or the protocol's own.
    silent: int


WIRES = {
    # A frame that is not JSON commands ends the connection: 3501 (bad request).
    "centrifugo": Wire("centrifugo", 1 << 20, garbage=3501, binary=3501, silent=3502),
    # KATO answers {"type": "error"} and carries on; silence: 1011.
    "kato": Wire("kato", 64 * 1024, garbage=NO_ANSWER, binary=NO_ANSWER, silent=1011),
    # The relay ignores what viewers send; frames up to 8 MiB (a screen's image).
    "frames": Wire("frames", 8 << 20, garbage=NO_ANSWER, binary=NO_ANSWER, silent=1011),
    # NINA's dashboard sends nothing but "ping".
    "unified": Wire("unified", 64 * 1024, garbage=NO_ANSWER, binary=NO_ANSWER, silent=1011),
    # Aesthetic Computer's rooms relay what players send (a non-JSON message is dropped);
    # silence: its own pings, 3012.
    "rooms": Wire("rooms", 16 * 1024, garbage=NO_ANSWER, binary=NO_ANSWER, silent=3012),
}


@dataclass
class Setup:
    live: LiveServer
    #: wire name -> a path with its credentials, ready to open.
    paths: dict[str, str]


@pytest.fixture
async def rig() -> AsyncIterator[NinaSimulator]:
    sim = NinaSimulator(plan=SMALL, seed=7, timezone=TZ, speed=1e6)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.close()


async def _setup(tmp_path: Path, rig: NinaSimulator, **extra: Any) -> Setup:
    options: dict[str, Any] = {
        "ping_interval": PING,
        "http_keep_alive": 2.0,
        "http_head_timeout": HEAD_TIMEOUT,
        "nina_url": f"{RIG}={rig.url}",
        "nina_timezone": TZ,
        "nina_guider_poll_interval": 3600.0,
        "rooms_ping_interval": PING,
    }
    settings = make_settings(tmp_path, **{**options, **extra})
    live = LiveServer(settings).start()
    admin = live.token("root", "admin")
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        r = await http.post("/api/screen_share/start", json={}, headers=live.headers("alice"))
        share = r.json()["session_id"]
    paths = {
        "centrifugo": "/connection/websocket",
        "kato": f"/ws?token={admin}",
        "frames": f"/stream/{share}?token={live.token('alice')}&role=viewer",
        "unified": f"/ws/unified?token={admin}",
        "rooms": "/room/abuse",
    }
    return Setup(live, paths)


@pytest.fixture
async def setup(tmp_path: Path, rig: NinaSimulator) -> AsyncIterator[Setup]:
    s = await _setup(tmp_path, rig)
    try:
        yield s
    finally:
        s.live.stop()


async def _answer(setup: Setup, wire: str, *frames: bytes, expect: int | None) -> int | None:
    """The close code ``wire`` answers ``frames`` with. Waiting for an expected close ends
    when it arrives (up to 5 s: a loaded CI machine is slow); an expected silence is
    waited for 0.7 s."""
    wait = 0.7 if expect is NO_ANSWER else 5.0
    sock = await RawSocket.open(setup.live.port, setup.paths[wire])
    try:
        assert sock.status == 101, sock.head
        for f in frames:
            sock.send(f)
        return await sock.close_code(wait)
    finally:
        sock.abort()


#: Frames RFC 6455 forbids, and what every wire answers them (the engine decides, not the wire).
PROTOCOL_ERRORS: dict[str, tuple[list[bytes], int]] = {
    "unmasked frame": ([client_frame(wsframe.OP_TEXT, b"hi", mask=False)], 1002),
    "reserved bits": ([client_frame(wsframe.OP_TEXT, b"hi", rsv=1)], 1002),
    "continuation first": ([client_frame(wsframe.OP_CONT, b"x")], 1002),
    "control frame over 125 bytes": ([client_frame(wsframe.OP_PING, b"x" * 200)], 1002),
    "fragmented ping": ([client_frame(wsframe.OP_PING, b"x", fin=False)], 1002),
    "unknown opcode": ([client_frame(0x3, b"x")], 1002),
    "text that is not UTF-8": ([client_frame(wsframe.OP_TEXT, b"\xff\xfe")], 1007),
    # Close codes: never echo one a peer may not send; a valid one is echoed.
    "close 999": ([close_frame(999)], 1002),
    "close 1005 (reserved)": ([close_frame(1005)], 1002),
    "close 1015 (reserved)": ([close_frame(1015)], 1002),
    "close 2999": ([close_frame(2999)], 1002),
    "close 5000": ([close_frame(5000)], 1002),
    "close of one byte": ([client_frame(wsframe.OP_CLOSE, b"\x03")], 1002),
    "close reason not UTF-8": ([close_frame(1000, b"\xff")], 1007),
    "close without a code": ([close_frame(None)], 1000),
    "close 1000": ([close_frame(1000, b"bye")], 1000),
    "close 4000": ([close_frame(4000)], 4000),
    "close 3999": ([close_frame(3999)], 3999),
}


async def test_frames_the_protocol_forbids(setup: Setup) -> None:
    wrong = []
    for wire in WIRES:
        for name, (frames, code) in PROTOCOL_ERRORS.items():
            got = await _answer(setup, wire, *frames, expect=code)
            if got != code:
                wrong.append(f"{wire}: {name}: {got}, not {code}")
    assert not wrong, "\n".join(wrong)


async def test_garbage_and_messages_over_the_limit(setup: Setup) -> None:
    wrong = []
    for name, w in WIRES.items():
        cases = {
            "garbage": ([client_frame(wsframe.OP_TEXT, b"\x00garbage{")], w.garbage),
            "binary": ([client_frame(wsframe.OP_BINARY, b"\x01\x02\x03")], w.binary),
            "one byte over the limit": (
                [client_frame(wsframe.OP_TEXT, b"a" * (w.max_message + 1))],
                wsframe.CLOSE_TOO_BIG,
            ),
            # A message split in fragments is counted whole.
            "fragments over the limit": (
                [
                    client_frame(wsframe.OP_TEXT, b"a" * (w.max_message // 2 + 1), fin=False),
                    client_frame(wsframe.OP_CONT, b"a" * (w.max_message // 2 + 1)),
                ],
                wsframe.CLOSE_TOO_BIG,
            ),
            # A length header promising 2^62 bytes: refused before anything is buffered.
            "a frame that claims 2^62 bytes": (
                [bytes([0x81, 0xFF]) + (1 << 62).to_bytes(8, "big") + b"\x00" * 4],
                wsframe.CLOSE_TOO_BIG,
            ),
        }
        for case, (frames, code) in cases.items():
            got = await _answer(setup, name, *frames, expect=code)
            if got != code:
                wrong.append(f"{name}: {case}: {got}, not {code}")
    assert not wrong, "\n".join(wrong)


async def test_ten_thousand_commands_in_one_frame(setup: Setup) -> None:
    pings = b"\n".join(orjson.dumps({"id": i + 1, "ping": {}}) for i in range(10_000))
    connect = orjson.dumps({"id": 1, "connect": {"token": setup.live.token("alice")}})
    # At most 100 commands share a frame: more is a final bad request (3501), answered
    # at once, before any of them runs.
    sock = await RawSocket.open(setup.live.port, setup.paths["centrifugo"])
    sock.send(client_frame(wsframe.OP_TEXT, connect))
    sock.send(client_frame(wsframe.OP_TEXT, pings))
    frames = await sock.frames(3)
    sock.abort()
    texts = [p for op, p in frames if op == wsframe.OP_TEXT]
    assert b'"connect"' in texts[0] and b"too many commands" in texts[-1]
    assert frames[-1][0] == wsframe.OP_CLOSE and wsframe.parse_close(frames[-1][1])[0] == 3501
    # The other wires take one message as one message: KATO says it is no command.
    for wire in ("kato", "unified", "frames"):
        sock = await RawSocket.open(setup.live.port, setup.paths[wire])
        sock.send(client_frame(wsframe.OP_TEXT, b"\n".join([b"ping"] * 10_000)))
        assert await sock.close_code(0.5) is None, wire
        sock.abort()
    # And a 100 KB token in a connect is "token too large", with a close (not 107 and open).
    sock = await RawSocket.open(setup.live.port, setup.paths["centrifugo"])
    big = orjson.dumps({"id": 1, "connect": {"token": "a" * 100_000}})
    sock.send(client_frame(wsframe.OP_TEXT, big))
    frames = await sock.frames(3)
    sock.abort()
    assert b"token too large" in frames[0][1] and wsframe.parse_close(frames[-1][1])[0] == 3501


# -- heads: too long, too slow ---------------------------------------------------------------


async def _head_answer(port: int, head: bytes, wait: float = 3.0) -> tuple[int, float]:
    sock = await RawSocket.connect(port)
    started = time.monotonic()
    try:
        sock.send(head)
        status = await sock.read_head(wait)
        return status, time.monotonic() - started
    finally:
        sock.abort()


async def test_long_targets_and_heads_are_answered_not_hung(setup: Setup) -> None:
    port = setup.live.port
    targets = [*setup.paths.values(), "/api/health"]
    wrong = []
    for path in targets:
        sep = "&" if "?" in path else "?"
        is_socket = path != "/api/health"
        cases = {
            "a 20 KB target": (f"{path}{sep}token={'a' * 20_000}", "", 414),
            "a 100 KB header": (path, f"X-Pad: {'a' * 100_000}\r\n", 431),
            "20,000 headers": (path, "".join(f"X-{i}: v\r\n" for i in range(20_000)), 431),
            "an 8 KB target": (f"{path}{sep}x={'a' * 7_000}", "", 101 if is_socket else 200),
        }
        for case, (target, extra, status) in cases.items():
            if is_socket:
                head = upgrade_head(target, extra=extra)
            else:
                head = f"GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()
            got, took = await _head_answer(port, head)
            if got != status or took > 1.0:
                wrong.append(f"{path[:30]}: {case}: {got} after {took:.2f} s, not {status}")
    assert not wrong, "\n".join(wrong)


async def test_a_head_dribbled_byte_by_byte_is_cut_off(setup: Setup) -> None:
    """Slowloris: one byte every 0.1 s never completes a head in time; the server answers
    408 within its head deadline (uvicorn alone would wait for ever)."""

    async def dribble(head: bytes) -> tuple[int, float]:
        sock = await RawSocket.connect(setup.live.port)
        started = time.monotonic()
        try:
            for byte in head:  # bounded: the head has a few hundred bytes
                if sock.writer.transport.is_closing() or sock.reader.at_eof():
                    break
                sock.send(bytes([byte]))
                await asyncio.sleep(0.1)
                if sock.reader._buffer:  # the server answered (read below)
                    break
            status = await sock.read_head(2 * HEAD_TIMEOUT)
            return status, time.monotonic() - started
        finally:
            sock.abort()

    heads = [upgrade_head(p) for p in setup.paths.values()]
    heads.append(b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n")
    results = await asyncio.gather(*(dribble(h) for h in heads))
    for status, took in results:
        assert status == 408 and took < HEAD_TIMEOUT + 1.0, (status, took)


async def test_a_connection_that_never_speaks_is_closed(setup: Setup) -> None:
    sock = await RawSocket.connect(setup.live.port)
    try:
        started = time.monotonic()
        assert await sock.closed(5.0)
        # The keep-alive timeout (2 s here): like an idle kept-alive connection.
        assert time.monotonic() - started < 3.5
    finally:
        sock.abort()


# -- many sockets ------------------------------------------------------------------------------


class HealthProbe:
    """``/api/health`` asked every 10 ms on a connection of its own, each answer timed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.times: list[float] = []
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> HealthProbe:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            while True:
                started = time.perf_counter()
                try:
                    ok = (await http.get("/api/health")).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.times.append(time.perf_counter() - started)
                self.failures += not ok
                await asyncio.sleep(0.01)

    def p99(self) -> float:
        if len(self.times) < 2:
            return max(self.times, default=0.0)
        return statistics.quantiles(self.times, n=100)[98]


async def _open_many(port: int, path: str, n: int) -> list[RawSocket]:
    """``n`` sockets on ``path``, opened 50 at a time; none of them ever answers a ping."""
    out: list[RawSocket] = []
    for start in range(0, n, 50):  # bounded: n / 50 rounds
        batch = await asyncio.gather(
            *(RawSocket.open(port, path) for _ in range(start, min(n, start + 50)))
        )
        for sock in batch:
            sock.pong = False
        out += batch
    return out


STORM_PING = 4.0  # long enough for every socket of the storm to be open at once


async def _node(http: httpx.AsyncClient) -> dict[str, Any]:
    node: dict[str, Any] = (await http.get("/api/health")).json()["node"]
    return node


async def _until_node(http: httpx.AsyncClient, pred: Any, wait: float, what: str) -> None:
    deadline = time.monotonic() + wait
    while not pred(await _node(http)):  # bounded by ``wait``
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_500_silent_sockets_per_path_are_closed_and_health_stays_fast(
    tmp_path: Path, rig: NinaSimulator
) -> None:
    """On a real ``sessionhub serve`` process (what users run: the probe's clients do not
    share its interpreter): 500 sockets per path that never answer a ping."""
    env = {
        "SESSIONHUB_PING_INTERVAL": str(STORM_PING),
        "SESSIONHUB_NINA_URL": f"{RIG}={rig.url}",
        "SESSIONHUB_NINA_TIMEZONE": TZ,
        "SESSIONHUB_LOG_LEVEL": "warning",
        "SESSIONHUB_ROOMS_PING_INTERVAL": str(STORM_PING),
        # Every socket of the storm joins one room from one address.
        "SESSIONHUB_ROOMS_PER_ADDRESS": "1000",
    }
    server = Server(tmp_path / "data", None, tmp_path / "server.log", env=env)
    n = 500
    try:
        await server.wait_ready()
        auth = Authenticator(secret=SECRET)
        admin, alice = auth.issue("root", ["admin"]), auth.issue("alice", [])
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            r = await http.post(
                "/api/screen_share/start", json={}, headers={"Authorization": f"Bearer {alice}"}
            )
            share = r.json()["session_id"]
            paths = [
                "/connection/websocket",
                f"/ws?token={admin}",
                f"/stream/{share}?token={alice}&role=viewer",
                f"/ws/unified?token={admin}",
                "/room/storm",
            ]
            async with HealthProbe(server.url) as health:
                started = time.monotonic()
                opened = await asyncio.gather(*(_open_many(server.port, p, n) for p in paths))
                took = time.monotonic() - started
                assert all(s.status == 101 for group in opened for s in group)
                await _until_node(
                    http, lambda d: d["connections"] >= len(paths) * n, 3, "the storm"
                )
                peak = (await _node(http))["connections"]
                # Silent: closed by the ping policy within two ping intervals (and a bit).
                waits = [
                    asyncio.gather(*(s.close_code(2 * STORM_PING + 3) for s in group))
                    for group in opened
                ]
                codes = dict(zip(WIRES, await asyncio.gather(*waits), strict=False))
                closed_after = time.monotonic() - started
                await _until_node(http, lambda d: d["connections"] == 0, 5, "no sockets left")
                for group in opened:
                    for s in group:
                        s.abort()
    finally:
        server.stop()
    print(
        f"\n{len(paths) * n} silent sockets opened in {took:.2f} s (peak {peak} open), all closed "
        f"{closed_after:.1f} s after the first; /api/health: {len(health.times)} answers, "
        f"p99 {health.p99() * 1000:.1f} ms, max {max(health.times) * 1000:.1f} ms"
    )
    assert peak == len(paths) * n, "every socket of the storm was open at once"
    for wire, got in codes.items():
        assert set(got) == {WIRES[wire].silent}, (wire, set(got))
    assert health.failures == 0
    assert health.p99() < 0.5


async def test_the_per_address_limit_is_429_and_frees_up(
    tmp_path: Path, rig: NinaSimulator
) -> None:
    setup = await _setup(tmp_path, rig, realtime_max_per_address=8)
    try:
        live = setup.live
        held = await _open_many(live.port, setup.paths["kato"], 8)
        assert all(s.status == 101 for s in held)
        for path in setup.paths.values():
            extra = await RawSocket.open(live.port, path)
            assert extra.status == 429 and b"retry-after: 5" in extra.head.lower(), extra.head
            extra.abort()
        async with httpx.AsyncClient(base_url=live.url, timeout=5) as http:
            r = await http.get(
                "/api/stream", params={"topics": "user:alice"}, headers=live.headers("alice")
            )
            assert r.status_code == 429 and r.headers["retry-after"]
            assert r.headers["content-type"] == "application/problem+json"
            # The limit counts sockets, not requests: REST answers as usual.
            assert (await http.get("/api/health")).status_code == 200
        held.pop().abort()
        await until(lambda: live.realtime.stats()["connections"] == 7, 5, "one socket fewer")
        again = await RawSocket.open(live.port, setup.paths["kato"])
        assert again.status == 101
        again.abort()
        for s in held:
            s.abort()
    finally:
        setup.live.stop()


async def test_under_the_asgi_engine_listeners_stay_and_the_silent_go(tmp_path: Path) -> None:
    """The portable engine cannot ping (ASGI has no ping frames): a client that only
    listens must not be taken for dead (it was closed with 1011 after two intervals), and
    one that stops answering is dropped by the server's own WebSocket pings."""
    import websockets

    live = LiveServer(make_settings(tmp_path, ping_interval=PING), engine="asgi").start()
    try:
        url = live.socket_url("/ws", live.token("root", "admin"))
        async with websockets.connect(url, open_timeout=5) as listener:  # answers pings
            silent = await RawSocket.open(live.port, f"/ws?token={live.token('root', 'admin')}")
            silent.pong = False
            assert await silent.closed(4 * PING + 2), "a peer that never pongs is dropped"
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(4 * PING):
                    while True:  # bounded by the timeout
                        await listener.recv()
            assert listener.close_code is None, "a listening client is kept"
            silent.abort()
    finally:
        live.stop()
