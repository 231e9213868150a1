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
``loadgen_parts/server.c`` (counts, sequence checks with injected drops and duplicates, latency with an
injected delay) and reports its ceiling on this machine. Usage::

    .venv/bin/python bench/fanout.py [--quick] [--rounds 3] [--servers a,b] [--json out.json]
    .venv/bin/python bench/fanout.py --check

Needs ``cc``; ``node`` with ``npm install`` (package.json: ``ws``, ``@trufflesuite/uws-js-
unofficial``) for the Node and uWebSockets columns, ``pip install picows`` for picows; a
column whose server cannot start is skipped with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

# The parts (bench/fanout_parts/) import from bench/, first on sys.path when this file runs.
from fanout_parts import machine
from fanout_parts.check import check
from fanout_parts.loadgen import compile_loadgen
from fanout_parts.peers import serve_picows, serve_websockets
from fanout_parts.report import print_table
from fanout_parts.runs import Plan, run_all
from fanout_parts.workload import ALL_SERVERS

# -- main ------------------------------------------------------------------------------------


def main() -> int:
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
        machine.SERVER_CPUS = {cpus[0]}
        machine.LOADGEN_CPUS = set(cpus[1:])
        os.sched_setaffinity(0, machine.LOADGEN_CPUS)  # the bench itself stays off the servers' CPU
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
        unknown = sorted(set(names) - set(ALL_SERVERS))
        if unknown:
            raise SystemExit(
                f"unknown --servers {', '.join(unknown)}: use {', '.join(ALL_SERVERS)}"
            )
        started = time.monotonic()
        servers, cells, memory = run_all(exe, names, plan)
        print_table(servers, cells, memory, plan)
        print(f"\n(bench took {time.monotonic() - started:.0f} s)")
        if args.json:
            Path(args.json).write_text(
                orjson.dumps(
                    {
                        "cpus": os.cpu_count(),
                        "server_cpus": sorted(machine.SERVER_CPUS or []),
                        "loadgen_cpus": sorted(machine.LOADGEN_CPUS or []),
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
