"""``fanout.py --check``: the load generator tested against the trivial C broadcast server
of ``loadgen serve`` (counts and sequence checks exact, with drops and duplicates injected;
latency right, with a delay injected) and its ceiling on this machine, before its numbers
are trusted against real servers."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from fanout_parts.loadgen import Fleet
from fanout_parts.machine import BUSY
from fanout_parts.servers import Server, start_server
from fanout_parts.workload import WINDOW


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
