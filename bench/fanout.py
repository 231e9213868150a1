"""Fan-out benchmark: one publisher, N subscribers, ~300-byte messages.

Compares, in the same run and on the same machine, sessionhub's realtime endpoint (as
``sessionhub serve`` runs it: uvicorn + the fast engine, the Centrifugo JSON protocol)
with a raw ``websockets`` broadcast server and a Node ``ws`` broadcast server. For each
server and N in (100, 1000):

* delivered messages per second: the publisher sends M messages as fast as the server takes
  them; delivered/s = messages received by all subscribers / (last receipt - first send);
* p50/p90 publish-to-receive latency at a fixed offered load (10,000 deliveries/s, i.e.
  10,000/N messages per second), from a CLOCK_MONOTONIC stamp in each message;
* server CPU (share of one core) during the throughput phase, and the load generator's CPU,
  to show the subscribers' processes are not the bottleneck;
* server RSS per idle connection (N = 1000 connected and subscribed, idle).

All servers run for the whole bench, idle but for the one being measured. For each N, each
server gets its throughput phase alone; then the latency phases take turns, ``--rounds``
rounds of them in rotating order, so that a slow spell of the machine falls on every server
alike. Subscribers live in separate processes: a bare epoll loop over plain sockets that
counts message markers in the byte stream. With ``--pin`` (the default on 2+ cores) the
servers share CPU 0 and the load generator has the others; while measuring latency the
reader polls without sleeping, since a sleeping reader's wake-ups (tens of microseconds
each on a VM) would be counted against the server. Usage:
``python bench/fanout.py [--quick] [--rounds R] [--servers a,b]``.
Needs ``node`` and ``npm install`` (package.json: ``ws``) for the Node column.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psutil

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret-0123456789abcdef0123456789"
MARK = b'"bm":'
# The trailing comma: a stamp cut off mid-number by a read boundary must not match.
STAMP = re.compile(rb'"bm":(\d+),"t":(\d+),')
PAD = "x" * 240  # brings a message to ~300 bytes

NODE_SERVER = r"""
const { WebSocketServer } = require('ws');
const port = Number(process.argv[2]);
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false, backlog: 4096 });
wss.on('connection', (ws, req) => {
  if (req.url.startsWith('/pub')) {
    ws.on('message', (data) => {
      for (const c of wss.clients) if (c !== ws && c.readyState === 1) c.send(data, { binary: false });
    });
  }
});
wss.on('listening', () => console.log('ready'));
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def message(seq: int) -> dict[str, Any]:
    return {"bm": seq, "t": time.monotonic_ns(), "pad": PAD}


# -- servers ---------------------------------------------------------------------------------


def serve_sessionhub(port: int, data_dir: str) -> None:
    import uvicorn

    from sessionhub.server.app import create_app
    from sessionhub.server.runtime import build_runtime
    from sessionhub.server.serving import uvicorn_config
    from sessionhub.settings import Settings

    settings = Settings(
        data_dir=Path(data_dir), jwt_secret=SECRET, ping_interval=3600.0, log_level="warning"
    )
    settings.extra["realtime_publish_topics"] = ["bench"]
    # The throughput phase offers more than the subscribers' processes read; like the peers
    # (which never cut anyone off) let queues grow instead of dropping slow readers (3008).
    settings.extra["realtime_queue_bytes"] = 1 << 30
    runtime = build_runtime(settings)
    app = create_app(settings, runtime=runtime)
    # The same uvicorn configuration as `sessionhub serve` (a longer accept backlog for the
    # connection storm of 1000 subscribers, as the peers get).
    config = uvicorn_config(app, settings, host="127.0.0.1", port=port, backlog=4096)
    print("ready", flush=True)
    uvicorn.Server(config).run()


def serve_websockets(port: int) -> None:
    import logging

    import uvloop

    # Subscribers are cut off at the end of a run; their "no close frame" is noise here.
    logging.disable(logging.CRITICAL)
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    clients: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        if ws.request is not None and ws.request.path.startswith("/pub"):
            async for msg in ws:
                broadcast(clients, msg)
            return
        clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            clients.discard(ws)

    async def main() -> None:
        async with serve(
            handler,
            "127.0.0.1",
            port,
            compression=None,
            ping_interval=None,
            max_size=None,
            backlog=4096,
        ):
            print("ready", flush=True)
            await asyncio.Future()

    uvloop.run(main())


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    sub_path: str
    pub_path: str
    centrifuge: bool
    tmp: str | None = None

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


def start_server(name: str) -> Server | None:
    port = free_port()
    tmp = None
    if name == "sessionhub":
        tmp = tempfile.mkdtemp(prefix="bench-sh-")
        cmd = [sys.executable, __file__, "_serve", "sessionhub", str(port), tmp]
        sub = pub = "/connection/websocket"
    elif name == "websockets":
        cmd = [sys.executable, __file__, "_serve", "websockets", str(port)]
        sub, pub = "/sub", "/pub"
    else:
        node = shutil.which("node")
        if node is None or not (ROOT / "node_modules" / "ws").exists():
            print("node or node_modules/ws missing: skipping the Node column", file=sys.stderr)
            return None
        tmp = tempfile.mkdtemp(prefix="bench-node-")
        script = Path(tmp) / "server.js"
        script.write_text(NODE_SERVER)
        cmd = [node, str(script), str(port)]
        sub, pub = "/sub", "/pub"
    env = {**os.environ, "NODE_PATH": str(ROOT / "node_modules")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if b"ready" not in line:
        raise RuntimeError(f"{name} server did not start: {line!r}")
    pin_server(proc.pid)
    # Wait for the port to accept.
    for _ in range(200):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            break
        time.sleep(0.05)
    return Server(name, proc, port, sub, pub, name == "sessionhub", tmp)


def admin_token() -> str:
    from sessionhub.auth import Authenticator

    return Authenticator(secret=SECRET).issue("bench", ["admin"])


# -- a minimal WebSocket client (load generator) ---------------------------------------------


def client_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x81, 0x80 | n))
    elif n < 65536:
        head = bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big")
    from websockets.speedups import apply_mask

    return head + mask + bytes(apply_mask(payload, mask))


def handshake(port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


#: With --pin, every server runs on CPU 0 and the load generator on the other CPUs, so the
#: servers are compared on one core each and do not compete with their own subscribers.
PIN_ENV = "FANOUT_LOADGEN_CPUS"


def pin_server(pid: int) -> None:
    """Pin every thread of the server process to CPU 0 (when --pin is on)."""
    if not os.environ.get(PIN_ENV):
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), {0})


def pin_loadgen() -> bool:
    """Pin this load-generator process to the CPUs named in the environment; whether it was."""
    cpus = os.environ.get(PIN_ENV)
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    return bool(cpus)


def subscriber_process(conn: Any, port: int, path: str, n: int, hello: bytes) -> None:
    """One load-generator process: ``n`` subscribers read by a bare epoll loop.

    No event loop and no per-connection object: a readable socket costs one ``epoll`` entry,
    one ``recv`` and a ``bytes.count`` (a regex over the stamps in latency mode), so that
    these processes read faster than any of the servers write and the latency measured is
    the server's, not the load generator's.
    """
    import select

    spin = pin_loadgen()
    socks: dict[int, socket.socket] = {}
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(handshake(port, path))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("server closed during the handshake")
            head += chunk
        if hello:
            s.sendall(hello)
            seen = head
            while b'"subscribe":{' not in seen:
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("server closed during subscribe")
                seen += chunk
        s.setblocking(False)
        socks[s.fileno()] = s
        if i % 50 == 49:
            time.sleep(0.02)
    ep = select.epoll()
    for fd in socks:
        ep.register(fd, select.EPOLLIN)
    conn.send(("ready", len(socks)))
    tails: dict[int, bytes] = dict.fromkeys(socks, b"")
    mark_keep = len(MARK) - 1
    while True:
        cmd = conn.recv()
        if cmd[0] == "close":
            for s in socks.values():
                s.close()
            conn.send("closed")
            return
        _, expected, limit, latency = cmd
        count, last_ns, samples = 0, 0, []
        cpu0 = time.process_time()
        end = time.monotonic() + limit
        # Measuring latency on a core of its own (--pin), the reader polls without sleeping:
        # a sleeping reader costs a wake-up per delivery that would count as the server's
        # latency. The throughput phase sleeps when idle, so its CPU column means something.
        timeout = 0.0 if spin and latency else 0.05
        while count < expected and time.monotonic() < end:
            for fd, _ev in ep.poll(timeout, 4096):
                try:
                    data = socks[fd].recv(65536)  # below malloc's mmap threshold
                except BlockingIOError:
                    continue
                now = time.monotonic_ns()
                buf = tails[fd] + data if tails[fd] else data
                if latency:
                    stop = 0
                    for m in STAMP.finditer(buf):
                        samples.append(now - int(m.group(2)))
                        count += 1
                        stop = m.end()
                    # An unfinished stamp at the end is read with the next chunk.
                    rest = buf[stop:]
                    at = rest.rfind(MARK)
                    tails[fd] = rest[at:] if at >= 0 else rest[-mark_keep:]
                else:
                    # A kept tail is shorter than the marker, so every marker counted here
                    # is a new one.
                    count += buf.count(MARK)
                    tails[fd] = buf[-mark_keep:]
                last_ns = now
        conn.send((count, last_ns, time.process_time() - cpu0, samples))


def publisher_process(
    port: int, path: str, hello: bytes, count: int, rate: float, out: Any
) -> None:
    pin_loadgen()
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        opened = asyncio.Event()
        replies = [0]

        class Pub(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                opened.set()
                replies[0] += data.count(b'"publish":{}')

        t, _ = await loop.create_connection(Pub, "127.0.0.1", port)
        t.write(handshake(port, path))
        await asyncio.wait_for(opened.wait(), 10)
        if hello:
            opened.clear()
            t.write(hello)
            await asyncio.wait_for(opened.wait(), 10)
        centrifuge = bool(hello)
        start = time.monotonic_ns()
        cpu0 = time.process_time()
        for seq in range(count):
            if rate:
                due = start + int(seq * 1e9 / rate)
                delay = (due - time.monotonic_ns()) / 1e9
                if delay > 0:
                    await asyncio.sleep(delay)
            msg = message(seq)
            if centrifuge:
                payload = orjson.dumps(
                    {"id": seq + 2, "publish": {"channel": "bench", "data": msg}}
                )
            else:
                payload = orjson.dumps(msg)
            t.write(client_frame(payload))
            if not rate and seq % 200 == 199:
                await asyncio.sleep(0)
        out.put((start, time.process_time() - cpu0))
        # Leave only once the server has everything: every publish answered (Centrifugo
        # protocol) or every byte sent and a grace period (raw servers answer nothing).
        end = time.monotonic() + 120
        while time.monotonic() < end and (  # noqa: ASYNC110 - bounded poll
            replies[0] < count if centrifuge else t.get_write_buffer_size() > 0
        ):
            await asyncio.sleep(0.01)
        t.close()
        await asyncio.sleep(1.0)

    uvloop.run(main())


# -- the runs --------------------------------------------------------------------------------


@dataclass
class Row:
    server: str
    n: int
    delivered: float = 0.0
    lost: int = 0
    server_cpu: float = 0.0
    loadgen_cpu: float = 0.0
    p50: float = 0.0
    p90: float = 0.0
    rss_per_conn: float | None = None


def pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] / 1e6


@dataclass
class Fleet:
    """One server's subscriber processes for one N."""

    server: Server
    row: Row
    pipes: list[Any]
    workers: list[Any]
    per: list[int]
    samples: list[int]


def hellos(server: Server) -> tuple[bytes, bytes]:
    """The subscribers' and the publisher's first frames (Centrifugo protocol only)."""
    if not server.centrifuge:
        return b"", b""
    connect = client_frame(orjson.dumps({"id": 1, "connect": {"token": admin_token()}}))
    subscribe = client_frame(orjson.dumps({"id": 2, "subscribe": {"channel": "bench"}}))
    return connect + subscribe, connect


def phase(
    ctx: Any, fleet: Fleet, count: int, rate: float, latency: bool, limit: float
) -> tuple[list[Any], int, float]:
    """One publisher run against one server: its subscribers' results, start, server CPU."""
    server = fleet.server
    q = ctx.Queue()
    for a, k in zip(fleet.pipes, fleet.per, strict=True):
        a.send(("measure", count * k, limit, latency))
    cpu0 = sum(server.ps.cpu_times()[:2])
    pub = ctx.Process(
        target=publisher_process,
        args=(server.port, server.pub_path, hellos(server)[1], count, rate, q),
    )
    pub.start()
    start, _pub_cpu = q.get(timeout=120)
    results = [a.recv() for a in fleet.pipes]
    cpu = sum(server.ps.cpu_times()[:2]) - cpu0
    pub.join(10)
    return results, start, cpu


def connect_fleet(ctx: Any, server: Server, n: int, measure_rss: bool) -> Fleet:
    # Pinned, one reader process per load-generator core (while measuring latency it spins,
    # and two spinning on one core would take turns); unpinned, a few that sleep when idle.
    pinned = os.environ.get(PIN_ENV)
    procs = len(pinned.split(",")) if pinned else (2 if n <= 100 else 4)
    per = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    rss0 = server.ps.memory_info().rss
    pipes, workers = [], []
    for k in per:
        a, b = ctx.Pipe()
        p = ctx.Process(
            target=subscriber_process,
            args=(b, server.port, server.sub_path, k, hellos(server)[0]),
        )
        p.start()
        pipes.append(a)
        workers.append(p)
    ready = sum(a.recv()[1] for a in pipes)
    assert ready == n, f"{server.name}: only {ready}/{n} subscribers ready"
    row = Row(server.name, n)
    if measure_rss:
        time.sleep(1.0)
        row.rss_per_conn = (server.ps.memory_info().rss - rss0) / n / 1024
    return Fleet(server, row, pipes, workers, per, [])


def close_fleet(fleet: Fleet) -> None:
    for a in fleet.pipes:
        a.send(("close",))
        a.recv()
    for p in fleet.workers:
        p.join(10)


def run_all(
    names: list[str], ns: list[int], msgs: dict[int, int], lat_seconds: float, rounds: int
) -> list[Row]:
    """Every server runs for the whole bench (idle ones cost nothing); for each N each gets
    its throughput phase alone, then the latency phases take turns in ``rounds`` rounds (the
    order rotating), so that a slow spell of the machine falls on every server alike."""
    ctx = mp.get_context("spawn")
    servers = [s for s in (start_server(name) for name in names) if s is not None]
    rows: list[Row] = []
    try:
        for n in ns:
            fleets = [connect_fleet(ctx, s, n, n == max(ns)) for s in servers]
            time.sleep(0.5)
            for f in fleets:
                m = msgs[n]
                results, start, srv_cpu_s = phase(ctx, f, m, 0.0, False, 60.0)
                row = f.row
                total = sum(r[0] for r in results)
                elapsed = (max(r[1] for r in results) - start) / 1e9
                row.delivered = total / elapsed if elapsed > 0 else 0.0
                row.lost = m * n - total
                # CPU seconds over the active window (first send to last receipt).
                row.server_cpu = srv_cpu_s / elapsed if elapsed > 0 else 0.0
                row.loadgen_cpu = sum(r[2] for r in results) / elapsed
            rate = 10_000 / n
            each = lat_seconds / rounds
            for r in range(rounds):
                for f in fleets[r % len(fleets) :] + fleets[: r % len(fleets)]:
                    results, _, _ = phase(ctx, f, int(rate * each), rate, True, each + 10)
                    f.samples += [s for res in results for s in res[3]]
            for f in fleets:
                f.row.p50, f.row.p90 = pct(f.samples, 0.5), pct(f.samples, 0.9)
                close_fleet(f)
                rows.append(f.row)
                print(
                    f"  {f.row.server:10} N={n:<5} delivered/s={f.row.delivered:>11,.0f} "
                    f"lost={f.row.lost} p50={f.row.p50:.2f}ms p90={f.row.p90:.2f}ms",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for s in servers:
            s.stop()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="fewer messages (a smoke run)")
    ap.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=(os.cpu_count() or 1) >= 2,
        help="servers on CPU 0, load generator on the others (default on with 2+ CPUs)",
    )
    ap.add_argument("--servers", default="sessionhub,websockets,node")
    ap.add_argument(
        "--rounds", type=int, default=5, help="latency phases per server, taken in turns"
    )
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin and len(cpus) >= 2:
        # Inherited by the spawned subscriber and publisher processes.
        os.environ[PIN_ENV] = ",".join(str(c) for c in cpus if c != 0) or "0"
    ns = [100, 1000]
    msgs = {100: 3000, 1000: 400} if args.quick else {100: 10000, 1000: 1500}
    lat_seconds = 3.0 if args.quick else 10.0
    rows = run_all(args.servers.split(","), ns, msgs, lat_seconds, args.rounds)
    node = {r.n: r for r in rows if r.server == "node"}
    print()
    print(
        f"fan-out, ~300-byte messages, {os.cpu_count()} cores"
        + (
            "; servers pinned to CPU 0, load generator to the rest"
            if os.environ.get(PIN_ENV)
            else ""
        )
        + "; latency at 10,000 deliveries/s offered"
    )
    print(
        "| server | N | delivered msg/s | × Node ws | lost | server CPU | load-gen CPU "
        "| p50 ms | × Node p50 | p90 ms | RSS/idle conn |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ref = node.get(r.n)
        ratio = f"{r.delivered / ref.delivered:.2f}" if ref and ref.delivered else "-"
        pratio = f"{r.p50 / ref.p50:.2f}" if ref and ref.p50 else "-"
        rss = f"{r.rss_per_conn:.1f} KiB" if r.rss_per_conn is not None else ""
        print(
            f"| {r.server} | {r.n} | {r.delivered:,.0f} | {ratio} | {r.lost} | {r.server_cpu:.0%} "
            f"| {r.loadgen_cpu:.0%} | {r.p50:.2f} | {pratio} | {r.p90:.2f} | {rss} |"
        )


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_serve":
        if sys.argv[2] == "sessionhub":
            serve_sessionhub(int(sys.argv[3]), sys.argv[4])
        else:
            serve_websockets(int(sys.argv[3]))
    else:
        main()
