"""Idle subscribers: what N connections that only answer pings cost the server's CPU.

A node on uvloop (``sessionhub serve``'s uvicorn configuration, SQLite in a temporary
directory) runs in this process on CPU 0; a child process on another CPU opens N Centrifugo
connections, subscribes each to one topic (``user:alice``) and then only answers the
server's pings, as an idle browser tab does. The node's CPU time over ``--seconds`` (every
thread, from the process's own clock), as a share of one core, is the cost: pings, pongs and
the presence lease each subscriber renews once per ping interval. The table also says how
many connections were still open at the end (a connection dropped for a missed pong would
make the figure meaningless).

The peer is the same measurement of another checkout, in the same run: ``--before DIR``
runs each N again with ``PYTHONPATH=DIR/src`` (a ``git worktree`` of the commit to compare
with), and the last column is this tree's CPU over that one's.

    .venv/bin/python bench/idle.py [--ns 5000,10000] [--seconds 50] [--before /tmp/before]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# bench/ is first on sys.path when this file runs.
from conn_heap import _child, node_in_thread

# The child: N subscribers that answer every ping ({}) with a pong ({}).
CLIENT = """
import asyncio, sys, orjson, websockets
async def pong(ws):
    async for msg in ws:
        if msg in ("{}", b"{}"):
            await ws.send("{}")
async def main(url, token, n):
    tasks = []
    for _ in range(n):
        ws = await websockets.connect(url, max_size=None, compression=None, ping_interval=None)
        for i, cmd in enumerate(({"connect": {"token": token}},
                                 {"subscribe": {"channel": "user:alice"}}), 1):
            await ws.send(orjson.dumps({"id": i, **cmd}).decode())
            await ws.recv()
        tasks.append(asyncio.create_task(pong(ws)))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def one(n: int, seconds: float) -> None:
    """Measure this checkout (whatever ``sessionhub`` imports as); print 'cpu open connect'."""
    with (
        tempfile.TemporaryDirectory(prefix="idle-") as tmp,
        node_in_thread(Path(tmp), realtime_max_per_address=n + 100) as (runtime, url),
    ):
        started = time.monotonic()
        # The node is pinned to CPU 0 (``measure``); its clients go to the other CPUs.
        others = set(range(os.cpu_count() or 1)) - {0}
        fleet = _child([CLIENT, url, runtime.auth.issue("alice", ()), str(n)], others)
        connect = time.monotonic() - started
        try:
            time.sleep(2)
            cpu0, wall0 = time.process_time(), time.monotonic()
            time.sleep(seconds)
            cpu1, wall1 = time.process_time(), time.monotonic()
            still = len(runtime.realtime.connections())
        finally:
            assert fleet.stdin is not None
            fleet.stdin.close()
            fleet.wait(60)
    print((cpu1 - cpu0) / (wall1 - wall0), still, connect)


def measure(n: int, seconds: float, src: str | None) -> tuple[float, int, float]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    cmd = [sys.executable, __file__, "--one", str(n), "--seconds", str(seconds)]
    if (os.cpu_count() or 1) > 1:
        cmd = ["taskset", "-c", "0", *cmd]  # ``one`` moves its clients to the other CPUs
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 600)
    if out.returncode != 0:
        raise SystemExit(f"the measurement of N={n} failed:\n{out.stderr[-2000:]}")
    cpu, still, connect = out.stdout.split()[-3:]
    return float(cpu), int(still), float(connect)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ns", default="5000,10000")
    ap.add_argument("--seconds", type=float, default=50.0)
    ap.add_argument("--before", help="a checkout to measure in the same run (its src/)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        one(args.one, args.seconds)
        return
    rows = []
    for n in (int(x) for x in args.ns.split(",")):
        for label, src in [("this tree", None)] + (
            [("before", str(Path(args.before) / "src"))] if args.before else []
        ):
            print(f"N={n}, {label} ...", file=sys.stderr, flush=True)
            rows.append((n, label, *measure(n, args.seconds, src)))
    cores = os.cpu_count()
    print(
        f"\nidle subscribers of one topic, answering pings; the node on CPU 0 of {cores}, "
        f"its clients on the others; {args.seconds:g} s per measurement\n"
    )
    print("| N | checkout | server CPU, % of a core | still open | connecting took | × before |")
    print("|---|---|---|---|---|---|")
    for n, label, cpu, still, connect in rows:
        before = [r[2] for r in rows if r[0] == n and r[1] == "before"]
        ratio = f"{cpu / before[0]:.2f}" if before and label != "before" and before[0] else "-"
        print(f"| {n} | {label} | {cpu * 100:.2f}% | {still} | {connect:.1f} s | {ratio} |")


if __name__ == "__main__":
    main()
