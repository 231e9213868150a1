"""The REST bench's tables: wrk's (req/s, p50/p99, non-2xx answers, ratios to the FastAPI
ceiling and the bare-UPDATE peer, the p99 at half the rate) and the Python load
generators' (every operation's rate and latency, against the peer and the ceiling)."""

from __future__ import annotations

import argparse
import os

from rest_parts import wrk
from rest_parts.load import Row
from rest_parts.wrk import WrkRow


def print_wrk(rows: list[WrkRow], backends: list[str], args: argparse.Namespace) -> None:
    print()
    pin = (
        f"server on CPU {sorted(wrk.SERVER_CPUS)}, wrk on CPU {sorted(wrk.WRK_CPUS or [])}"
        if wrk.SERVER_CPUS
        else "not pinned (fewer than 2 CPUs)"
    )
    print(
        f"wrk (Debian's), 1 thread, {args.wrk_connections} connections, {pin}, "
        f"{args.wrk_sessions} sessions, {args.duration:g} s each, {os.cpu_count()} CPU cores, "
        f"sessionhub log level {args.log_level}"
    )
    print()
    print("| backend | operation | req/s | p50 ms | p99 ms | non-2xx | × ceiling | × UPDATE peer |")
    print("|---|---|---|---|---|---|---|---|")
    for b in backends:
        mine = [r for r in rows if r.backend == b]
        ceiling = next((r for r in mine if r.what.startswith("ceiling")), None)
        peer = next((r for r in mine if r.what.startswith("peer")), None)
        for r in mine:
            what = r.what + (f" ({r.offered:,.0f}/s)" if r.offered else "")
            xc = f"{r.rate / ceiling.rate:.2f}" if ceiling and ceiling.rate else "-"
            xp = f"{r.rate / peer.rate:.2f}" if peer and peer.rate else "-"
            codes = f"{r.non2xx:.1%}" + (f" ({r.codes()})" if r.codes() else "")
            print(
                f"| {b} | {what} | {r.rate:,.0f} | {r.result['p50_us'] / 1000:.1f} "
                f"| {r.result['p99_us'] / 1000:.1f} | {codes} | {xc} | {xp} |"
            )
    print()
    for b in backends:
        by_what = {r.what: r for r in rows if r.backend == b}
        full = by_what.get("PATCH /api/sessions/{id}")
        half = by_what.get("PATCH, half that rate offered")
        ceiling = by_what.get("ceiling: FastAPI PATCH {}")
        peer = by_what.get("peer: 1 UPDATE/request")
        if not (full and ceiling and peer):
            continue
        line = (
            f"{b}: PATCH at {full.rate / ceiling.rate:.2f}× the FastAPI ceiling "
            f"({full.rate:,.0f} vs {ceiling.rate:,.0f} req/s; issue target ≥ 0.5× on SQLite), "
            f"{full.rate / peer.rate:.2f}× the bare-UPDATE peer (target ≥ 1.0× on PostgreSQL)"
        )
        if half:
            line += (
                f"; p99 {half.result['p99_us'] / 1000:.1f} ms at {half.rate:,.0f} req/s "
                "(half its rate; target ≤ 20 ms)"
            )
        print(line)


def print_python(rows: list[Row], backends: list[str], args: argparse.Namespace) -> None:
    """The Python load generators' table: every operation against the peer and the ceiling."""
    print()
    print(
        f"sessionhub REST bench: {os.cpu_count()} CPU cores (server, database and load "
        f"generator share them), {args.concurrency} requests in flight from "
        f"{args.processes} processes ({args.client} HTTP/1.1 keep-alive), "
        f"{args.duration:g} s each, log level {args.log_level}"
    )
    print()
    header = (
        f"{'backend':<11} {'operation':<26} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>7} {'vs peer':>8} {'vs ceiling':>10}"
    )
    print(header)
    print("-" * len(header))
    for name in backends:
        mine = [r for r in rows if r.backend == name]
        peer = next(r for r in mine if r.what.startswith("peer"))
        ceiling = next(r for r in mine if r.what.startswith("ceiling"))
        for r in mine:
            ratio = r.rate / peer.rate if peer.rate else 0.0
            xc = r.rate / ceiling.rate if ceiling.rate else 0.0
            print(
                f"{r.backend:<11} {r.what:<26} {r.rate:>9.0f} {r.pct(0.5):>8.1f} "
                f"{r.pct(0.99):>8.1f} {r.result.errors:>7} {ratio:>7.2f}x {xc:>9.2f}x"
            )
    print()
    print(
        "vs peer = rate / the peer's rate on the same backend, measured in this run "
        "(1.00x = as fast as one bare UPDATE per request); vs ceiling = rate / that of a "
        "FastAPI PATCH route returning {} on the same uvicorn configuration."
    )
