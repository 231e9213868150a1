"""``sessionhub demo``: a server on a temporary SQLite with something moving in every kind.

One command, one process, one event loop: the server (as ``sessionhub serve`` runs it), a
NINA simulator playing nights at high speed (the imaging kind), and scripted users over the
public API - a remote-access request waiting for approval and a supervised one running
commands, a screen share sending moving frames, a workspace chatting, generic sessions that
come and go, and a room with players (``@handles`` on ``/room/<slug>``, speaking Aesthetic
Computer's protocol, moving in a world, one of them leaving and coming back now and then).
It prints the dashboard's sign-in link and stops cleanly on Ctrl-C (SIGINT/SIGTERM),
deleting its temporary data.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import random
import shutil
import signal
import struct
import tempfile
import time
import zlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

log = logging.getLogger("sessionhub.demo")

RIG = "demo-rig"
#: The demo's room, its players and how often each moves (a second's worth of moves is tiny).
ROOM = "plaza"
PLAYERS = ("@ada", "@basho", "@cleo")
MOVES_PER_SECOND = 3.0
#: Seconds between guider polls: often enough that the RMS chart fills at the night's speed.
GUIDER_POLL = 1.0
#: Frames of the demo screen share: small, so the demo costs little.
FRAME_SIZE = (320, 180)


def png(width: int, height: int, t: float) -> bytes:
    """A small PNG that changes with ``t``: a sky gradient with a moving bar (no library)."""
    bar = int((math.sin(t) * 0.5 + 0.5) * (width - 40))
    rows = []
    for y in range(height):
        shade = 40 + y * 120 // height
        row = bytearray([0])  # filter type 0 per row
        for x in range(width):
            if bar <= x < bar + 40 and height // 3 <= y < 2 * height // 3:
                row += bytes((240, 180, 60))
            else:
                row += bytes((20, shade // 2, shade))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 6))
        + chunk(b"IEND", b"")
    )


class Script:
    """The scripted users: each ``act`` is one loop of one user, run until stopped."""

    def __init__(self, base: str, tokens: dict[str, str], *, pace: float = 1.0) -> None:
        self.base = base
        self.ws_base = "ws" + base.removeprefix("http")
        self.tokens = tokens
        self.pace = pace
        self.rng = random.Random(7)
        self.http = httpx.AsyncClient(base_url=base, timeout=10)

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    async def close(self) -> None:
        await self.http.aclose()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self.pace)

    async def remote_access(self) -> None:
        """A request waiting for an admin's approval (one at a time), and a supervised session
        whose commands are approved and complete."""
        h = self.headers("dana")
        while True:
            pending = (await self.http.get("/api/sessions/active", headers=h)).json()
            waiting = [s for s in pending["active_sessions"] if s["status"] == "pending_approval"]
            if not waiting:
                await self.http.post(
                    "/api/remote/start", json={"safety_mode": "autonomous"}, headers=h
                )
            r = await self.http.post(
                "/api/remote/start", json={"safety_mode": "supervised"}, headers=h
            )
            sid = r.json()["session_id"]
            for command in ("uptime", "df -h", "ls -la /var/log"):
                await self.sleep(2)
                c = await self.http.post(
                    f"/api/remote/{sid}/commands", json={"command": command}, headers=h
                )
                cid = c.json()["command"]["id"]
                await self.sleep(1.5)
                admin = self.headers("admin")
                await self.http.post(f"/api/remote/{sid}/commands/{cid}/approve", headers=admin)
                output = {"exit_code": 0, "output": f"{command}: ok ({time.strftime('%X')})"}
                await self.http.post(
                    f"/api/remote/{sid}/commands/{cid}/complete", json=output, headers=h
                )
                await self.http.post(f"/api/sessions/heartbeat/{sid}", headers=h)
            await self.sleep(3)
            await self.http.post(f"/api/remote/stop/{sid}", json={"reason": "done"}, headers=h)

    async def screen_share(self) -> None:
        """A share whose sharer sends a moving picture, a few frames a second."""
        from websockets.asyncio.client import connect

        h = self.headers("erin")
        while True:
            r = await self.http.post(
                "/api/screen_share/start", json={"quality": "low", "viewers": ["dana"]}, headers=h
            )
            sid = r.json()["session_id"]
            url = f"{self.ws_base}/stream/{sid}?role=sharer&token={self.tokens['erin']}"
            with contextlib.suppress(Exception):
                async with connect(url, max_size=None) as ws:
                    await ws.recv()  # ready
                    started = time.monotonic()
                    while time.monotonic() - started < 90 * self.pace:
                        await ws.send(png(*FRAME_SIZE, time.monotonic()))
                        await asyncio.sleep(0.25)
            await self.http.post("/api/screen_share/stop", json={"session_id": sid}, headers=h)
            await self.sleep(5)

    async def workspace(self) -> None:
        """A workspace chatting: the user asks, the assistant answers, now and then a new one."""
        h = self.headers("42")
        lines = [
            ("user", "Find recent papers on CRISPR base editing."),
            ("assistant", "I found 12 papers from the last two years; three are reviews."),
            ("user", "Summarise the reviews."),
            ("assistant", "All three compare adenine and cytosine base editors for safety."),
            ("user", "Link this to the gene-therapy mission."),
        ]
        while True:
            ws = (await self.http.post("/api/sessions/", json={}, headers=h)).json()
            await self.http.post(f"/api/sessions/{ws['id']}/link-mission/mission-7", headers=h)
            for role, content in lines:
                await self.sleep(3)
                await self.http.post(
                    f"/api/sessions/{ws['id']}/messages",
                    json={"role": role, "content": content},
                    headers=h,
                )
                await self.http.post(f"/api/sessions/{ws['id']}/activity", headers=h)
            await self.sleep(10)

    async def room(self) -> None:
        """A room with players: each on ``/room/<slug>`` with its ``@handle``, in the world
        ``field``, moving a few times a second; the last one leaves now and then and comes
        back (a new connection, as a reloaded tab would)."""
        await asyncio.gather(
            *(
                self.player(handle, n, roams=n == len(PLAYERS) - 1)
                for n, handle in enumerate(PLAYERS)
            )
        )

    async def player(self, handle: str, n: int, *, roams: bool) -> None:
        """One player's tab, in Aesthetic Computer's protocol (``session.mjs``)."""
        from websockets.asyncio.client import connect

        rng = random.Random(n)
        x, y = rng.randrange(8, 56), rng.randrange(8, 56)
        url = f"{self.ws_base}/room/{ROOM}"
        loop = asyncio.get_running_loop()

        def message(type_: str, content: object) -> str:
            return json.dumps({"type": type_, "content": content})

        while True:
            async with connect(url, max_size=1 << 20) as ws:
                # What the others send is read and dropped: a player that never reads would
                # be a slow reader, and the relay closes those.
                reading = asyncio.create_task(_drain(ws))
                try:
                    await ws.send(message("location:broadcast", {"handle": handle, "slug": ROOM}))
                    pos = {"x": x, "y": y}
                    await ws.send(message("world:field:join", {"handle": handle, "pos": pos}))
                    stay = rng.uniform(20, 40) * self.pace if roams else math.inf
                    until = loop.time() + stay
                    while loop.time() < until:
                        x = min(63, max(0, x + rng.choice((-1, 0, 1))))
                        y = min(63, max(0, y + rng.choice((-1, 0, 1))))
                        await ws.send(message("world:field:move", {"pos": {"x": x, "y": y}}))
                        await asyncio.sleep(1 / MOVES_PER_SECOND)
                finally:
                    reading.cancel()
            await self.sleep(rng.uniform(5, 10))  # away for a moment

    async def generic(self) -> None:
        """Short generic sessions coming and going (the live counts move)."""
        h = self.headers("frank")
        live: list[str] = []
        while True:
            if len(live) < 3 or self.rng.random() < 0.5:
                r = await self.http.post(
                    "/api/sessions", json={"attributes": {"label": "job"}}, headers=h
                )
                live.append(r.json()["id"])
            else:
                sid = live.pop(0)
                await self.http.post(f"/api/sessions/{sid}/actions/end", headers=h)
            for sid in live:
                await self.http.post(f"/api/sessions/{sid}/heartbeat", headers=h)
            await self.sleep(2)


async def _drain(ws: ClientConnection) -> None:
    """Read and drop what a socket receives, until it closes."""
    with contextlib.suppress(Exception):
        async for _ in ws:
            pass


async def _forever(name: str, act: Callable[[], Awaitable[None]]) -> None:
    """Run one user's script; restart it after an error (a demo must not die of one)."""
    while True:
        try:
            await act()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("demo %s: %s: %s; starting over", name, type(exc).__name__, exc)
            await asyncio.sleep(2)


async def run(port: int, *, speed: float, pace: float, data_dir: Path) -> None:
    import uvicorn

    from .connectors.nina.simnight import NightPlan, generate_night
    from .connectors.nina.simulator import NinaSimulator
    from .server.app import create_app
    from .server.runtime import build_runtime
    from .server.serving import uvicorn_config
    from .settings import Settings

    sim = NinaSimulator(speed=speed, plan=NightPlan(seed=1))
    await sim.start()
    settings = Settings.from_env(
        {}, port=port, data_dir=data_dir, log_level="warning", sweep_interval=1.0
    )
    settings.extra.update(
        {
            "nina_url": f"{RIG}={sim.url}",
            "nina_timezone": "UTC",
            "nina_guider_poll_interval": GUIDER_POLL,
        }
    )
    runtime = build_runtime(settings)
    app = create_app(settings, runtime=runtime)
    server = uvicorn.Server(uvicorn_config(app, settings))
    serving = asyncio.create_task(server.serve(), name="demo-server")
    for _ in range(500):  # bounded: 10 s
        if server.started or serving.done():
            break
        await asyncio.sleep(0.02)
    if not server.started:
        await sim.close()
        raise RuntimeError("the demo server did not start")
    users = ("admin", "dana", "erin", "42", "frank")
    tokens = {
        u: runtime.auth.issue(u, ["admin"] if u == "admin" else [], ttl=timedelta(days=1))
        for u in users
    }
    url = settings.resolved_public_url()
    print(f"sessionhub demo on {url}", flush=True)
    print(f"dashboard sign-in link: {url}/?token={tokens['admin']}", flush=True)
    print("press Ctrl-C to stop", flush=True)
    script = Script(url, tokens, pace=pace)
    acts: dict[str, Callable[[], Awaitable[None]]] = {
        "remote access": script.remote_access,
        "screen share": script.screen_share,
        "workspace": script.workspace,
        "generic": script.generic,
        "room": script.room,
    }

    async def nights() -> None:
        night = 1
        while True:
            await sim.play()
            sim.script = generate_night(NightPlan(seed=1 + night))
            sim.position = 0
            night += 1

    tasks = [asyncio.create_task(_forever(n, a), name=f"demo-{n}") for n, a in acts.items()]
    tasks.append(asyncio.create_task(_forever("nina", nights), name="demo-nina"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait(
            {serving, asyncio.ensure_future(stop.wait())}, return_when="FIRST_COMPLETED"
        )
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await script.close()
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 15)
        await sim.close()
        print("demo stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    """``sessionhub demo [--port 8000] [--speed 600]``."""
    p = argparse.ArgumentParser(prog="sessionhub demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--speed", type=float, default=600.0, help="the NINA night's speed-up")
    p.add_argument("--pace", type=float, default=1.0, help="scripted users' pace (< 1: faster)")
    p.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    data_dir = Path(tempfile.mkdtemp(prefix="sessionhub-demo-"))
    try:
        asyncio.run(run(args.port, speed=args.speed, pace=args.pace, data_dir=data_dir))
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0
