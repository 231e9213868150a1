"""Where an idle subscribed connection's bytes go, by the line that allocated them.

``bench/fanout.py`` measures the RSS per idle connection of each server; this says which
objects make up sessionhub's share, so that the next cut is aimed rather than guessed. It runs
the server in this process (uvicorn on uvloop, the native realtime engine, SQLite in a
temporary directory) with ``tracemalloc`` on, connects a warm-up fleet, takes a snapshot,
connects ``--conns`` more subscribers from a child process (so the client's objects are not
counted), takes another, and prints the difference per connection: grouped by the innermost
sessionhub frame that led to the allocation (``--by sessionhub``) or by the allocating line
itself (``--by line``). tracemalloc sees only Python objects (those uvloop makes in C, its
transports and handles, fall under no sessionhub frame): libuv's own memory and the kernel's
socket buffers are in the RSS line but in no row.

Last, the floor, measured the same way in the same run: a bare uvloop server whose protocol
keeps nothing but its transport, holding ``--conns`` plain TCP connections (no HTTP, no
WebSocket). It is what any server on uvloop pays per socket before doing anything, so the
difference between the two lines is what sessionhub itself keeps (``--no-floor`` skips it).

    .venv/bin/python bench/conn_heap.py --conns 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import uvicorn
import uvloop

from sessionhub.server.app import create_app
from sessionhub.server.runtime import Runtime, build_runtime
from sessionhub.server.serving import uvicorn_config
from sessionhub.settings import Settings

# The floor's child: N plain TCP connections, then wait for stdin to close.
TCP_CLIENT = """
import socket, sys
conns = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(int(sys.argv[2]))]
print("ready", flush=True)
sys.stdin.read()
"""

# The child: N subscribers that connect one after the other, then wait for stdin to close.
CLIENT = """
import asyncio, sys, orjson, websockets
async def main(url, token, n):
    conns = []
    for _ in range(n):
        ws = await websockets.connect(url, max_size=None, compression=None)
        for i, cmd in enumerate(({"connect": {"token": token}},
                                 {"subscribe": {"channel": "user:alice"}}), 1):
            await ws.send(orjson.dumps({"id": i, **cmd}).decode())
            await ws.recv()
        conns.append(ws)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def fleet(url: str, token: str, n: int) -> subprocess.Popen[str]:
    return _child([CLIENT, url, token, str(n)])


def _child(argv: list[str], cpus: set[int] | None = None) -> subprocess.Popen[str]:
    """A ``python -c`` child (on ``cpus`` if given) once it has printed ``ready``."""
    p = subprocess.Popen(
        [sys.executable, "-c", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    if cpus:
        os.sched_setaffinity(p.pid, cpus)
    assert p.stdout is not None
    if p.stdout.readline().strip() != "ready":
        raise RuntimeError("the client fleet did not connect")
    return p


def owner(tb: tracemalloc.Traceback, by: str) -> str:
    frames = list(reversed(tb))  # tracemalloc lists the oldest frame first
    if by == "sessionhub":
        for fr in frames:
            if "/sessionhub/" in fr.filename:
                return f"{fr.filename.split('/sessionhub/')[-1]}:{fr.lineno}"
        # uvloop's transports and handles are made in C, under no frame of ours.
        return "(no sessionhub frame: event-loop internals)"
    fr = frames[0]
    return f"{fr.filename.split('/')[-1]}:{fr.lineno}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--by", choices=("sessionhub", "line"), default="sessionhub")
    ap.add_argument("--rows", type=int, default=15)
    ap.add_argument("--no-floor", dest="floor", action="store_false")
    ap.add_argument("--floor-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.floor_only:
        print(*floor(args.conns))
        return
    with tempfile.TemporaryDirectory(prefix="conn-heap-") as tmp:
        heap = measure(args, Path(tmp))
    if args.floor:
        # In a process of its own: this one's RSS now holds what the server freed.
        out = subprocess.run(
            [sys.executable, __file__, "--floor-only", "--conns", str(args.conns)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout.split()
        floor_heap, floor_rss = float(out[0]), float(out[1])
        print(f"\nthe floor, a bare uvloop protocol holding {args.conns} TCP connections:")
        print(f"RSS per connection: {floor_rss:7.0f} B (tracemalloc's own tables included)")
        print(f"Python heap per connection: {floor_heap:7.0f} B")
        print(f"sessionhub's own heap per connection: {heap - floor_heap:7.0f} B")


class _Bare(asyncio.Protocol):
    """The floor's protocol: it keeps its transport and nothing else."""

    __slots__ = ("transport",)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport


def floor(n: int) -> tuple[float, float]:
    """Heap and RSS per connection of a bare uvloop server holding ``n`` connections."""
    loop = uvloop.new_event_loop()
    server = loop.run_until_complete(loop.create_server(_Bare, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    me = psutil.Process()
    warm = _child([TCP_CLIENT, str(port), "50"])
    children = [warm]
    try:
        time.sleep(0.5)
        tracemalloc.start(12)
        gc.collect()
        before, rss0 = tracemalloc.take_snapshot(), me.memory_info().rss
        children.append(_child([TCP_CLIENT, str(port), str(n)]))
        time.sleep(1.0)
        gc.collect()
        after, rss1 = tracemalloc.take_snapshot(), me.memory_info().rss
        tracemalloc.stop()
    finally:
        for p in children:
            assert p.stdin is not None
            p.stdin.close()
            p.wait(10)
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(20)
        loop.close()
    heap = sum(st.size_diff for st in after.compare_to(before, "filename"))
    return heap / n, (rss1 - rss0) / n


@contextlib.contextmanager
def node_in_thread(tmp: Path, **settings: Any) -> Iterator[tuple[Runtime, str]]:
    """A node on ``sessionhub serve``'s uvicorn configuration (uvloop, SQLite in ``tmp``),
    served from a thread of this process: yields its runtime and its Centrifugo URL, and
    stops it on exit. ``settings`` add to or override the bench's own."""
    runtime = build_runtime(
        Settings(
            **{
                "data_dir": tmp / "data",
                "jwt_secret": "bench-secret-0123456789abcdef0123456789",
                "sweep_interval": 3600.0,
                **settings,
            }
        )
    )
    server = uvicorn.Server(uvicorn_config(create_app(runtime=runtime), runtime.settings, port=0))
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),))
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise SystemExit("server did not start")
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield runtime, f"ws://127.0.0.1:{port}/connection/websocket"
    finally:
        server.should_exit = True
        thread.join(30)


def measure(args: argparse.Namespace, tmp: Path) -> float:
    """Print sessionhub's table; return its heap bytes per connection."""
    me = psutil.Process()  # RSS as bench/fanout.py reads it
    with node_in_thread(tmp) as (runtime, url):
        return _measure(args, runtime, url, me)


def _measure(args: argparse.Namespace, runtime: Runtime, url: str, me: psutil.Process) -> float:
    token = runtime.auth.issue("alice", ())
    fleets = [fleet(url, token, 50)]  # warm-up: first-use caches are not per connection
    try:
        time.sleep(0.5)
        tracemalloc.start(12)
        gc.collect()
        before, rss0 = tracemalloc.take_snapshot(), me.memory_info().rss
        fleets.append(fleet(url, token, args.conns))
        time.sleep(1.0)
        gc.collect()
        after, rss1 = tracemalloc.take_snapshot(), me.memory_info().rss
        tracemalloc.stop()  # what follows (the teardown) is not measured
    finally:
        for p in fleets:
            assert p.stdin is not None
            p.stdin.close()
            p.wait(10)
    sizes: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for st in after.compare_to(before, "traceback"):
        key = owner(st.traceback, args.by)
        sizes[key] += st.size_diff
        counts[key] += st.count_diff
    n = args.conns
    heap = sum(sizes.values())
    print(f"{n} idle subscribed connections, native engine on uvloop, SQLite")
    print(f"RSS per connection: {(rss1 - rss0) / n:7.0f} B (tracemalloc's own tables included)")
    print(f"Python heap per connection: {heap / n:7.0f} B\n")
    print(f"| {'allocated under (' + args.by + ')':<44} | B/conn | objects/conn | share |")
    print(f"|{'-' * 46}|-------:|-------------:|------:|")
    for key, size in sorted(sizes.items(), key=lambda kv: -kv[1])[: args.rows]:
        share = size / heap if heap else 0.0
        print(f"| {key:<44} | {size / n:6.0f} | {counts[key] / n:12.2f} | {share:5.0%} |")
    return heap / n


if __name__ == "__main__":
    main()
