"""Rooms benchmark (seed 003): players moving in rooms, sessionhub against the upstream stack.

Workloads, each player sending ``world:b:move`` 20 times a second (staggered), every move
relayed to the others in its room (the upstream semantics):

* **1 room x 200 players**: 4,000 moves/s in, 796,000 deliveries/s offered;
* **50 rooms x 4 players**: 4,000 moves/s in, 12,000 deliveries/s offered.

Servers, started for the whole run: sessionhub as ``sessionhub serve`` runs it (uvicorn, the
native realtime engine, the room socket ``/room/{slug}``) and a minimal Node ``ws`` relay
written below with the upstream server's logic (``session.mjs``: ``connected``/``joined``,
worlds, "others"), given rooms by path so the workload is the same. Measured per run:
moves delivered per second (received by all players / the send window), the share of the
offered deliveries that arrived within the window plus a 1 s drain, p50/p99 latency from
a ``CLOCK_MONOTONIC`` stamp in each move (sampled on a few players), and the server's and
the load generator's CPU over the send window (share of one core).

Then the data-channel path (sessionhub only): 2, 8 and 32 aiortc peers in one room, each
sending ``fairy:point`` (relayed to the others) 20 times a second over geckos.io-compatible
WebRTC data channels; delivered/s, loss, latency and CPU. The peers are Python (aiortc) too,
in one load-generator process.

With ``--pin`` (default on 2+ cores) the servers share CPU 0 and the load generators the
others. Usage: ``python bench/rooms.py [--quick] [--seconds S] [--servers sessionhub,node]
[--no-datachannels]``. Needs ``node`` and ``npm install`` (``ws``) for the Node column and
``aiortc`` for the data channels.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import multiprocessing as mp
import os
import re
import select
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
PIN_ENV = "ROOMS_LOADGEN_CPUS"
MOVE = b':move"'
STAMP = re.compile(rb'"t":(\d+)\}')
HZ = 20.0

NODE_RELAY = r"""
// The upstream session server's room logic (session.mjs), with rooms by path.
const { WebSocketServer } = require('ws');
const port = Number(process.argv[2]);
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false, backlog: 4096 });
const rooms = new Map();
let next = 0;
const pack = (type, content, id) => JSON.stringify({ type, content, id });
wss.on('connection', (ws, req) => {
  let room = rooms.get(req.url);
  if (!room) rooms.set(req.url, (room = { clients: new Set(), worlds: {} }));
  const id = next++;
  room.clients.add(ws);
  const others = (s) => { for (const c of room.clients) if (c !== ws && c.readyState === 1) c.send(s); };
  const everyone = (s) => { for (const c of room.clients) if (c.readyState === 1) c.send(s); };
  ws.send(pack('connected', JSON.stringify({ ip: req.socket.remoteAddress, playerCount: room.clients.size, id }), id));
  others(pack('joined', JSON.stringify({ text: `${id} has joined. Connections open: ${room.clients.size}` }), id));
  ws.on('message', (data) => {
    let msg;
    try { msg = JSON.parse(data.toString()); } catch { return; }
    msg.id = id;
    if (typeof msg.type === 'string' && msg.type.startsWith('world:')) {
      const parts = msg.type.split(':');
      const piece = parts[1];
      const label = parts.pop();
      const world = room.worlds[piece] || (room.worlds[piece] = {});
      if (label === 'join') {
        world[id] = { ...msg.content };
        ws.send(pack(`world:${piece}:list`, world, id));
        others(JSON.stringify(msg));
        return;
      }
      if (label === 'move' && world[id]) world[id].pos = msg.content.pos;
      if (label === 'write') everyone(JSON.stringify(msg)); else others(JSON.stringify(msg));
      return;
    }
    everyone(JSON.stringify(msg));
  });
  ws.on('close', () => {
    room.clients.delete(ws);
    for (const w of Object.values(room.worlds)) delete w[id];
    everyone(pack('left', { count: room.clients.size }, id));
  });
});
wss.on('listening', () => console.log('ready'));
"""


# -- WebSocket plumbing of the load generator --------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def client_frame(payload: bytes) -> bytes:
    """One masked text frame, as a browser sends it."""
    from websockets.speedups import apply_mask

    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x81, 0x80 | n))
    elif n < 65536:
        head = bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + mask + bytes(apply_mask(payload, mask))


def handshake(port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


# -- servers ---------------------------------------------------------------------------------


def serve_sessionhub(port: int, data_dir: str) -> None:
    import uvicorn

    from sessionhub.server.app import create_app
    from sessionhub.server.compat import aesthetic, geckos
    from sessionhub.server.runtime import build_runtime
    from sessionhub.server.serving import uvicorn_config
    from sessionhub.settings import Settings

    settings = Settings(
        data_dir=Path(data_dir), jwt_secret=SECRET, ping_interval=3600.0, log_level="warning"
    )
    # Like the Node relay (which cuts nobody off), let a backlog grow instead of closing
    # players that fall behind (3008): the point is to see where the server saturates.
    settings.extra["realtime_queue_bytes"] = 1 << 30
    settings.extra["rooms_ice_addresses"] = "127.0.0.1"
    # Every player of the bench comes from 127.0.0.1: 50 rooms from one address is the
    # load generator, not an abuse.
    settings.extra["rooms_rooms_per_address"] = 10_000
    settings.extra["realtime_max_per_address"] = 100_000
    settings.extra["rooms_peers_per_address"] = 1000
    runtime = build_runtime(settings)
    rooms = aesthetic.install(runtime)  # what the runtime will do once it is wired

    async def report() -> None:  # the server's own counters, read by the bench at the end
        stats = {"rooms": rooms.service.stats(), "datagrams": rooms.datagrams.stats()}
        print("stats " + orjson.dumps(stats).decode(), flush=True)

    runtime.on_close.insert(0, report)  # closing runs in reverse: last, after the rooms
    app = create_app(settings, runtime=runtime)
    app.include_router(aesthetic.router)
    app.include_router(geckos.router)
    config = uvicorn_config(app, settings, host="127.0.0.1", port=port, backlog=4096)
    print("ready", flush=True)
    uvicorn.Server(config).run()


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    tmp: str

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def cpu(self) -> float:
        return float(sum(self.ps.cpu_times()[:2]))

    def stop(self) -> str:
        """Stop it; what it printed after \"ready\" (sessionhub: its counters)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out = b""
        shutil.rmtree(self.tmp, ignore_errors=True)
        return out.decode(errors="replace")


def start_server(name: str) -> Server | None:
    port = free_port()
    tmp = tempfile.mkdtemp(prefix=f"bench-rooms-{name}-")
    if name == "sessionhub":
        cmd = [sys.executable, __file__, "_serve", str(port), tmp]
    else:
        node = shutil.which("node")
        if node is None or not (ROOT / "node_modules" / "ws").exists():
            print("node or node_modules/ws missing: skipping the Node column", file=sys.stderr)
            return None
        script = Path(tmp) / "relay.js"
        script.write_text(NODE_RELAY)
        cmd = [node, str(script), str(port)]
    env = {**os.environ, "NODE_PATH": str(ROOT / "node_modules")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, cwd=ROOT)
    assert proc.stdout is not None
    if b"ready" not in proc.stdout.readline():
        raise RuntimeError(f"{name} did not start")
    if os.environ.get(PIN_ENV):
        for tid in os.listdir(f"/proc/{proc.pid}/task"):
            os.sched_setaffinity(int(tid), {0})
    for _ in range(200):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            break
        time.sleep(0.05)
    return Server(name, proc, port, tmp)


def pin_loadgen() -> None:
    cpus = os.environ.get(PIN_ENV)
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})


# -- the WebSocket load generator ------------------------------------------------------------


def frame_of(type_: str, content: Any) -> bytes:
    return client_frame(orjson.dumps({"type": type_, "content": content}))


def players_process(
    conn: Any, port: int, rooms: int, per_room: int, seconds: float, sampled: int
) -> None:
    """Every player of a run in one epoll loop: connect, join, then move at 20 Hz while
    counting the moves that arrive (a stamp regex on the ``sampled`` first players)."""
    pin_loadgen()
    socks: list[socket.socket] = []
    for r in range(rooms):
        for _ in range(per_room):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(handshake(port, f"/room/bench-{r}"))
            seen = b""
            while b'"connected"' not in seen:
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("closed while connecting")
                seen += chunk
            s.sendall(frame_of("world:b:join", {"handle": f"p{len(socks)}", "pos": {"x": 0}}))
            socks.append(s)
    for s in socks:
        # Reads happen when epoll says so; a send waits for room instead of half-writing
        # a frame into a full buffer.
        s.settimeout(10.0)
    ep = select.epoll()
    by_fd = {s.fileno(): i for i, s in enumerate(socks)}
    for s in socks:
        ep.register(s.fileno(), select.EPOLLIN)

    def drain(until: float, count: bool, stats: dict[str, Any]) -> None:
        while time.monotonic() < until:
            for fd, _ in ep.poll(max(0.0, min(0.005, until - time.monotonic())), 4096):
                data = socks[by_fd[fd]].recv(1 << 16)
                if not count:
                    continue
                i = by_fd[fd]
                buf = stats["tails"][i] + data
                if i < sampled:
                    now, stop = time.monotonic_ns(), 0
                    for m in STAMP.finditer(buf):
                        stats["samples"].append(now - int(m.group(1)))
                        stop = m.end()
                    stats["tails"][i] = buf[stop:][-64:]
                # The markers in this read, and one split across it and the previous read
                # (5 bytes on each side of the boundary can only hold a split one).
                stats["got"] += data.count(MOVE) + (stats["edge"][i] + data[:5]).count(MOVE)
                stats["edge"][i] = data[-5:]

    idle: dict[str, Any] = {
        "got": 0,
        "samples": [],
        "tails": [b""] * len(socks),
        "edge": [b""] * len(socks),
    }
    drain(time.monotonic() + 1.5, False, idle)  # joins, lists, the others' joined
    conn.send(("ready", len(socks)))
    assert conn.recv() == "go"
    stats: dict[str, Any] = {
        "got": 0,
        "samples": [],
        "tails": [b""] * len(socks),
        "edge": [b""] * len(socks),
    }
    n = len(socks)
    period = 1.0 / HZ
    start = time.monotonic()
    cpu0 = time.process_time()
    due = [start + period * i / n for i in range(n)]
    sent = 0
    end = start + seconds
    while time.monotonic() < end:
        now = time.monotonic()
        for i in range(n):
            if due[i] <= now:
                move = {"pos": {"x": sent % 640, "y": i}, "t": time.monotonic_ns()}
                socks[i].sendall(frame_of("world:b:move", move))
                sent += 1
                due[i] += period
        drain(min(due) if due else now + 0.005, True, stats)
    window = time.monotonic() - start
    cpu = time.process_time() - cpu0
    conn.send(("sent",))  # the server's CPU is read over the send window
    drain(time.monotonic() + 1.0, True, stats)  # what was still on its way
    conn.send((sent, stats["got"], window, cpu, stats["samples"]))
    for s in socks:
        s.close()


@dataclass
class Row:
    workload: str
    server: str
    offered: float
    sent: int = 0
    delivered_per_s: float = 0.0
    arrived: float = 0.0
    p50: float = 0.0
    p99: float = 0.0
    server_cpu: float = 0.0
    loadgen_cpu: float = 0.0


def recv(pipe: Any, proc: Any, wait: float = 120.0) -> Any:
    """The load generator's next answer (bounded: a generator that died fails the run)."""
    deadline = time.monotonic() + wait
    while not pipe.poll(0.5):
        if not proc.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the load generator stopped without an answer")
    return pipe.recv()


def pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] / 1e6


def run_rooms(ctx: Any, server: Server, rooms: int, per_room: int, seconds: float) -> Row:
    a, b = ctx.Pipe()
    proc = ctx.Process(
        target=players_process,
        args=(b, server.port, rooms, per_room, seconds, min(6, per_room * rooms)),
    )
    proc.start()
    _, n = recv(a, proc)
    cpu0 = server.cpu()
    t0 = time.monotonic()
    a.send("go")
    recv(a, proc)
    server_cpu = (server.cpu() - cpu0) / (time.monotonic() - t0)
    sent, got, window, lg_cpu, samples = recv(a, proc)
    proc.join(20)
    others = per_room - 1
    row = Row(f"{rooms} x {per_room}", server.name, HZ * n * others)
    row.sent = sent
    row.delivered_per_s = got / window
    row.arrived = got / (sent * others) if sent else 0.0
    row.p50, row.p99 = pct(samples, 0.5), pct(samples, 0.99)
    row.server_cpu = server_cpu
    row.loadgen_cpu = lg_cpu / window
    return row


# -- the data-channel load generator ---------------------------------------------------------


def peers_process(conn: Any, port: int, n: int, seconds: float) -> None:
    """``n`` aiortc peers in one room, each sending ``fairy:point`` at 20 Hz."""
    pin_loadgen()
    import httpx
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from sessionhub.relay.datagrams import gather_on

    async def main() -> None:
        base = f"http://127.0.0.1:{port}/room/dc-{n}/.wrtc/v2"
        peers: list[tuple[Any, Any, str]] = []
        stats = {"got": 0, "samples": []}
        opened: list[asyncio.Event] = []

        async with httpx.AsyncClient(timeout=20) as http:
            for _ in range(n):
                offer = (await http.post(f"{base}/connections")).json()
                pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                ready = asyncio.Event()
                holder: dict[str, Any] = {}

                @pc.on("datachannel")  # type: ignore[untyped-decorator]
                def on_dc(
                    ch: Any, holder: dict[str, Any] = holder, ready: asyncio.Event = ready
                ) -> None:
                    holder["ch"] = ch

                    @ch.on("message")  # type: ignore[untyped-decorator]
                    def on_msg(message: str | bytes) -> None:
                        text = message if isinstance(message, str) else message.decode()
                        stats["got"] += 1
                        m = STAMP.search(text.encode())
                        if m:
                            stats["samples"].append(time.monotonic_ns() - int(m.group(1)))

                    ready.set()

                await pc.setRemoteDescription(RTCSessionDescription(**offer["localDescription"]))
                with gather_on(("127.0.0.1",)):
                    await pc.setLocalDescription(await pc.createAnswer())
                local = pc.localDescription
                await http.post(
                    f"{base}/connections/{offer['id']}/remote-description",
                    json={"type": local.type, "sdp": local.sdp},
                )
                peers.append((pc, holder, offer["id"]))
                opened.append(ready)
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in opened)), 30)
            await asyncio.sleep(0.5)
            conn.send(("ready", n))
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            stats["got"], stats["samples"] = 0, []
            start, cpu0, sent = time.monotonic(), time.process_time(), 0
            period = 1.0 / HZ
            tick = 0
            while time.monotonic() - start < seconds:
                for i, (_, holder, _id) in enumerate(peers):
                    point = {"x": i / n, "y": tick % 100 / 100, "t": time.monotonic_ns()}
                    holder["ch"].send(orjson.dumps({"fairy:point": point}).decode())
                    sent += 1
                tick += 1
                await asyncio.sleep(max(0.0, start + tick * period - time.monotonic()))
            window = time.monotonic() - start
            cpu = time.process_time() - cpu0
            conn.send(("sent",))
            await asyncio.sleep(1.0)
            conn.send((sent, stats["got"], window, cpu, stats["samples"]))
            for pc, _, pid in peers:  # as the geckos client's close() does
                await http.post(f"{base}/connections/{pid}/close")
                await pc.close()

    asyncio.run(main())


def run_datachannels(ctx: Any, server: Server, n: int, seconds: float) -> Row:
    a, b = ctx.Pipe()
    proc = ctx.Process(target=peers_process, args=(b, server.port, n, seconds))
    proc.start()
    recv(a, proc)
    cpu0, t0 = server.cpu(), time.monotonic()
    a.send("go")
    recv(a, proc)
    server_cpu = (server.cpu() - cpu0) / (time.monotonic() - t0)
    sent, got, window, lg_cpu, samples = recv(a, proc)
    proc.join(30)
    row = Row(f"data channels, {n} peers", server.name, HZ * n * (n - 1))
    row.sent, row.delivered_per_s = sent, got / window
    row.arrived = got / (sent * (n - 1)) if sent else 0.0
    row.p50, row.p99 = pct(samples, 0.5), pct(samples, 0.99)
    row.server_cpu, row.loadgen_cpu = server_cpu, lg_cpu / window
    return row


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    ap.add_argument("--seconds", type=float, default=0.0, help="length of each run")
    ap.add_argument("--servers", default="sessionhub,node")
    ap.add_argument("--datachannels", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument(
        "--pin", action=argparse.BooleanOptionalAction, default=(os.cpu_count() or 1) >= 2
    )
    args = ap.parse_args()
    seconds = args.seconds or (2.0 if args.quick else 6.0)
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin and len(cpus) >= 2:
        os.environ[PIN_ENV] = ",".join(str(c) for c in cpus if c != 0)
    ctx = mp.get_context("spawn")
    servers = [s for s in (start_server(name) for name in args.servers.split(",")) if s]
    rows: list[Row] = []
    try:
        for rooms, per_room in ((1, 200), (50, 4)):
            for server in servers:
                row = run_rooms(ctx, server, rooms, per_room, seconds)
                rows.append(row)
                print(
                    f"  {row.workload:8} {row.server:10} {row.delivered_per_s:>10,.0f}/s "
                    f"arrived={row.arrived:.1%} p50={row.p50:.1f}ms p99={row.p99:.1f}ms "
                    f"cpu={row.server_cpu:.0%}",
                    file=sys.stderr,
                    flush=True,
                )
                time.sleep(1.0)
        sh = next((s for s in servers if s.name == "sessionhub"), None)
        if args.datachannels and sh is not None:
            try:
                import aiortc  # noqa: F401
            except ImportError:
                print("aiortc missing: skipping the data channels", file=sys.stderr)
            else:
                for n in (2, 8, 32):
                    row = run_datachannels(ctx, sh, n, seconds)
                    rows.append(row)
                    print(
                        f"  {row.workload} {row.delivered_per_s:,.0f}/s arrived={row.arrived:.1%}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        notes = [
            f"{s.name}: {line[6:]}"
            for s in servers
            for line in s.stop().splitlines()
            if line.startswith("stats ")
        ]
    print()
    print(
        f"rooms: each player moving {HZ:.0f}x/s, {seconds:.0f} s per run, {os.cpu_count()} cores"
        + (
            "; servers pinned to CPU 0, load generator to the rest"
            if os.environ.get(PIN_ENV)
            else ""
        )
    )
    print(
        "| workload | server | offered deliveries/s | delivered/s | arrived | p50 ms | p99 ms | server CPU | load-gen CPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.workload} | {r.server} | {r.offered:,.0f} | {r.delivered_per_s:,.0f} | {r.arrived:.1%} "
            f"| {r.p50:.1f} | {r.p99:.1f} | {r.server_cpu:.0%} | {r.loadgen_cpu:.0%} |"
        )
    for note in notes:
        print(f"\nserver counters, {note}")


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "_serve":
        serve_sessionhub(int(sys.argv[2]), sys.argv[3])
    else:
        main()
