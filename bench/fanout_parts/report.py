"""The report: the full table (medians over the rounds), the issue's compact table, the
ratios to uWebSockets and Node ws, the sequence checks' totals, and whether the machine was
quiet enough to quote."""

from __future__ import annotations

import os
from typing import Any

from fanout_parts import machine
from fanout_parts.machine import BUSY
from fanout_parts.runs import Cell, Memory, Plan
from fanout_parts.servers import Server
from fanout_parts.workload import LABEL, WINDOW


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
        f"servers pinned to CPU {sorted(machine.SERVER_CPUS)}, load generator to CPU "
        f"{sorted(machine.LOADGEN_CPUS or [])}"
        if machine.SERVER_CPUS
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
