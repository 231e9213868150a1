"""A NINA Advanced API on loopback: real HTTP and WebSocket, playing a generated night.

One port serves ``ws://HOST:PORT/v2/socket`` and the HTTP endpoints the connector uses
(``/v2/api/event-history``, ``/v2/api/image-history?all=true``,
``/v2/api/equipment/guider/info``, ``/v2/version``), through ``websockets``' HTTP hook. What
it sends follows the real rig: socket envelopes without time and with keys in random
order; history items whose times are offset local for most events, naive UTC for ``TS-*``
(and their ``TargetEndTime``) and naive local for log-scraped ones (``ERROR-*``,
``MOUNT-CENTER``, ``DOME-STOPPED``); ``[]`` leaves for history's filter names and target
coordinates; history ``IMAGE-SAVE`` without statistics (those are in the image history);
an empty image history answering 400 "Index out of range".

Controls for tests and demos: ``emit`` one event, ``play`` the script (at ``speed``, or by
moving an injected clock), ``restart`` (NINA restarted: sockets dropped, history empty),
``cut``/``restore`` (the network: sockets aborted, connections refused), ``inject`` a raw
frame (junk, huge, a flood). ``main`` runs it from the command line (``sessionhub nina-sim``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from ...core.model import JSON
from .simnight import NightPlan, SimEvent, generate_night

log = logging.getLogger("sessionhub.nina.sim")

#: History items of these events carry naive local times (NINA scrapes them from its log).
LOG_SCRAPED = ("MOUNT-CENTER", "DOME-STOPPED")
VERSION = "2.2.15.2"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _net(ts: datetime) -> str:
    """.NET's seven fractional digits."""
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond:06d}0"


def render_time(ts: datetime, event: str, zone: tzinfo) -> str:
    """A history ``Time`` as the real rig writes it for ``event``."""
    if event.startswith("TS-"):
        return _net(ts.astimezone(UTC))
    local = ts.astimezone(zone)
    if event.startswith("ERROR-") or event in LOG_SCRAPED:
        return _net(local)
    offset = local.strftime("%z")
    return _net(local) + f"{offset[:3]}:{offset[3:]}"


def _lose_leaves(value: Any) -> Any:
    """History's serializer loses nested values: every leaf becomes ``[]``."""
    if isinstance(value, dict):
        return {k: _lose_leaves(v) for k, v in value.items()}
    return []


class NinaSimulator:
    """The fake rig. ``clock`` is its time; with ``advance`` (e.g. a test's ``FakeClock``)
    ``play`` moves that clock instead of sleeping."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        timezone: str = "America/Chicago",
        seed: int = 0,
        speed: float = 1.0,
        script: Sequence[SimEvent] | None = None,
        plan: NightPlan | None = None,
        clock: Callable[[], datetime] = _utcnow,
        advance: Callable[[float], object] | None = None,
        lossy_history: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.zone = ZoneInfo(timezone)
        self.rng = random.Random(seed)
        self.speed = speed
        self.script = (
            list(script) if script is not None else generate_night(plan or NightPlan(seed=seed))
        )
        self.position = 0
        self.clock = clock
        self.advance = advance
        self.lossy_history = lossy_history
        self.history: list[JSON] = []
        self.images: list[JSON] = []
        #: (perf_counter, event, envelope) of every event emitted, for latency measurements.
        self.sent: list[tuple[float, str, JSON]] = []
        self.clients: set[ServerConnection] = set()
        self.connections = 0
        self.http_hits: dict[str, int] = {}
        self.guiding = False
        self.rms_served: list[float] = []
        self._server: Server | None = None
        self._clients_changed = asyncio.Event()

    # -- serving ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await serve(
            self._socket,
            self.host,
            self.port,
            process_request=self._http,
            ping_interval=None,
            compression=None,
            max_size=1 << 16,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        await self._stop_serving()

    async def _stop_serving(self) -> None:
        server, self._server = self._server, None
        for ws in list(self.clients):
            ws.transport.abort()  # a cut network sends no close frame
        if server is not None:
            server.close(close_connections=False)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        self.clients.clear()
        self._pulse()

    def _pulse(self) -> None:
        event, self._clients_changed = self._clients_changed, asyncio.Event()
        event.set()

    async def _socket(self, ws: ServerConnection) -> None:
        self.clients.add(ws)
        self.connections += 1
        self._pulse()
        try:
            await ws.wait_closed()
        finally:
            self.clients.discard(ws)
            self._pulse()

    def _http(self, conn: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/v2/socket":
            return None
        self.http_hits[path] = self.http_hits.get(path, 0) + 1
        if path == "/v2/api/event-history":
            return self._json(200, self._api(self.history))
        if path == "/v2/api/image-history":
            if not self.images:
                return self._json(400, self._api("", error="Index out of range", status=400))
            return self._json(200, self._api(self.images))
        if path == "/v2/api/equipment/guider/info":
            return self._json(200, self._api(self._guider_info()))
        if path == "/v2/version":
            return self._json(200, self._api(VERSION))
        return self._json(404, self._api("", error="Not found", status=404))

    def _api(self, response: Any, *, error: str = "", status: int = 200) -> JSON:
        return self._shuffled(
            {
                "Response": response,
                "Error": error,
                "StatusCode": status,
                "Success": status < 400,
                "Type": "API",
            }
        )

    @staticmethod
    def _json(status: int, body: JSON) -> Response:
        data = orjson.dumps(body)
        headers = Headers(
            [
                ("Content-Type", "application/json; charset=utf-8"),
                ("Content-Length", str(len(data))),
                ("Connection", "close"),
            ]
        )
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
        return Response(status, reason, headers, data)

    def _guider_info(self) -> JSON:
        rms = round(0.4 + self.rng.random() * 0.8, 2) if self.guiding else 0.0
        self.rms_served.append(rms)

        def axis(v: float) -> JSON:
            return {"Pixel": round(v / 1.52, 3), "Arcseconds": v}

        return self._shuffled(
            {
                "Connected": True,
                "Name": "PHD2",
                "DisplayName": "PHD2",
                "State": "Guiding" if self.guiding else "Stopped",
                "PixelScale": 1.52,
                "RMSError": {
                    "RA": axis(round(rms * 0.6, 2)),
                    "Dec": axis(round(rms * 0.8, 2)),
                    "Total": axis(rms),
                    "PeakRA": axis(round(rms * 2, 2)),
                    "PeakDec": axis(round(rms * 2.2, 2)),
                },
            }
        )

    def _shuffled(self, value: JSON) -> JSON:
        """The same object, keys in random order (NINA's payloads are .NET Hashtables)."""
        items = list(value.items())
        self.rng.shuffle(items)
        return dict(items)

    # -- the rig's events ------------------------------------------------------------------

    def _history_item(self, event: str, fields: JSON, ts: datetime) -> JSON:
        item: JSON = {"Event": event, "Time": render_time(ts, event, self.zone)}
        if event == "IMAGE-SAVE":
            return self._shuffled(item)  # history keeps no statistics
        for key, value in fields.items():
            if self.lossy_history and isinstance(value, dict):
                value = _lose_leaves(value)
            item[key] = value
        return self._shuffled(item)

    async def emit(
        self, event: str, fields: JSON | None = None, *, image: JSON | None = None
    ) -> JSON:
        """The rig does ``event`` now: into its history (and image history), onto the socket."""
        ts = self.clock()
        fields = dict(fields or {})
        if event.startswith("TS-") and event != "TS-WAITSTART":
            fields.setdefault(
                "TargetEndTime", _net((ts.astimezone(UTC)).replace(hour=11, minute=0))
            )
        response: JSON = {"Event": event, **fields}
        if image is not None:
            stats = dict(image)
            local = ts.astimezone(self.zone)
            offset = local.strftime("%z")
            stats["Date"] = _net(local) + f"{offset[:3]}:{offset[3:]}"
            stats = self._shuffled(stats)
            self.images.append(stats)
            response["ImageStatistics"] = stats
        if event == "GUIDER-START":
            self.guiding = True
        elif event == "GUIDER-STOP":
            self.guiding = False
        self.history.append(self._history_item(event, fields, ts))
        envelope = self._shuffled(
            {
                "Response": self._shuffled(response),
                "Error": "",
                "StatusCode": 200,
                "Success": True,
                "Type": "Socket",
            }
        )
        self.sent.append((time.perf_counter(), event, envelope))
        await self.send(orjson.dumps(envelope).decode())
        return envelope

    async def send(self, frame: str | bytes) -> None:
        for ws in list(self.clients):
            with contextlib.suppress(Exception):
                await ws.send(frame)

    async def inject(self, frame: str | bytes) -> None:
        """Send a raw frame (junk, a 10 MB frame, anything) to every connected client."""
        await self.send(frame)

    @property
    def remaining(self) -> int:
        return len(self.script) - self.position

    async def play(self, count: int | None = None) -> int:
        """Play the next ``count`` steps of the script (all by default); returns how many."""
        end = len(self.script) if count is None else min(len(self.script), self.position + count)
        played = 0
        while self.position < end:
            step = self.script[self.position]
            self.position += 1
            if self.advance is not None:
                self.advance(step.gap)
            elif step.gap > 0 and self.speed > 0:
                await asyncio.sleep(step.gap / self.speed)
            await self.emit(step.event, step.fields, image=step.image)
            played += 1
        return played

    # -- failures --------------------------------------------------------------------------

    async def restart(self) -> None:
        """NINA restarts: every socket drops, and its in-memory histories start empty."""
        await self.cut()
        self.history.clear()
        self.images.clear()
        self.guiding = False
        await self.restore()

    async def cut(self) -> None:
        """The network goes: sockets die without a close frame, connections are refused."""
        await self._stop_serving()

    async def restore(self) -> None:
        """The network (or NINA) is back on the same port."""
        if self._server is None:
            await self.start()

    async def wait_clients(self, n: int = 1, *, within: float = 5.0) -> None:
        """Until at least ``n`` sockets are connected."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(self.clients) < n:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"{len(self.clients)} of {n} clients connected")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._clients_changed.wait(), remaining)


async def _run(args: argparse.Namespace) -> None:
    plan = NightPlan(seed=args.seed, sequence_start=not args.no_sequence_start)
    sim = NinaSimulator(
        host=args.host,
        port=args.port,
        timezone=args.timezone,
        seed=args.seed,
        speed=args.speed,
        plan=plan,
    )
    await sim.start()
    print(f"NINA simulator on {sim.url} (socket ws://{sim.host}:{sim.port}/v2/socket), "
          f"{len(sim.script)} events at {args.speed}x", flush=True)  # fmt: skip
    try:
        nights = 0
        while True:
            await sim.play()
            nights += 1
            print(f"night {nights} played", flush=True)
            if not args.loop:
                break
            sim.script = generate_night(NightPlan(seed=args.seed + nights))
            sim.position = 0
        if not args.exit:
            await asyncio.Event().wait()  # keep serving the history until interrupted
    finally:
        await sim.close()


def main(argv: list[str] | None = None) -> int:
    """``sessionhub nina-sim``: serve a simulated NINA rig on loopback."""
    p = argparse.ArgumentParser(prog="sessionhub nina-sim", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1888)
    p.add_argument("--speed", type=float, default=60.0, help="how many times faster than life")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timezone", default="America/Chicago", help="the rig's IANA zone")
    p.add_argument(
        "--no-sequence-start", action="store_true", help="a night without SEQUENCE-STARTING"
    )
    p.add_argument("--loop", action="store_true", help="play night after night")
    p.add_argument("--exit", action="store_true", help="exit when the night is played")
    args = p.parse_args(argv)
    if args.speed <= 0:
        p.error("--speed must be positive")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(args))
    return 0
