"""The runs: the plan (phases and their commands), the results of every (server, N, mode)
over the rounds, the idle memory per connection, and the rounds themselves, whose server
order rotates so that a slow spell of the machine falls on every server alike."""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from fanout_parts.loadgen import Fleet
from fanout_parts.machine import BUSY
from fanout_parts.servers import Server, Unavailable, admin_token, start_server
from fanout_parts.workload import LABEL, WINDOW


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
