"""Helpers of the NINA connector tests: the simulator's shared clock, a harness, truths.

The simulator and the hub share one ``FakeClock``: the simulator moves it by each step's
gap before emitting, so a night of hours plays in milliseconds, history times and receipt
stamps agree, and the scheduler's idle sweep can be driven by hand. Tests never sleep to
synchronise: ``Harness.barrier`` sends a message frame (a bare-string ``Response``, which
the connector counts and otherwise ignores) and waits until the connector has processed
it - the connector handles a rig's input in order, so everything sent before is done.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from conftest import FakeClock
from sessionhub.connectors.nina.config import NinaConfig
from sessionhub.connectors.nina.runner import RigRunner
from sessionhub.connectors.nina.service import NinaService
from sessionhub.connectors.nina.simnight import DEFAULT_TARGETS, NightPlan, SimEvent
from sessionhub.connectors.nina.simulator import NinaSimulator
from sessionhub.core.streams import Publication
from sessionhub.kinds.imaging import Imaging
from sessionhub.kinds.registry import Registry
from sessionhub.server.app import create_app
from sessionhub.server.compat import nina as nina_routes
from sessionhub.server.runtime import Runtime

TZ = "America/Chicago"
RIG = "nightsky"
TOPIC = f"nina:{RIG}"
#: 19:30 local (CDT) on 2026-09-03: dusk.
DUSK = datetime(2026, 9, 4, 0, 30, tzinfo=UTC)
#: Real payloads recorded from live rigs, kept beside the repository (never copied into it).
FIXTURE = Path(
    os.environ.get(
        "SESSIONHUB_NINA_FIXTURE",
        Path(__file__).resolve().parents[3]
        / "shared"
        / "fixtures"
        / "nina"
        / "recorded_events.json",
    )
)

#: A short night: two targets, two filters, two subs each, a short unsafe pause, a few flats
#: and darks (about 110 events).
SMALL = NightPlan(
    seed=7,
    targets=DEFAULT_TARGETS[:2],
    filters=("L", "R"),
    subs_per_filter=2,
    homed_repeats=4,
    flats_per_filter=3,
    darks=2,
)


def truth(script: list[SimEvent]) -> dict[str, Any]:
    """What a night's script holds, counted here from the script itself (not by the fold)."""
    by_type: dict[str, int] = {}
    per_filter: dict[str, int] = {}
    exposure = 0.0
    for step in script:
        if step.event == "IMAGE-SAVE" and step.image is not None:
            kind = step.image["ImageType"]
            by_type[kind] = by_type.get(kind, 0) + 1
            if kind == "LIGHT":
                per_filter[step.image["Filter"]] = per_filter.get(step.image["Filter"], 0) + 1
                exposure += step.image["ExposureTime"]
    return {
        "images_by_type": by_type,
        "images_per_filter": per_filter,
        "total_images": by_type.get("LIGHT", 0),
        "total_exposure_time": exposure,
    }


def nina_config(url: str, **extra: Any) -> NinaConfig:
    values: dict[str, Any] = {
        "nina_url": f"{RIG}={url}",
        "nina_timezone": TZ,
        "nina_backoff_initial": 0.02,
        "nina_backoff_max": 0.1,
        "nina_connect_timeout": 2.0,
        "nina_http_timeout": 2.0,
        "nina_guider_poll_interval": 3600.0,
    }
    values.update({f"nina_{k}": v for k, v in extra.items()})
    config = NinaConfig.load({}, values)
    assert config is not None
    return config


def with_imaging(runtime: Runtime) -> None:
    """Register the imaging kind on this runtime's hub if the build does not yet."""
    if "imaging" not in runtime.hub.kinds:
        runtime.hub.kinds = Registry([*runtime.hub.kinds.values(), Imaging()])


class Recorder:
    """Every publication on one topic, decoded, with its arrival time."""

    def __init__(self) -> None:
        self.items: list[tuple[float, dict[str, Any]]] = []
        self._pulse = asyncio.Event()

    def __call__(self, pub: Publication) -> None:
        self.items.append((time.perf_counter(), json.loads(pub.data)))
        pulse, self._pulse = self._pulse, asyncio.Event()
        pulse.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for _, m in self.items if m["type"] == kind]

    async def wait(self, predicate: Callable[[Recorder], bool], within: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not predicate(self):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("publication not seen")
            with suppress(TimeoutError):
                await asyncio.wait_for(self._pulse.wait(), remaining)


@dataclass
class Harness:
    runtime: Runtime
    sim: NinaSimulator
    clock: FakeClock
    http: httpx.AsyncClient
    admin: dict[str, str]
    service: NinaService | None = None
    recorder: Recorder = field(default_factory=Recorder)
    barriers: int = 0
    make_service: Callable[[], NinaService] | None = None

    @property
    def runner(self) -> RigRunner:
        assert self.service is not None
        return self.service.runner(RIG)

    async def start(self) -> NinaService:
        """Start the connector (the runtime runs already) and wait for its first seed."""
        assert self.make_service is not None
        self.service = self.make_service()
        self.runtime.nina = self.service  # type: ignore[attr-defined]
        await self.service.start()
        await self.connected()
        return self.service

    async def connected(self, *, reconnects: int = 0) -> None:
        await self.runner.wait_for(
            lambda r: (
                r.status.connected and r.status.to_json()["reconnects"] >= reconnects and r.idle
            ),
            5.0,
        )
        await self.barrier()

    async def barrier(self) -> None:
        """Wait until the connector has processed everything the rig sent so far."""
        self.barriers += 1
        n = self.runner.status.counts.get("messages", 0) + 1
        await self.sim.inject(
            json.dumps({"Response": f"barrier {self.barriers}", "Type": "Socket"})
        )
        await self.runner.wait_for(
            lambda r: r.status.counts.get("messages", 0) >= n and r.idle, 5.0
        )

    async def play(self, count: int | None = None) -> int:
        """Play ``count`` steps (all by default) as a rig would: each is received (and
        stamped) before the rig's clock moves on to the next."""
        n = self.sim.remaining if count is None else count
        played = 0
        for _ in range(n):
            live = self.service is not None and self.runner.status.connected
            target = self.runner.status.counts.get("frames", 0) + 1 if live else 0
            played += await self.sim.play(1)
            if live:
                # Received and stamped (processing may lag behind, as under real load).
                await self.runner.wait_for(
                    lambda r: r.status.counts.get("frames", 0) >= target,  # noqa: B023
                    5.0,
                )
        if self.service is not None and self.runner.status.connected:
            await self.barrier()
        return played

    def steps_until(self, event: str, *, including: bool = True) -> int:
        """How many steps of the script lead to (and include) its next ``event``."""
        script = self.sim.script
        i = next(n for n in range(self.sim.position, len(script)) if script[n].event == event)
        return i - self.sim.position + (1 if including else 0)

    async def play_until(self, event: str, *, including: bool = True) -> None:
        """Play up to (and by default including) the next ``event`` of the script."""
        await self.play(self.steps_until(event, including=including))

    async def state(self, **params: str) -> dict[str, Any]:
        r = await self.http.get("/api/nina/session-state", params=params, headers=self.admin)
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    async def session_events(self, session_id: str) -> list[dict[str, Any]]:
        r = await self.http.get(
            f"/api/sessions/{session_id}/events", params={"limit": 1000}, headers=self.admin
        )
        assert r.status_code == 200, r.text
        body = r.json()
        return body["items"] if isinstance(body, dict) else body


@asynccontextmanager
async def open_harness(
    runtime: Runtime, sim: NinaSimulator, clock: FakeClock, admin: dict[str, str], **extra: Any
) -> AsyncIterator[Harness]:
    """The runtime's app running (lifespan), an in-process client, the connector ready to
    start (``Harness.start``) with settings ``extra``; everything stopped on exit."""
    with_imaging(runtime)
    app = create_app(runtime=runtime)
    if not any(getattr(r, "path", None) == "/api/nina/session-state" for r in app.routes):
        app.include_router(nina_routes.router)  # until the lead wires it into ROUTERS
    config = nina_config(sim.url, **extra)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            h = Harness(runtime, sim, clock, http, admin)
            h.make_service = lambda: NinaService(runtime.hub, config, rng=random.Random(3))
            unsubscribe = runtime.hub.broker.subscribe(TOPIC, h.recorder)
            try:
                yield h
            finally:
                unsubscribe()
                if h.service is not None:
                    await h.service.close()
