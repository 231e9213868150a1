"""REST throughput: transitions and heartbeats per second, SQLite and PostgreSQL.

Runs a real ``sessionhub serve`` (uvicorn) as a subprocess and drives it from load
generator *processes* (keep-alive HTTP/1.1, ``--concurrency`` requests in flight). Next to it,
in the same run and under the same load generator, it measures a peer: a minimal plain
FastAPI/uvicorn app that does one ``UPDATE`` of one row per request on the same database
(same driver, same SQLite durability settings). That is the floor of "one durable write per
request"; the ratio column says how sessionhub compares with it. A second peer is the
framework's ceiling: a FastAPI ``PATCH /api/sessions/{id}`` route that takes the same JSON body
as sessionhub's and returns ``{}``, on the same uvicorn configuration as ``sessionhub serve``
(``sessionhub.server.serving.uvicorn_config``), so ``changes (PATCH)`` can be compared with
what FastAPI and uvicorn can do at all on this machine.

A sessionhub transition is one durable change: read the session, compare-and-set the row,
append its event (one transaction), publish. A heartbeat is coalesced in memory and written
in batches by the scheduler, so it costs no write per request.

    .venv/bin/python bench/rest.py [--duration 5] [--concurrency 32] [--processes 2]
                                   [--postgres-url postgresql+asyncpg://...] [--no-postgres]
                                   [--load python,wrk] [--wrk-connections 32]
                                   [--wrk-sessions 300]

``--load wrk`` (on by default when ``wrk`` is installed: ``apt-get install -y wrk``) measures
with Debian's ``wrk`` instead of Python load generators: the server pinned to CPU 0, ``wrk``
(one thread, 32 connections) to CPU 1, a Lua script generated in a temporary directory that
cycles through 300 sessions. It reports req/s, p50 and p99 of ``PATCH /api/sessions/{id}``,
of the FastAPI ceiling and of the bare-UPDATE peer, their ratios, the share of non-2xx
answers (409s), and sessionhub's p99 at an offered rate of half its own maximum (wrk's
``delay()`` paces each connection).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

# The parts (bench/rest_parts/) import from bench/, first on sys.path when this file runs.
from rest_parts import wrk
from rest_parts.apps import serve_ceiling, serve_floor, serve_peer
from rest_parts.load import Row, bench_backend
from rest_parts.report import print_python, print_wrk
from rest_parts.servers import reset_postgres
from rest_parts.wrk import WrkRow, bench_wrk

DEFAULT_PG = os.environ.get(
    "SESSIONHUB_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/sessionhub_bench"
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight in total")
    p.add_argument("--processes", type=int, default=2, help="load generator processes")
    p.add_argument("--postgres-url", default=DEFAULT_PG, help="a database the bench may empty")
    p.add_argument("--no-postgres", action="store_true")
    p.add_argument("--log-level", default="info", help="sessionhub's log level (default info)")
    p.add_argument(
        "--client",
        choices=["raw", "httpx"],
        default="raw",
        help="load generator HTTP client (default: a minimal keep-alive HTTP/1.1 client)",
    )
    p.add_argument(
        "--load",
        default="python,wrk",
        help="python (the load generator processes), wrk (Debian's wrk, pinned), or both",
    )
    p.add_argument("--wrk-connections", type=int, default=32)
    p.add_argument("--wrk-sessions", type=int, default=300, help="sessions wrk cycles through")
    p.add_argument("--serve-peer", help=argparse.SUPPRESS)
    p.add_argument("--serve-ceiling", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_peer:
        serve_peer(args.serve_peer, args.port)
        return 0
    if args.serve_ceiling:
        serve_ceiling(args.port)
        return 0
    if args.serve_floor:
        serve_floor(args.port)
        return 0
    loads = set(args.load.split(","))
    if "wrk" in loads and shutil.which("wrk") is None:
        print(
            "wrk not installed (apt-get install -y wrk): the wrk runs are skipped", file=sys.stderr
        )
        loads.discard("wrk")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        wrk.SERVER_CPUS, wrk.WRK_CPUS = {cpus[0]}, {cpus[1]}

    backends: list[tuple[str, str | None]] = [("sqlite", None)]
    if not args.no_postgres:
        try:
            asyncio.run(reset_postgres(args.postgres_url))
            backends.append(("postgresql", args.postgres_url))
        except Exception as exc:
            print(f"PostgreSQL skipped ({type(exc).__name__}: {exc})", file=sys.stderr)

    rows: list[Row] = []
    wrk_rows: list[WrkRow] = []
    with tempfile.TemporaryDirectory(prefix="sessionhub-bench-") as tmp:
        for name, url in backends:
            if "python" in loads:
                print(f"measuring {name} ...", file=sys.stderr, flush=True)
                rows += bench_backend(name, url, args, Path(tmp))
            if "wrk" in loads:
                print(f"measuring {name} with wrk ...", file=sys.stderr, flush=True)
                wrk_rows += bench_wrk(name, url, args, Path(tmp))
    if wrk_rows:
        print_wrk(wrk_rows, [b for b, _ in backends], args)
    if not rows:
        return 0

    print_python(rows, [b for b, _ in backends], args)
    if any(r.result.errors for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
