"""Heartbeats: what 10,000 sessions heartbeating every 30 s cost the server.

A real ``sessionhub serve`` (SQLite by default, ``--postgres-url`` for PostgreSQL) holds
``--sessions`` sessions (10,000); Debian's ``wrk`` (``--connections`` keep-alive
connections, paced with ``delay()``) sends ``POST /api/sessions/{id}/heartbeat`` cycling
through all of them at the rate they would arrive — sessions / interval, 333/s for 10,000
every 30 s — for ``--duration`` seconds (30 s: every heartbeat batch the scheduler writes is
in the phase). The server's CPU time (every thread, user and system, from
``/proc/PID/stat``) over the phase, as a share of one core, is the cost; the same server
with no traffic for as long is the idle cost, and the FastAPI ceiling of ``bench/rest.py``
(a route that answers ``{}``) taking the same paced load is the peer: what answering that
many requests costs at all on this framework. Below it, the floor: uvicorn on the same
configuration with a bare ASGI app answering ``{}`` (what the HTTP server alone costs). The server is pinned to CPU 0 and wrk to
CPU 1 on a machine with two or more cores. The issue's target: under 5 % of a core.

    .venv/bin/python bench/heartbeats.py [--sessions 10000] [--interval 30]
                                         [--duration 30] [--connections 10]
                                         [--postgres-url postgresql+asyncpg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

# The parts (bench/rest_parts/) import from bench/, first on sys.path when this file runs.
from rest_parts import wrk
from rest_parts.servers import (
    SECRET,
    Proc,
    reset_postgres,
    start_ceiling,
    start_floor,
    start_sessionhub,
)
from sessionhub.auth import Authenticator


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of every thread of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def make_sessions(url: str, token: str, n: int) -> list[str]:
    """``n`` generic sessions, 32 requests in flight, with progress on stderr."""
    headers = {"Authorization": f"Bearer {token}"}
    ids: list[str] = []
    queue = iter(range(n))
    started = time.monotonic()

    async def worker(http: httpx.AsyncClient) -> None:
        for _ in queue:
            r = await http.post("/api/sessions", json={"kind": "generic"}, headers=headers)
            r.raise_for_status()
            ids.append(r.json()["id"])
            if len(ids) % 2000 == 0:
                print(
                    f"  {len(ids):,} sessions ({time.monotonic() - started:.0f} s)", file=sys.stderr
                )

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        await asyncio.gather(*(worker(http) for _ in range(32)))
    return ids


def phase(
    proc: Proc, ids: list[str], token: str, args: argparse.Namespace, tmp: Path
) -> dict[str, float]:
    """One paced wrk phase against ``proc``: answered/s, p99 and the server's CPU share."""
    rate = args.sessions / args.interval
    pace = max(1, round(args.connections * 1000 / rate))
    targets = [f"{sid}/heartbeat" for sid in ids]
    before, start = cpu_seconds(proc.proc.pid), time.monotonic()
    result = wrk.run_wrk(
        proc.url, tmp, targets, "POST", "/api/sessions/", args, token=token, pace_ms=pace
    )
    cpu, elapsed = cpu_seconds(proc.proc.pid) - before, time.monotonic() - start
    answered = result["requests"] / (result["duration_us"] / 1e6)
    ok = sum(v for k, v in result["statuses"].items() if k.startswith("2"))
    return {
        "offered": rate,
        "answered": answered,
        "ok": ok / max(1, result["requests"]),
        "p99": result["p99_us"] / 1000,
        "cpu": cpu / elapsed,
    }


def idle(proc: Proc, seconds: float) -> float:
    before = cpu_seconds(proc.proc.pid)
    time.sleep(seconds)
    return (cpu_seconds(proc.proc.pid) - before) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between beats")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    args.wrk_connections = args.connections
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk: apt-get install -y wrk")
    if (os.cpu_count() or 1) >= 2:
        wrk.SERVER_CPUS, wrk.WRK_CPUS = {0}, {1}
    tmp = Path(tempfile.mkdtemp(prefix="sessionhub-heartbeats-"))
    token = Authenticator(secret=SECRET).issue("root", ["admin"])
    rows: list[tuple[str, dict[str, float]]] = []
    try:
        if args.postgres_url:
            asyncio.run(reset_postgres(args.postgres_url))
        (tmp / "data").mkdir()
        server = start_sessionhub(tmp / "data", args.postgres_url, args.log_level, wrk.SERVER_CPUS)
        try:
            print(f"creating {args.sessions:,} sessions ...", file=sys.stderr)
            ids = asyncio.run(make_sessions(server.url, token, args.sessions))
            print(f"measuring the idle server for {args.duration:g} s ...", file=sys.stderr)
            rest = idle(server, args.duration)
            print(f"heartbeats for {args.duration:g} s ...", file=sys.stderr)
            rows.append(("sessionhub", phase(server, ids, token, args, tmp)))
        finally:
            server.stop()
        floor = start_floor(tmp, wrk.SERVER_CPUS)
        try:
            print(f"the floor (uvicorn, bare ASGI) for {args.duration:g} s ...", file=sys.stderr)
            rows.append(
                ("floor: uvicorn, a bare ASGI app answering {}", phase(floor, ids, "", args, tmp))
            )
        finally:
            floor.stop()
        ceiling = start_ceiling(tmp, wrk.SERVER_CPUS)
        try:
            print(f"the FastAPI ceiling for {args.duration:g} s ...", file=sys.stderr)
            rows.append(("ceiling: FastAPI route answering {}", phase(ceiling, ids, "", args, tmp)))
        finally:
            ceiling.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    backend = "postgresql" if args.postgres_url else "sqlite"
    pin = f"server on CPU {sorted(wrk.SERVER_CPUS or [])}, wrk on CPU {sorted(wrk.WRK_CPUS or [])}"
    print(
        f"\nheartbeats: {args.sessions:,} sessions every {args.interval:g} s on {backend}, "
        f"{args.connections} connections (wrk, paced), {pin}, {args.duration:g} s, "
        f"{os.cpu_count()} CPU cores, sessionhub log level {args.log_level}\n"
    )
    print(
        "| server | offered/s | answered/s | 2xx | p99 ms | server CPU, % of a core | × ceiling |"
    )
    print("|---|---|---|---|---|---|---|")
    peer = rows[-1][1]["cpu"] or float("nan")
    for name, r in rows:
        print(
            f"| {name} | {r['offered']:,.0f} | {r['answered']:,.0f} | {r['ok']:.1%} | "
            f"{r['p99']:.1f} | {r['cpu']:.1%} | {r['cpu'] / peer:.2f} |"
        )
    print(f"| sessionhub, idle with {args.sessions:,} sessions | 0 | 0 | | | {rest:.1%} | |")
    cost = rows[0][1]["cpu"]
    verdict = "under" if cost < 0.05 else "over"
    print(
        f"\n{args.sessions:,} sessions heartbeating every {args.interval:g} s: {cost:.1%} of a "
        f"core, {verdict} the 5 % target ({cost - rest:.1%} above idle)."
    )


if __name__ == "__main__":
    main()
