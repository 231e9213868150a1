"""Fan-out benchmark: one publisher, N subscribers, ~300-byte messages, one table.

Compares, in the same run on the same machine, sessionhub's realtime endpoint (``sessionhub
serve`` as users run it, the Centrifugo JSON protocol on ``/connection/websocket``) with
broadcast servers that speak plain WebSocket: uWebSockets (C++, the npm package
``@trufflesuite/uws-js-unofficial``, its pub/sub), picows (frame once, coalesced writes), Node
``ws`` and Python ``websockets``. Every server runs pinned to CPU 0 (``--pin``, the default on
2+ cores), the load generator on the other CPUs.

The load generator is ``bench/loadgen.c``, compiled here with ``cc -O2`` into a temporary
directory: one epoll thread per (server, N) holding N subscriber connections and the
publisher, counting messages by the marker in each frame, checking every subscriber's
sequence numbers (a lost or duplicated message is counted, never hidden) and measuring
publish-to-receive latency from a CLOCK_MONOTONIC stamp in each message. It reports its own
CPU time, so the table shows whether it, and not the server, was the limit. For each
server and N in (100, 1000), in ``--rounds`` rounds whose server order rotates:

* ``burst``: M messages published as fast as the server takes them (delivered/s =
  deliveries / (last receipt - first send));
* ``window``: a closed loop with at most W messages in flight (W = 32 for N = 100, 8 for
  N = 1000), a message being done when every subscriber has it: a server cannot win by
  batching one huge burst;
* ``rate``: an offered load of 40 publications/s (40,000 deliveries/s at N = 1000, 4,000 at
  N = 100) for the p50/p99 latency; the generator polls without sleeping here, so a wake-up
  of its own is not counted against the server.

Besides: server CPU per delivery (CPU time of the server process over the phase / deliveries),
the server's CPU share and the generator's, KiB of server RSS per idle subscribed connection
(measured first, on a server that has carried no traffic, 100 then 1000 subscribers), and
the base RSS of the server process before any connection. The table shows medians over the
rounds. Each phase also records what else ran on the machine: CPU time of other processes,
and how long the server and the generator waited for a CPU (``/proc/PID/task/*/schedstat``);
a phase above 5 % is flagged, and the summary says whether the machine was quiet enough to
quote. A message not received 3 s after a phase's last delivery counts as lost there (and
as a late arrival when it turns up in a later phase). ``--check`` tests the generator itself against the trivial C broadcast server in
``loadgen.c`` (counts, sequence checks with injected drops and duplicates, latency with an
injected delay) and reports its ceiling on this machine. Usage::

    .venv/bin/python bench/fanout.py [--quick] [--rounds 3] [--servers a,b] [--json out.json]
    .venv/bin/python bench/fanout.py --check

Needs ``cc``; ``node`` with ``npm install`` (package.json: ``ws``, ``@trufflesuite/uws-js-
unofficial``) for the Node and uWebSockets columns, ``pip install picows`` for picows; a
column whose server cannot start is skipped with the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
SECRET = "bench-secret-0123456789abcdef0123456789"
CHANNEL = "bench"
PAD = 240  # brings a message to ~300 bytes on the wire
ALL_SERVERS = ("sessionhub", "uws", "picows", "node", "websockets")
LABEL = {
    "sessionhub": "sessionhub",
    "uws": "uWebSockets.js",
    "picows": "picows",
    "node": "Node ws",
    "websockets": "websockets",
    "cserver": "C broadcast (check)",
}
WINDOW = {100: 32, 1000: 8}

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

# The package falls back to a pure-JS emulation (on top of `ws`) when its binary does not
# load, silently but for a warning; the bench loads the binary itself so that the column is
# uWebSockets or nothing.
UWS_SERVER = r"""
const path = require('path');
let uWS;
try {
  const dir = path.dirname(require.resolve('@trufflesuite/uws-js-unofficial/package.json'));
  uWS = require(path.join(dir, 'binaries',
    `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`));
} catch (e) {
  console.log('unavailable: ' + String(e.message).split('\n')[0]);
  process.exit(3);
}
const port = Number(process.argv[2]);
const app = uWS.App();
app.ws('/*', {
  compression: uWS.DISABLED,
  maxPayloadLength: 16 * 1024 * 1024,
  idleTimeout: 0,
  sendPingsAutomatically: false,
  // Like the other servers, never skip or drop a slow subscriber.
  maxBackpressure: 1024 * 1024 * 1024,
  closeOnBackpressureLimit: false,
  upgrade: (res, req, context) => {
    res.upgrade({ pub: req.getUrl().startsWith('/pub') },
      req.getHeader('sec-websocket-key'), req.getHeader('sec-websocket-protocol'),
      req.getHeader('sec-websocket-extensions'), context);
  },
  open: (ws) => { if (!ws.getUserData().pub) ws.subscribe('bench'); },
  message: (ws, message, isBinary) => {
    if (ws.getUserData().pub) app.publish('bench', message, isBinary);
  },
});
app.listen('127.0.0.1', port, (token) => {
  if (token) console.log('ready'); else { console.log('unavailable: listen failed'); process.exit(1); }
});
"""


# -- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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


def ws_server_frame(payload: bytes) -> bytes:
    """An unmasked text frame (FIN set) around ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


def serve_picows(port: int) -> None:
    """picows, frame once + coalesced writes: every message read in one event-loop turn is
    framed once and the lot goes to each subscriber in one write."""
    try:
        import picows
        import uvloop
    except ImportError as exc:
        print(f"unavailable: {exc} (pip install picows)", flush=True)
        sys.exit(3)

    subs: dict[Any, Any] = {}
    pending: list[bytes] = []
    loop_box: list[asyncio.AbstractEventLoop] = []

    def flush() -> None:
        data = b"".join(pending)
        pending.clear()
        for raw in subs.values():
            raw.write(data)

    class Sub(picows.WSListener):
        def on_ws_connected(self, transport: Any) -> None:
            raw = transport.underlying_transport
            sock = raw.get_extra_info("socket")
            if sock is not None:  # as every other server here does: no Nagle delay
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            subs[transport] = raw

        def on_ws_disconnected(self, transport: Any) -> None:
            subs.pop(transport, None)

    class Pub(picows.WSListener):
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type in (picows.WSMsgType.TEXT, picows.WSMsgType.BINARY):
                if not pending:
                    loop_box[0].call_soon(flush)
                pending.append(ws_server_frame(frame.get_payload_as_bytes()))
            elif frame.msg_type == picows.WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()

    def factory(request: Any) -> Any:
        path = request.path if isinstance(request.path, str) else request.path.decode()
        return Pub() if path.startswith("/pub") else Sub()

    async def main() -> None:
        loop_box.append(asyncio.get_running_loop())
        server = await picows.ws_create_server(factory, "127.0.0.1", port, backlog=4096)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    sub_path: str
    pub_path: str
    proto: str
    tmp: str
    base_rss: int = 0

    @property
    def log(self) -> Path:
        return Path(self.tmp) / "server.log"

    def log_tail(self, limit: int = 600) -> str:
        try:
            text = self.log.read_text(errors="replace").strip()
        except OSError:
            return ""
        return text[-limit:]

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def stop(self) -> str:
        """Stops the server; what it printed (its log)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                # A pinned process on a starved CPU can take a while even to die.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(60)
        out = self.log_tail(1 << 20)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return out


#: With --pin, every server runs on CPU 0 and the load generator on the other CPUs.
SERVER_CPUS: set[int] | None = None
LOADGEN_CPUS: set[int] | None = None


def child_setup(cpus: set[int] | None) -> Callable[[], None]:
    """A preexec_fn: pin the child (and so every thread it starts) and make it die with us."""

    def setup() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return setup


def listening(pid: int, port: int) -> bool:
    """Whether ``pid`` listens on ``port``, asked of the kernel (not by connecting: the base
    RSS is measured before any connection)."""
    with contextlib.suppress(psutil.Error):
        for c in psutil.Process(pid).net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
                return True
    return False


def sessionhub_command() -> list[str]:
    exe = Path(sys.executable).parent / "sessionhub"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "sessionhub.cli"]


def start_server(name: str, loadgen: Path | None = None, extra: list[str] | None = None) -> Server:
    """Starts one server pinned to CPU 0 and waits until it listens. Raises ``Unavailable``
    (with the reason) when it cannot run here."""
    port = free_port()
    env = {**os.environ, "NODE_PATH": str(ROOT / "node_modules")}
    sub, pub, proto = "/sub", "/pub", "plain"
    if name in ("node", "uws"):
        node = shutil.which("node")
        pkg = "ws" if name == "node" else "@trufflesuite/uws-js-unofficial"
        if node is None:
            raise Unavailable("node is not installed")
        if not (ROOT / "node_modules" / pkg).exists():
            raise Unavailable(f"node_modules/{pkg} is missing (run npm install)")
    tmp = tempfile.mkdtemp(prefix=f"bench-{name}-")
    if name == "sessionhub":
        cmd = [*sessionhub_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--data-dir", str(Path(tmp) / "data"), "--log-level", "warning"]
        env.update(
            SESSIONHUB_JWT_SECRET=SECRET,
            SESSIONHUB_REALTIME_PUBLISH_TOPICS=CHANNEL,
            # The burst offers more than a reader may keep up with; like the peers (which
            # never cut anyone off) let queues grow instead of dropping slow readers (3008).
            SESSIONHUB_REALTIME_QUEUE_BYTES=str(1 << 30),
        )
        sub = pub = "/connection/websocket"
        proto = "centrifugo"
    elif name == "websockets":
        cmd = [sys.executable, __file__, "_serve", "websockets", str(port)]
    elif name == "picows":
        cmd = [sys.executable, __file__, "_serve", "picows", str(port)]
    elif name == "cserver":
        assert loadgen is not None
        cmd = [str(loadgen), "serve", "--port", str(port), *(extra or [])]
    elif name in ("node", "uws"):
        script = Path(tmp) / "server.js"
        script.write_text(NODE_SERVER if name == "node" else UWS_SERVER)
        cmd = [str(shutil.which("node")), str(script), str(port)]
        # Node ws as it was measured before (the optional native helpers now sit in
        # node_modules as dependencies of the uWebSockets package).
        env.update(WS_NO_BUFFER_UTIL="1", WS_NO_UTF_8_VALIDATE="1")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
        raise Unavailable(f"unknown server {name!r}")
    # Output to a file, never a pipe nobody reads (a full pipe would stall the server).
    with (Path(tmp) / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            preexec_fn=child_setup(SERVER_CPUS),
        )
    server = Server(name, proc, port, sub, pub, proto, tmp)
    try:
        end = time.monotonic() + 60
        while not listening(proc.pid, port):
            if proc.poll() is not None or time.monotonic() > end:
                proc.poll()
                why = server.log_tail() or f"exit code {proc.returncode}"
                raise Unavailable(f"did not start: {why}")
            time.sleep(0.05)
        time.sleep(1.0)  # settle before the base RSS
        server.base_rss = server.rss()
    except BaseException:
        server.stop()
        raise
    return server


class Unavailable(Exception):
    """A server that cannot run on this machine (the reason is the message)."""


def admin_token() -> str:
    from datetime import timedelta

    from sessionhub.auth import Authenticator

    return Authenticator(secret=SECRET).issue("bench", ["admin"], ttl=timedelta(hours=24))


# -- the load generator ----------------------------------------------------------------------


def compile_loadgen(tmp: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("cc not found: the load generator is a C program (apt-get install gcc)")
    exe = tmp / "loadgen"
    subprocess.run(
        [cc, "-O2", "-Wall", "-Wextra", "-o", str(exe), str(HERE / "loadgen.c")], check=True
    )
    return exe


#: Above this (cores used by others, or share of a phase spent waiting for a CPU) a phase
#: is flagged: the machine was not quiet.
BUSY = 0.05


def sched_wait(pid: int) -> float:
    """Seconds the threads of ``pid`` have spent runnable but waiting for a CPU."""
    total = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
    return total / 1e9


def busy_cpu() -> float:
    """CPU seconds the whole machine has been busy (steal included: a neighbour's work)."""
    t = psutil.cpu_times()
    return float(
        t.user
        + t.nice
        + t.system
        + getattr(t, "irq", 0)
        + getattr(t, "softirq", 0)
        + getattr(t, "steal", 0)
    )


class Fleet:
    """One load-generator process: N subscribers and the publisher on one server."""

    def __init__(self, exe: Path, server: Server, n: int, token: str) -> None:
        self.server, self.n = server, n
        cmd = [str(exe), "client", "--port", str(server.port), "--n", str(n)]
        cmd += ["--proto", server.proto, "--sub-path", server.sub_path]
        cmd += ["--pub-path", server.pub_path, "--channel", CHANNEL, "--pad", str(PAD)]
        if server.proto == "centrifugo":
            cmd += ["--token", token]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            preexec_fn=child_setup(LOADGEN_CPUS),
        )
        self._buf = b""
        ready = self.read(180)
        if ready.get("event") != "ready":
            self.close()
            raise RuntimeError(f"{server.name} N={n}: load generator not ready: {ready}")

    def read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.server.name}: no answer from the load generator")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"{self.server.name}: the load generator exited")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        result: dict[str, Any] = orjson.loads(line)
        return result

    def run(self, command: str, timeout: float) -> dict[str, Any]:
        """One phase; its result with the server's CPU time over it."""
        assert self.proc.stdin is not None
        me = psutil.Process()
        pids = (self.server.proc.pid, self.proc.pid)
        cpu0, busy0, own0 = self.server.cpu(), busy_cpu(), sum(me.cpu_times()[:2])
        waits0 = [sched_wait(p) for p in pids]
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        result = self.read(timeout)
        if result.get("event") != "result":
            raise RuntimeError(f"{self.server.name}: {command!r} failed: {result}")
        wall = max(float(result["wall_s"]), 1e-9)
        result["server_cpu_s"] = self.server.cpu() - cpu0
        # What else ran on the machine meanwhile (other people's work on a shared box):
        # busy CPU time beyond the server's, the generator's and this script's, in cores;
        # and how long the server and the generator waited on a run queue for a CPU.
        other = busy_cpu() - busy0 - result["server_cpu_s"] - result["lg_cpu_s"]
        other -= sum(me.cpu_times()[:2]) - own0
        result["other_cores"] = max(0.0, other) / wall
        result["waits"] = [(sched_wait(p) - w0) / wall for p, w0 in zip(pids, waits0, strict=True)]
        return result

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(60)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -- the runs --------------------------------------------------------------------------------


@dataclass
class Plan:
    ns: list[int]
    modes: list[str]
    burst: dict[int, int]  # messages per burst
    seconds: float  # window and rate phases
    lat_pubs: float  # publications/s in the rate phase
    rounds: int

    def command(self, mode: str, n: int) -> tuple[str, float]:
        """The load generator's command for one phase, and how long to wait for it."""
        if mode == "burst":
            return f"burst {self.burst[n]} 120", 150.0
        if mode == "window":
            return (
                f"window {WINDOW.get(n, 8)} {self.seconds} {self.seconds + 60}",
                90 + self.seconds,
            )
        return f"rate {self.lat_pubs} {self.seconds} {self.seconds + 60} 1", 90 + self.seconds


@dataclass
class Cell:
    """One (server, N, mode): the results of every round."""

    server: str
    n: int
    mode: str
    results: list[dict[str, Any]] = field(default_factory=list)

    def med(self, key: str) -> float:
        values = [float(r[key]) for r in self.results if r.get(key) is not None]
        return statistics.median(values) if values else float("nan")

    def delivered(self) -> float:
        return self.med("delivered_per_s")

    def us_per_delivery(self) -> float:
        values = [
            r["server_cpu_s"] * 1e6 / r["deliveries"] for r in self.results if r["deliveries"]
        ]
        return statistics.median(values) if values else float("nan")

    def server_share(self) -> float:
        values = [r["server_cpu_s"] / r["wall_s"] for r in self.results if r["wall_s"]]
        return statistics.median(values) if values else float("nan")

    def total(self, key: str) -> int:
        return sum(int(r[key]) for r in self.results)


@dataclass
class Memory:
    base_rss: dict[str, int] = field(default_factory=dict)
    per_conn: dict[tuple[str, int], float] = field(default_factory=dict)


def idle_memory(exe: Path, s: Server, ns: list[int], token: str, memory: Memory) -> None:
    """KiB of server RSS per idle subscribed connection, on a server that has carried no
    traffic yet (freed buffers would hide new allocations): fleets of ns[0], then
    ns[1] - ns[0], ... subscribers connect one after the other, none closing in between."""
    fleets: list[Fleet] = []
    try:
        rss0, have = s.rss(), 0
        for n in ns:
            fleets.append(Fleet(exe, s, n - have, token))
            have = n
            time.sleep(1.0)
            memory.per_conn[(s.name, n)] = (s.rss() - rss0) / n / 1024
    except (RuntimeError, TimeoutError) as exc:
        print(f"{LABEL[s.name]}: idle memory not measured: {exc}", file=sys.stderr)
    finally:
        for f in fleets:
            f.close()


def rotated(items: list[Any], r: int) -> list[Any]:
    k = r % len(items) if items else 0
    return items[k:] + items[:k]


def run_all(
    exe: Path, names: list[str], plan: Plan
) -> tuple[list[Server], dict[Any, Cell], Memory]:
    """Every server runs for the whole bench (an idle one costs nothing). For each N, a load
    generator per server connects its subscribers (the RSS per idle connection is taken
    then); then ``rounds`` rounds, each server in turn (the order rotating) running every
    mode, so that a slow spell of the machine falls on every server alike."""
    servers: list[Server] = []
    memory = Memory()
    for name in names:
        try:
            servers.append(start_server(name))
        except Unavailable as exc:
            print(f"{LABEL[name]}: skipped: {exc}", file=sys.stderr, flush=True)
    cells: dict[tuple[str, int, str], Cell] = {}
    token = admin_token()
    try:
        for s in servers:
            memory.base_rss[s.name] = s.base_rss
            idle_memory(exe, s, sorted(plan.ns), token, memory)
        for n in plan.ns:
            fleets: list[Fleet] = []
            try:
                for s in servers:
                    if s.proc.poll() is not None:
                        continue
                    try:
                        fleets.append(Fleet(exe, s, n, token))
                    except (RuntimeError, TimeoutError) as exc:
                        print(f"{LABEL[s.name]}: N={n} skipped: {exc}", file=sys.stderr)
                for r in range(plan.rounds):
                    for f in rotated(list(fleets), r):
                        for mode in plan.modes:
                            cmd, timeout = plan.command(mode, n)
                            try:
                                res = f.run(cmd, timeout)
                            except (RuntimeError, TimeoutError, psutil.Error) as exc:
                                print(
                                    f"{LABEL[f.server.name]}: N={n} dropped from the run: "
                                    f"{exc} {f.server.log_tail(300)}",
                                    file=sys.stderr,
                                )
                                f.close()
                                fleets.remove(f)
                                break
                            cell = cells.setdefault(
                                (f.server.name, n, mode), Cell(f.server.name, n, mode)
                            )
                            cell.results.append(res)
                            flag = ""
                            if res["lost"] or res["dup"] or res["timed_out"] or res["closed"]:
                                flag = (
                                    f"  !! lost={res['lost']} dup={res['dup']} "
                                    f"timed_out={res['timed_out']} closed={res['closed']}"
                                )
                            if res["stale"]:
                                flag += f"  ({res['stale']} late arrivals of earlier phases)"
                            if res["other_cores"] > BUSY or max(res["waits"]) > BUSY:
                                flag += (
                                    f"  (busy machine: others used {res['other_cores']:.2f} "
                                    "cores; run-queue waits "
                                    f"server {res['waits'][0]:.0%} load-gen {res['waits'][1]:.0%})"
                                )
                            print(
                                f"  round {r + 1} {LABEL[f.server.name]:15} N={n:<5} "
                                f"{mode:6} {res['delivered_per_s']:>11,.0f}/s "
                                f"p50={res['p50_ms']:.2f} p99={res['p99_ms']:.2f} ms "
                                f"server {res['server_cpu_s'] / res['wall_s']:.0%} "
                                f"load-gen {res['lg_cpu']:.0%}{flag}",
                                file=sys.stderr,
                                flush=True,
                            )
            finally:
                for f in fleets:
                    f.close()
    finally:
        for s in servers:
            s.stop()
    return servers, cells, memory


def mode_label(mode: str, n: int, plan: Plan) -> str:
    if mode == "window":
        return f"window {WINDOW.get(n, 8)}"
    if mode == "rate":
        return f"{plan.lat_pubs * n / 1000:g}k/s offered"
    return "burst"


def print_table(servers: list[Server], cells: dict[Any, Cell], memory: Memory, plan: Plan) -> None:
    names = [s.name for s in servers]
    cpus = os.cpu_count()
    pinning = (
        f"servers pinned to CPU {sorted(SERVER_CPUS)}, load generator to CPU "
        f"{sorted(LOADGEN_CPUS or [])}"
        if SERVER_CPUS
        else "not pinned"
    )
    print()
    print(
        f"fan-out, ~300-byte messages, {cpus} cores, {pinning}; medians of {plan.rounds} "
        f"round(s) in rotating order; latency at {plan.lat_pubs:g} publications/s offered"
    )
    print()
    print(
        "| mode | N | server | delivered/s | × uWS | p50 ms | p99 ms | server µs/delivery "
        "| server CPU | load-gen CPU | lost/dup | KiB/idle conn | base RSS |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for mode in plan.modes:
        for n in plan.ns:
            ref = cells.get(("uws", n, mode))
            for name in names:
                c = cells.get((name, n, mode))
                if c is None:
                    continue
                ratio = f"{c.delivered() / ref.delivered():.2f}" if ref and mode != "rate" else "-"
                kib = memory.per_conn.get((name, n))
                kib_s = f"{kib:.1f}" if kib is not None else "-"
                base = memory.base_rss.get(name, 0) / 1e6
                print(
                    f"| {mode_label(mode, n, plan)} | {n} | {LABEL[name]} "
                    f"| {c.delivered():,.0f} | {ratio} | {c.med('p50_ms'):.2f} "
                    f"| {c.med('p99_ms'):.2f} | {c.us_per_delivery():.2f} "
                    f"| {c.server_share():.0%} | {c.med('lg_cpu'):.0%} "
                    f"| {c.total('lost')}/{c.total('dup')} | {kib_s} | {base:.0f} MB |"
                )
    summary(names, cells, memory, plan)


def summary(names: list[str], cells: dict[Any, Cell], memory: Memory, plan: Plan) -> None:
    """The issue's compact table and the ratios it asks for."""

    def get(name: str, n: int, mode: str) -> Cell | None:
        return cells.get((name, n, mode))

    print()
    lat_n = max(plan.ns)
    print(
        f"| server | N = 100 delivered/s (window, burst) | N = 1000 delivered/s (window, burst) "
        f"| p50 / p99 ms at {plan.lat_pubs * lat_n / 1000:g}k/s, N = {lat_n} "
        "| KiB per idle conn | base RSS |"
    )
    print("|---|---|---|---|---|---|")

    def rate(name: str, n: int) -> str:
        w, b = get(name, n, "window"), get(name, n, "burst")
        parts = [f"{c.delivered() / 1000:,.0f}k" if c else "-" for c in (w, b)]
        return ", ".join(parts)

    for name in names:
        lat = get(name, lat_n, "rate")
        kib = [memory.per_conn[(name, n)] for n in plan.ns if (name, n) in memory.per_conn]
        kib_s = f"{min(kib):.1f}–{max(kib):.1f}" if kib else "-"
        lat_s = f"{lat.med('p50_ms'):.1f} / {lat.med('p99_ms'):.1f}" if lat else "-"
        print(
            f"| {LABEL[name]} | {rate(name, 100)} | {rate(name, 1000)} | {lat_s} | {kib_s} "
            f"| {memory.base_rss.get(name, 0) / 1e6:.0f} MB |"
        )
    print()
    for n in plan.ns:
        for mode in plan.modes:
            sh, uws, node = (get(x, n, mode) for x in ("sessionhub", "uws", "node"))
            if sh is None:
                continue
            parts = [f"N={n} {mode_label(mode, n, plan)}: sessionhub"]
            if uws and mode != "rate":  # at an offered rate every server keeps up
                parts.append(f"{sh.delivered() / uws.delivered():.2f}× uWebSockets")
            if node and mode != "rate":
                parts.append(f"{sh.delivered() / node.delivered():.2f}× Node ws")
            cpu = f"server CPU/delivery {sh.us_per_delivery():.2f} µs"
            if uws:
                cpu += f" (uWebSockets {uws.us_per_delivery():.2f} µs)"
            if mode == "rate" and uws:
                cpu += f"; p99 {sh.med('p99_ms'):.2f} ms vs {uws.med('p99_ms'):.2f} ms"
            print("; ".join([" ".join([*parts[:1], ", ".join(parts[1:])]).strip(), cpu]))
    checked = sum(c.total("deliveries") for c in cells.values())
    lost = sum(c.total("lost") for c in cells.values())
    dup = sum(c.total("dup") for c in cells.values())
    late = sum(c.total("stale") for c in cells.values())
    print(
        f"deliveries checked (per-subscriber sequence numbers): {checked:,}; "
        f"lost {lost}, duplicated {dup}"
        + (
            f" ({late:,} arrived after their phase had ended: a phase gives up 3 s after its "
            "last delivery and counts the rest as lost)"
            if late
            else ""
        )
    )
    phases = [r for c in cells.values() for r in c.results]
    busy = [r for r in phases if r["other_cores"] > BUSY or max(r["waits"]) > BUSY]
    if phases:
        worst = max(phases, key=lambda r: r["other_cores"])
        print(
            f"machine: {len(busy)} of {len(phases)} phases ran while other work used more than "
            f"{BUSY:.0%} of a core or kept the server or the generator waiting for a CPU more "
            f"than {BUSY:.0%} of the time (worst: others used {worst['other_cores']:.2f} "
            "cores)" + ("; not a quiet machine: do not quote these numbers" if busy else "")
        )
    uws_lg = [
        (c.med("lg_cpu"), c.delivered(), c.n, c.mode)
        for c in cells.values()
        if c.server == "uws" and c.mode != "rate"
    ]
    if uws_lg:
        top = max(uws_lg)
        print(
            f"load generator at uWebSockets' rates: at most {top[0]:.0%} of its core "
            f"(N={top[2]} {top[3]}, {top[1]:,.0f} deliveries/s); its CPU share is "
            "100% in the rate phases by design (it polls without sleeping there)"
        )


# -- the generator's own check ---------------------------------------------------------------


def check(exe: Path, quick: bool) -> int:
    """The generator against the trivial C broadcast server: counts and sequence checks
    exact (also with drops and duplicates injected), latency right (with a delay injected),
    and its ceiling on this machine."""
    failures: list[str] = []
    inconclusive: list[str] = []

    def expect(cond: bool, what: str, timing: dict[str, Any] | None = None) -> None:
        """A check; one about timing (``timing``: its phase) that fails on a busy machine
        is inconclusive rather than failed (counts are checked exactly whatever the load)."""
        note = busy(timing) if timing is not None else ""
        if not cond and note:
            print("  ??   " + what + note + " (inconclusive)", flush=True)
            inconclusive.append(what)
            return
        print(("  ok   " if cond else "  FAIL ") + what + note, flush=True)
        if not cond:
            failures.append(what)

    out = subprocess.run([str(exe), "selftest"], capture_output=True, check=False)
    expect(out.returncode == 0, "SHA-1, Sec-WebSocket-Accept (RFC 6455 example), frame masking")
    seconds = 1.0 if quick else 3.0
    ceiling: list[str] = []
    baseline_p99 = 0.0
    busy_phases: set[int] = set()

    def busy(r: dict[str, Any]) -> str:
        if r["other_cores"] <= BUSY and max(r["waits"]) <= BUSY:
            return ""
        busy_phases.add(id(r))
        return (
            f" [busy machine: others used {r['other_cores']:.2f} cores, run-queue waits "
            f"server {r['waits'][0]:.0%} generator {r['waits'][1]:.0%}]"
        )

    reports: list[str] = []

    @contextlib.contextmanager
    def cserver(*extra: str) -> Iterator[Server]:
        s = start_server("cserver", exe, list(extra))
        try:
            yield s
        finally:
            reports.append(s.stop())

    print("clean server: counts, sequences, the generator's ceiling")
    with cserver() as s:
        for n in (100, 1000):
            f = Fleet(exe, s, n, "")
            try:
                m = 10000 if n == 100 else 1000
                for cmd in (
                    f"burst {m} 60",
                    f"window {WINDOW[n]} {seconds} 60",
                    f"rate 40 {seconds} 60 1",
                ):
                    r = f.run(cmd, 120)
                    exact = (
                        r["deliveries"] == r["expected"] == r["published"] * n
                        and r["lost"] == r["dup"] == r["stale"] == r["bad"] == 0
                        and r["got_min"] == r["got_max"] == r["published"]
                        and not r["timed_out"]
                    )
                    expect(
                        exact,
                        f"N={n} {r['mode']}: {r['deliveries']:,} of {r['expected']:,} "
                        f"delivered, lost {r['lost']}, dup {r['dup']}{busy(r)}",
                    )
                    share = r["lg_cpu"]
                    srv = r["server_cpu_s"] / r["wall_s"]
                    if r["mode"] == "rate":
                        if n == 100:
                            baseline_p99 = r["p99_ms"]
                        expect(
                            0 < r["p50_ms"] < 50 and r["samples"] == r["deliveries"],
                            f"N={n} rate 40/s: p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} "
                            f"ms over {r['samples']:,} samples",
                            r,
                        )
                    else:
                        ceiling.append(
                            f"N={n} {r['mode']:6}: {r['delivered_per_s']:>12,.0f} deliveries/s "
                            f"with the generator at {share:.0%} of a core and the server at "
                            f"{srv:.0%} (≈ {r['delivered_per_s'] / max(share, 1e-9):,.0f}/s "
                            "per generator core-second)"
                        )
            finally:
                f.close()

    print("a 5 ms delay injected: the latency measured must show it")
    with cserver("--delay-us", "5000") as s:
        f = Fleet(exe, s, 100, "")
        try:
            r = f.run(f"rate 40 {seconds} 60 1", 120)
        finally:
            f.close()
        # Nothing may arrive before the delay, and the middle of the distribution moves by
        # it: p50 at most 5 ms + the clean run's p99.
        expect(
            r["min_ms"] >= 5.0 and 5.0 <= r["p50_ms"] <= 5.0 + max(1.0, baseline_p99),
            f"min {r['min_ms']:.3f} ms, p50 {r['p50_ms']:.3f} ms (5 ms + at most the clean "
            f"p99 of {baseline_p99:.3f} ms)",
            r,
        )

    print("drops and duplicates injected: the generator must count exactly those")
    lost = dup = 0
    with cserver("--drop-every", "97", "--dup-every", "89") as s:
        f = Fleet(exe, s, 100, "")
        try:
            for cmd in ("burst 5000 60", f"rate 200 {seconds} 60 1"):
                r = f.run(cmd, 120)
                lost += r["lost"]
                dup += r["dup"]
        finally:
            f.close()
    report: dict[str, Any] = {}
    for line in reports[-1].splitlines():
        if line.startswith("{"):
            report = orjson.loads(line)
    expect(
        report.get("dropped") == lost and report.get("duplicated") == dup and lost > 0 and dup > 0,
        f"server injected {report.get('dropped')} drops and {report.get('duplicated')} "
        f"duplicates; the generator counted {lost} lost and {dup} duplicated",
    )
    print()
    print("the generator's ceiling on this machine (trivial C server on CPU 0, generator on 1):")
    for line in ceiling:
        print("  " + line)
    if busy_phases:
        print(f"  ({len(busy_phases)} phases ran on a busy machine: the ceiling above is a floor)")
    print()
    verdict = "all passed" if not failures else f"{len(failures)} FAILED"
    if inconclusive:
        verdict += f", {len(inconclusive)} timing checks inconclusive (busy machine: run again)"
    print("check: " + verdict)
    return 1 if failures else 0


# -- main ------------------------------------------------------------------------------------


def main() -> int:
    global SERVER_CPUS, LOADGEN_CPUS
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="short phases, one round (a smoke run)")
    ap.add_argument("--check", action="store_true", help="check the load generator and exit")
    ap.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=(os.cpu_count() or 1) >= 2,
        help="servers on CPU 0, load generator on the others (default on with 2+ CPUs)",
    )
    ap.add_argument("--servers", default=",".join(ALL_SERVERS))
    ap.add_argument("--ns", default="100,1000", help="subscriber counts")
    ap.add_argument("--modes", default="burst,window,rate")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 3, --quick 1)")
    ap.add_argument("--seconds", type=float, default=None, help="window/rate phase length")
    ap.add_argument(
        "--lat-pubs",
        type=float,
        default=40.0,
        help="publications/s offered in the rate phase (40: 40,000 deliveries/s at N=1000)",
    )
    ap.add_argument("--json", help="also write every result to this file")
    args = ap.parse_args()

    cpus = sorted(os.sched_getaffinity(0))
    if args.pin and len(cpus) >= 2:
        SERVER_CPUS = {cpus[0]}
        LOADGEN_CPUS = set(cpus[1:])
        os.sched_setaffinity(0, LOADGEN_CPUS)  # the bench itself stays off the servers' CPU
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))

    # SIGTERM and SIGHUP unwind like Ctrl-C, so every child is stopped on the way out.
    def stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    signal.signal(signal.SIGINT, stop)  # also when started in the background (SIGINT ignored)

    with tempfile.TemporaryDirectory(prefix="bench-loadgen-") as tmp:
        exe = compile_loadgen(Path(tmp))
        if args.check:
            return check(exe, args.quick)
        plan = Plan(
            ns=[int(x) for x in args.ns.split(",")],
            modes=args.modes.split(","),
            burst={100: 3000, 1000: 300} if args.quick else {100: 10000, 1000: 1000},
            seconds=args.seconds or (1.5 if args.quick else 5.0),
            lat_pubs=args.lat_pubs,
            rounds=args.rounds or (1 if args.quick else 3),
        )
        for n in plan.ns:
            plan.burst.setdefault(n, max(100, 1_000_000 // n))
        names = [x for x in args.servers.split(",") if x]
        started = time.monotonic()
        servers, cells, memory = run_all(exe, names, plan)
        print_table(servers, cells, memory, plan)
        print(f"\n(bench took {time.monotonic() - started:.0f} s)")
        if args.json:
            Path(args.json).write_text(
                orjson.dumps(
                    {
                        "cpus": os.cpu_count(),
                        "server_cpus": sorted(SERVER_CPUS or []),
                        "loadgen_cpus": sorted(LOADGEN_CPUS or []),
                        "base_rss": memory.base_rss,
                        "kib_per_idle_conn": {
                            f"{k[0]}/{k[1]}": v for k, v in memory.per_conn.items()
                        },
                        "results": [
                            {"server": c.server, "n": c.n, "mode": c.mode, "rounds": c.results}
                            for c in cells.values()
                        ],
                    },
                    option=orjson.OPT_INDENT_2,
                ).decode()
            )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_serve":
        if sys.argv[2] == "picows":
            serve_picows(int(sys.argv[3]))
        else:
            serve_websockets(int(sys.argv[3]))
    else:
        try:
            sys.exit(main())
        except KeyboardInterrupt:
            print("interrupted: servers and load generators stopped", file=sys.stderr)
            sys.exit(130)
