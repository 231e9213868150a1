"""NINA ingest: events per second from a simulated rig into committed changes and
``nina:<rig>`` publications, and the rig-to-publication latency.

The rig is the NINA simulator in a process of its own (real HTTP + WebSocket on loopback,
as a rig is another machine); sessionhub is a runtime on SQLite in a temporary directory
(memory broker) with the connector following the rig, and a subscriber on ``nina:<rig>`` -
what ``/ws/unified`` relays to browsers verbatim. Latency runs from the moment the rig
hands an image's frame to its socket (stamped into the frame) to the moment that image's
``nina-event`` is published (the socket hop to a browser comes on top). Both processes read
the same monotonic clock.

The rig's events are a night's working mix: per exposure one ``IMAGE-SAVE`` (a change),
one ``GUIDER-DITHER`` (a change), the scheduler's repeated ``TS-TARGETSTART`` and a parked
mount's ``MOUNT-HOMED`` (repeats: no write, no push). Two runs:

- **paced**: a steady rate (``--rate`` events/s), to read latency when the rig is busy;
- **flood**: as fast as the rig can send (``--events``), to read throughput: under load the
  connector folds the events waiting into one commit.

    .venv/bin/python bench/ingest.py [--rate 200] [--seconds 5] [--events 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from sessionhub.connectors.nina.config import NinaConfig
from sessionhub.connectors.nina.service import NinaService
from sessionhub.connectors.nina.simulator import NinaSimulator
from sessionhub.core.streams import Publication
from sessionhub.kinds.imaging import Imaging
from sessionhub.kinds.registry import Registry
from sessionhub.server.runtime import build_runtime
from sessionhub.settings import Settings

RIG = "bench"
TARGET = {
    "TargetName": "M 31",
    "ProjectName": "Andromeda",
    "Coordinates": {"RA": 0.7123, "Dec": 41.269, "RAString": "00:42:44", "DecString": "41:16:08"},
}


# -- the rig's process ------------------------------------------------------------------------


def stats(n: int) -> dict[str, Any]:
    return {
        "ExposureTime": 300.0,
        "ImageType": "LIGHT",
        "Filter": "LRGB"[n % 4],
        "Temperature": -10.0,
        "HFR": 1.8,
        "Stars": 2000,
        "Filename": f"light_{n:07d}.fits",
        "SentAt": time.perf_counter(),
    }


async def emit(sim: NinaSimulator, n: int) -> None:
    """The ``n``-th event of the mix."""
    kind = n % 4
    if kind == 0:
        await sim.emit("IMAGE-SAVE", image=stats(n // 4))
    elif kind == 1:
        await sim.emit("GUIDER-DITHER")
    elif kind == 2:
        await sim.emit("TS-TARGETSTART", TARGET)
    else:
        await sim.emit("MOUNT-HOMED")


async def rig() -> None:
    """Serve a simulated rig; run the commands read from stdin: ``start``, ``run N RATE``."""
    sim = NinaSimulator(speed=0, seed=1, timezone="UTC")
    await sim.start()
    print(sim.port, flush=True)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    first = 0
    while line := (await reader.readline()).decode().split():
        if line[0] == "start":
            await sim.wait_clients(1, within=10)
            await sim.emit("SEQUENCE-STARTING")
            await sim.emit("TS-NEWTARGETSTART", TARGET)
            await sim.emit("MOUNT-HOMED")
        elif line[0] == "run":
            total, rate = int(line[1]), float(line[2])
            start = time.perf_counter()
            for n in range(first, first + total):
                if rate > 0:
                    delay = start + (n - first) / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                elif n % 32 == 0:
                    await asyncio.sleep(0)  # let the socket drain, as a real sender does
                await emit(sim, n)
            first += total
        print("done", flush=True)
    await sim.close()


# -- sessionhub's side ------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    sent: int
    seconds: float
    commits: int
    publications: int
    latencies: list[float]

    def row(self) -> list[str]:
        lat = sorted(self.latencies)
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else 0.0
        return [
            self.name,
            f"{self.sent}",
            f"{self.sent // 2}",
            f"{self.sent / self.seconds:,.0f}",
            f"{self.commits}",
            f"{self.publications}",
            f"{statistics.median(lat) * 1000:.1f}" if lat else "-",
            f"{p99 * 1000:.1f}",
        ]


class Subscriber:
    """Publications on ``nina:<rig>``; the latency of every image's ``nina-event``."""

    def __init__(self) -> None:
        self.count = 0
        self.images = 0
        self.latencies: list[float] = []
        self.changed = asyncio.Event()

    def __call__(self, pub: Publication) -> None:
        now = time.perf_counter()
        self.count += 1
        message = orjson.loads(pub.data)
        if message["type"] == "nina-event" and message["data"]["Type"] == "IMAGE-SAVE":
            self.latencies.append(now - message["data"]["Data"]["ImageStatistics"]["SentAt"])
            self.images += 1
            self.changed.set()

    async def wait_images(self, n: int, within: float = 120.0) -> None:
        deadline = time.perf_counter() + within
        while self.images < n and time.perf_counter() < deadline:
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 1.0)


async def main(args: argparse.Namespace) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--rig", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    port = int(await child.stdout.readline())

    async def command(text: str) -> None:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(text.encode() + b"\n")
        await child.stdin.drain()
        assert (await child.stdout.readline()).strip() == b"done"

    data = Path(tempfile.mkdtemp(prefix="sessionhub-ingest-"))
    runtime = build_runtime(Settings(data_dir=data, jwt_secret="b" * 32, sweep_interval=3600.0))
    if "imaging" not in runtime.hub.kinds:
        runtime.hub.kinds = Registry([*runtime.hub.kinds.values(), Imaging()])
    await runtime.start()
    config = NinaConfig.load(
        {}, {"nina_url": f"{RIG}=http://127.0.0.1:{port}", "nina_timezone": "UTC"}
    )
    assert config is not None
    service = NinaService(runtime.hub, config)
    sub = Subscriber()
    runtime.hub.broker.subscribe(f"nina:{RIG}", sub)
    results: list[Result] = []
    try:
        await service.start()
        runner = service.runner(RIG)
        await runner.wait_for(lambda r: r.status.connected and r.idle, 10)
        await command("start")
        await runner.wait_for(lambda r: r.state.active and r.idle, 10)
        for name, total, rate in (
            ("paced", int(args.rate * args.seconds), args.rate),
            ("flood", args.events, 0.0),
        ):
            total -= total % 4
            commits, pubs, images = runtime.hub.stats.events_published, sub.count, sub.images
            sub.latencies = []
            start = time.perf_counter()
            await command(f"run {total} {rate}")
            await sub.wait_images(images + total // 4)
            await runner.wait_for(lambda r: r.idle, 30)
            results.append(
                Result(
                    name,
                    total,
                    time.perf_counter() - start,
                    runtime.hub.stats.events_published - commits,
                    sub.count - pubs,
                    sub.latencies,
                )
            )
        health = runner.health()
    finally:
        await service.close()
        await runtime.close()
        if child.stdin is not None:
            child.stdin.close()
        await child.wait()
    header = ["run", "events", "changes", "events/s", "commits", "publications",
              "p50 ms", "p99 ms"]  # fmt: skip
    rows = [header, *(r.row() for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    c = health["counts"]
    print(
        f"\nchanges: events that change the night (the rest are repeats: no write, no push); "
        f"commits: hub events written; publications: nina-event + unifiedSession + "
        f"sessionUpdate. Connector totals: {c['events']} events, {c['commits']} commits, "
        f"bad input {health['bad_input']}. SQLite (synchronous=FULL), memory broker, one rig."
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=200.0, help="events/s of the paced run")
    p.add_argument("--seconds", type=float, default=5.0, help="length of the paced run")
    p.add_argument("--events", type=int, default=20_000, help="events of the flood run")
    p.add_argument("--rig", action="store_true", help=argparse.SUPPRESS)
    arguments = p.parse_args()
    asyncio.run(rig() if arguments.rig else main(arguments))
