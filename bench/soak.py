"""Soak: ten minutes of mixed traffic against a real ``sessionhub serve``, bounded and flat.

A real server (uvicorn as ``sessionhub serve`` runs it, SQLite, memory broker, on 127.0.0.1)
takes, all at once:

* REST changes: workers creating sessions, changing them (PATCH), heartbeating and ending
  them, paced to ``--rate`` requests per second in all;
* 1,000 WebSocket subscribers (Centrifugo protocol): most follow one of 50 users' topics, a
  tenth are admins following ``sessions`` (every change), all answering the server's pings;
* SSE streams that end and resume from their last id every 30 s;
* screen-share relays: sharers sending 30 KB frames at 10 frames/s to viewers;
* abusive clients, every few seconds: malformed JSON, junk positions, bad WebSocket frames,
  megabyte heads, 20 KB targets, heads dribbled slowly, and sockets that never answer a ping.

Every minute it prints the server's RSS, open file descriptors, connections, and the p50/p99
latency of the REST changes and of ``/api/health``; at the end a table of every minute and
a verdict: RSS and descriptors flat (after the first minute's warm-up), no 5xx, no
subscriber cut off that should not have been.

    .venv/bin/python bench/soak.py [--minutes 10] [--subscribers 1000] [--rate 60]

Run the full ten minutes on a quiet machine: on a shared one the latencies measure the
neighbours. The load runs in this process (asyncio, raw sockets where a library would cost
more than the server); the server is a process of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import random
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import psutil

SECRET = "soak-secret-0123456789abcdef0123456789ab"
ROOT = Path(__file__).resolve().parent.parent
USERS = 50
PING_INTERVAL = 5.0  # the server's: silent abusive sockets are closed within ~10 s
HISTORY_TTL = 120.0
SERVE = [sys.executable, "-m", "sessionhub.cli", "serve", "--host", "127.0.0.1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def token(sub: str, *roles: str) -> str:
    from sessionhub.auth import Authenticator

    return Authenticator(secret=SECRET).issue(sub, roles, ttl=timedelta(hours=24))


# -- numbers ----------------------------------------------------------------------------------


@dataclass
class Minute:
    """What one minute measured."""

    minute: int
    rss_mb: float = 0.0
    fds: int = 0
    connections: int = 0
    sse: int = 0
    requests: int = 0
    errors_5xx: int = 0
    rest_p50: float = 0.0
    rest_p99: float = 0.0
    health_p99: float = 0.0
    deliveries: int = 0
    frames: int = 0
    abuse: int = 0


@dataclass
class Counters:
    rest: list[float] = field(default_factory=list)
    health: list[float] = field(default_factory=list)
    requests: int = 0
    errors_5xx: int = 0
    deliveries: int = 0
    frames: int = 0
    abuse: int = 0
    #: Subscribers closed by the server with a code other than the expected ones.
    unexpected_closes: list[int] = field(default_factory=list)

    def take(self, minute: int) -> Minute:
        m = Minute(
            minute,
            requests=self.requests,
            errors_5xx=self.errors_5xx,
            rest_p50=_quantile(self.rest, 50),
            rest_p99=_quantile(self.rest, 99),
            health_p99=_quantile(self.health, 99),
            deliveries=self.deliveries,
            frames=self.frames,
            abuse=self.abuse,
        )
        self.rest, self.health = [], []
        self.requests = self.errors_5xx = self.deliveries = self.frames = self.abuse = 0
        return m


def _quantile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return max(values, default=0.0) * 1000
    return statistics.quantiles(values, n=100)[q - 1] * 1000


# -- the server -------------------------------------------------------------------------------


class ServerProcess:
    def __init__(self, data: Path, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "SESSIONHUB_JWT_SECRET": SECRET,
            "SESSIONHUB_LOG_LEVEL": "warning",
            "SESSIONHUB_PING_INTERVAL": str(PING_INTERVAL),
            # A recovery window of two minutes (default ten): within a ten-minute run the
            # broker's history reaches its steady size, so what grows after that is a leak.
            "SESSIONHUB_HISTORY_TTL": str(HISTORY_TTL),
        }
        self.log = data.parent / "server.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*SERVE, "--port", str(port), "--data-dir", str(data)],
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.ps = psutil.Process(self.proc.pid)

    async def ready(self) -> None:
        async with httpx.AsyncClient(base_url=self.url) as http:
            for _ in range(300):  # 30 s
                if self.proc.poll() is not None:
                    raise SystemExit(f"the server exited:\n{self.log.read_text()[-2000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/api/ready", timeout=1)).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise SystemExit("the server did not get ready in 30 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# -- a minimal WebSocket client (the load must cost less than what it loads) ---------------------


def _mask(payload: bytes, key: bytes) -> bytes:
    from sessionhub.server.realtime.wsframe import apply_mask

    return apply_mask(payload, key)


def frame(opcode: int, payload: bytes) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + key + _mask(payload, key)


class Socket:
    """One WebSocket connection: ``messages()`` yields (opcode, payload) as they arrive."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.close_code: int | None = None

    @classmethod
    async def open(cls, port: int, path: str) -> Socket:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}"
                "\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if not head.startswith(b"HTTP/1.1 101"):
            writer.close()
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
        return cls(reader, writer)

    def send(self, opcode: int, payload: bytes) -> None:
        self.writer.write(frame(opcode, payload))

    async def messages(self) -> Callable[[], Awaitable[tuple[int, bytes] | None]]:
        buf = b""

        async def next_message() -> tuple[int, bytes] | None:
            nonlocal buf
            while True:  # bounded by the connection: each turn reads or returns
                if len(buf) >= 2:
                    op, n, pos = buf[0] & 0x0F, buf[1] & 0x7F, 2
                    if n == 126 and len(buf) >= 4:
                        n, pos = struct.unpack_from("!H", buf, 2)[0], 4
                    elif n == 127 and len(buf) >= 10:
                        n, pos = struct.unpack_from("!Q", buf, 2)[0], 10
                    if (n < 126 or pos > 2) and len(buf) >= pos + n:
                        payload, buf = buf[pos : pos + n], buf[pos + n :]
                        return op, payload
                data = await self.reader.read(1 << 16)
                if not data:
                    return None
                buf += data

        return next_message

    def abort(self) -> None:
        self.writer.transport.abort()


# -- the traffic ------------------------------------------------------------------------------


class Soak:
    def __init__(self, server: ServerProcess, args: argparse.Namespace) -> None:
        self.server = server
        self.args = args
        self.counters = Counters()
        self.stop = asyncio.Event()
        self.users = [token(f"u{i}") for i in range(USERS)]
        self.admin = token("root", "admin")

    def headers(self, i: int) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.users[i % USERS]}"}

    async def rest_worker(self, n: int, http: httpx.AsyncClient, pace: float) -> None:
        c = self.counters
        i = 0
        while not self.stop.is_set():  # bounded by the run's end
            h = self.headers(n + i)
            i += 1
            steps: list[tuple[str, str, dict[str, object] | None]] = [("POST", "/api/sessions", {})]
            sid = None
            for k in range(7):
                if self.stop.is_set():
                    return
                method, path, body = steps[0] if sid is None else self._step(sid, k)
                started = time.perf_counter()
                try:
                    r = await http.request(method, path, json=body, headers=h)
                except httpx.HTTPError:
                    c.errors_5xx += 1
                    await asyncio.sleep(pace)
                    continue
                c.rest.append(time.perf_counter() - started)
                c.requests += 1
                c.errors_5xx += r.status_code >= 500
                if sid is None and r.status_code == 201:
                    sid = r.json()["id"]
                await asyncio.sleep(pace)

    @staticmethod
    def _step(sid: str, k: int) -> tuple[str, str, dict[str, object] | None]:
        if k in (1, 3, 5):
            return "PATCH", f"/api/sessions/{sid}", {"metadata": {"step": k}}
        if k in (2, 4):
            return "POST", f"/api/sessions/{sid}/heartbeat", None
        return "POST", f"/api/sessions/{sid}/actions/end", None

    async def subscriber(self, i: int) -> None:
        """One Centrifugo client: connect, subscribe, count pushes, answer pings."""
        admin = i % 10 == 0
        topic = "sessions" if admin else f"user:u{i % USERS}"
        tok = self.admin if admin else self.users[i % USERS]
        while not self.stop.is_set():  # reconnects after a cut, bounded by the run's end
            try:
                ws = await Socket.open(self.server.port, "/connection/websocket")
            except (OSError, TimeoutError, ConnectionError):
                await asyncio.sleep(1)
                continue
            ws.send(0x1, orjson.dumps({"id": 1, "connect": {"token": tok}}))
            ws.send(0x1, orjson.dumps({"id": 2, "subscribe": {"channel": topic}}))
            nxt = await ws.messages()
            try:
                while not self.stop.is_set():
                    msg = await nxt()
                    if msg is None:
                        break
                    op, payload = msg
                    if op == 0x8:
                        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                        if code not in (3001,):
                            self.counters.unexpected_closes.append(code)
                        break
                    if op == 0x9:
                        ws.send(0xA, payload)
                        continue
                    for line in payload.split(b"\n"):
                        if line == b"{}":
                            ws.send(0x1, b"{}")  # the protocol's ping: pong
                        elif line.startswith(b'{"push":{"channel"') and b'"pub"' in line:
                            self.counters.deliveries += 1
            finally:
                ws.abort()

    async def sse_reader(self, i: int, http: httpx.AsyncClient) -> None:
        last: str | None = None
        topic = f"user:u{i % USERS}"
        while not self.stop.is_set():
            headers = self.headers(i)
            if last:
                headers["Last-Event-ID"] = last
            ends = time.monotonic() + 30
            try:
                async with http.stream(
                    "GET", "/api/stream", params={"topics": topic}, headers=headers, timeout=None
                ) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("id: "):
                            last = line[4:]
                        elif line.startswith("event: pub"):
                            self.counters.deliveries += 1
                        if time.monotonic() > ends or self.stop.is_set():
                            break
            except httpx.HTTPError:
                await asyncio.sleep(1)

    async def relay(self, i: int, http: httpx.AsyncClient) -> None:
        owner = self.users[i]
        r = await http.post(
            "/api/screen_share/start",
            json={"viewers": [f"u{(i + k) % USERS}" for k in range(1, 11)]},
            headers={"Authorization": f"Bearer {owner}"},
        )
        sid = r.json()["session_id"]
        viewers = [
            asyncio.ensure_future(self.viewer(sid, self.users[(i + k) % USERS]))
            for k in range(1, 11)
        ]
        sharer = await Socket.open(self.server.port, f"/stream/{sid}?token={owner}&role=sharer")
        image = os.urandom(30_000)
        try:
            while not self.stop.is_set():  # 10 frames a second until the run ends
                sharer.send(0x2, image)
                with contextlib.suppress(ConnectionError):
                    await sharer.writer.drain()
                await asyncio.sleep(0.1)
        finally:
            sharer.abort()
            for v in viewers:
                v.cancel()

    async def viewer(self, sid: str, tok: str) -> None:
        ws = await Socket.open(self.server.port, f"/stream/{sid}?token={tok}&role=viewer")
        nxt = await ws.messages()
        try:
            while (msg := await nxt()) is not None:
                if msg[0] == 0x9:
                    ws.send(0xA, msg[1])
                elif msg[0] == 0x2:
                    self.counters.frames += 1
                elif msg[0] == 0x8:
                    break
        finally:
            ws.abort()

    async def abuser(self, http: httpx.AsyncClient) -> None:
        port = self.server.port
        slow: set[asyncio.Future[None]] = set()
        while not self.stop.is_set():
            h = self.headers(0)
            junk = {**h, "content-type": "application/json"}
            for _ in range(10):
                await http.post("/api/sessions", content=b"{no", headers=junk)
                await http.get("/api/sessions", params={"cursor": "0" * 400}, headers=h)
                await http.request("TRACE", "/api/sessions", headers=h)
            for lid in ("garbage", "3", "sessions@3"):
                headers = {**h, "Last-Event-ID": lid}
                async with http.stream(
                    "GET", "/api/stream", params={"topics": "user:u0"}, headers=headers
                ) as r:
                    async for _ in r.aiter_bytes():
                        break
            await asyncio.gather(*(self._raw_head(port, kind) for kind in ("big", "long") * 5))
            # Slow heads take the server's head deadline (10 s) to be cut off: a few at a
            # time in the background, never more than ten outstanding.
            slow = {t for t in slow if not t.done()}
            while len(slow) < 10:
                slow.add(asyncio.ensure_future(self._raw_head(port, "slow")))
            silent: list[Socket] = []
            for _ in range(5):
                with contextlib.suppress(OSError, ConnectionError, TimeoutError):
                    ws = await Socket.open(port, f"/ws?token={self.admin}")
                    ws.send(0x1, b"a" * (70 << 10))  # over /ws's limit: 1009
                    silent.append(await Socket.open(port, "/connection/websocket"))
                    ws.abort()
            self.counters.abuse += 1
            await asyncio.sleep(5)
            for ws in silent:  # the server closed them (stale); make sure
                ws.abort()

    @staticmethod
    async def _raw_head(port: int, kind: str) -> None:
        with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                if kind == "big":
                    writer.write(
                        b"GET /api/health HTTP/1.1\r\nX-Pad: " + b"a" * (1 << 20) + b"\r\n\r\n"
                    )
                elif kind == "long":
                    writer.write(f"GET /ws?token={'a' * 20000} HTTP/1.1\r\n\r\n".encode())
                else:
                    for byte in b"GET /api/health HTTP/1.1\r\nX-Slow: 1":
                        if reader.at_eof() or writer.is_closing() or reader._buffer:
                            break  # answered (408) or closed
                        writer.write(bytes([byte]))
                        await asyncio.sleep(0.5)
                await asyncio.wait_for(reader.read(200), 15)
            finally:
                writer.transport.abort()

    async def health(self, http: httpx.AsyncClient) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                await http.get("/api/health")
                self.counters.health.append(time.perf_counter() - started)
            await asyncio.sleep(0.1)

    async def sample(self, minute: int) -> Minute:
        m = self.counters.take(minute)
        ps = self.server.ps
        m.rss_mb = ps.memory_info().rss / 2**20
        m.fds = ps.num_fds()
        async with httpx.AsyncClient(base_url=self.server.url, timeout=10) as http:
            node = (await http.get("/api/health")).json()["node"]
        m.connections, m.sse = node["connections"], node["sse_streams"]
        return m


async def run(args: argparse.Namespace) -> list[Minute]:
    data = Path(tempfile.mkdtemp(prefix="sessionhub-soak-")) / "data"
    server = ServerProcess(data, free_port())
    await server.ready()
    soak = Soak(server, args)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
    minutes: list[Minute] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as http:
        workers = 8
        pace = workers / args.rate
        tasks = [asyncio.ensure_future(soak.rest_worker(n, http, pace)) for n in range(workers)]
        tasks += [asyncio.ensure_future(soak.health(http))]
        for start in range(0, args.subscribers, 50):  # 50 at a time
            tasks += [
                asyncio.ensure_future(soak.subscriber(i))
                for i in range(start, min(args.subscribers, start + 50))
            ]
            await asyncio.sleep(0.05)
        tasks += [asyncio.ensure_future(soak.sse_reader(i, http)) for i in range(args.sse)]
        tasks += [asyncio.ensure_future(soak.relay(i, http)) for i in range(args.relays)]
        tasks += [asyncio.ensure_future(soak.abuser(http))]
        print(
            f"soak: {args.minutes} min against {server.url}: {args.subscribers} subscribers, "
            f"{args.sse} SSE streams, {args.relays} relays x 10 viewers, REST at {args.rate}/s, "
            "abusive clients every 5 s"
        )
        print(HEADER)
        started = time.monotonic()
        try:
            for minute in range(1, args.minutes + 1):
                await asyncio.sleep(max(0.0, started + 60 * minute - time.monotonic()))
                m = await soak.sample(minute)
                minutes.append(m)
                print(row(m), flush=True)
        finally:
            soak.stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            server.stop()
    verdict(minutes, soak.counters)
    return minutes


HEADER = (
    "| min | RSS MB | fds | sockets | SSE | requests | 5xx | REST p50 ms | REST p99 ms "
    "| health p99 ms | deliveries | relay frames | abuse rounds |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def row(m: Minute) -> str:
    return (
        f"| {m.minute} | {m.rss_mb:.1f} | {m.fds} | {m.connections} | {m.sse} | {m.requests} "
        f"| {m.errors_5xx} | {m.rest_p50:.1f} | {m.rest_p99:.1f} | {m.health_p99:.1f} "
        f"| {m.deliveries} | {m.frames} | {m.abuse} |"
    )


def verdict(minutes: list[Minute], counters: Counters) -> None:
    """Flat: over the second half of the run (the broker's history window and the hub's
    session cache have filled by then) RSS and descriptors do not climb, and no request
    failed."""
    print("\nfinal table\n" + HEADER)
    for m in minutes:
        print(row(m))
    if not minutes:
        return
    half = minutes[len(minutes) // 2 :]
    rss_growth = max(m.rss_mb for m in half) - half[0].rss_mb
    fd_growth = max(m.fds for m in half) - half[0].fds
    errors = sum(m.errors_5xx for m in minutes)
    closes = sorted(set(counters.unexpected_closes))
    print(
        f"\nRSS {minutes[0].rss_mb:.1f} MB after minute 1, {minutes[-1].rss_mb:.1f} MB at the "
        f"end; over the second half (from minute {half[0].minute}) it grew by at most "
        f"{rss_growth:.1f} MB and descriptors by {fd_growth}; {errors} 5xx; subscribers closed "
        f"unexpectedly: {len(counters.unexpected_closes)} {closes or ''}; worst REST p99 "
        f"{max(m.rest_p99 for m in minutes):.1f} ms, worst health p99 "
        f"{max(m.health_p99 for m in minutes):.1f} ms"
    )
    flat = rss_growth < 10 and fd_growth < 50 and errors == 0 and not counters.unexpected_closes
    if len(minutes) < 2 * HISTORY_TTL / 60 + 2:
        print("verdict: too short to judge flatness (the history window fills in the first")
        print(f"{HISTORY_TTL / 60:.0f} minutes): run the full ten minutes on a quiet machine")
        return
    print("verdict:", "bounded and flat" if flat else "NOT flat: look at the rows above")


def main() -> None:
    # Writes to sockets the server has closed (abusers cut off) are expected here.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--sse", type=int, default=50)
    parser.add_argument("--relays", type=int, default=5)
    parser.add_argument("--rate", type=float, default=60.0, help="REST requests per second")
    args = parser.parse_args()
    random.seed(13)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
