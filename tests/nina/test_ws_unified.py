"""``/ws/unified`` (seed 000) on a real server, fed by the simulated rig over real sockets:
``connection``, the current ``unifiedSession``, then every change and ``nina-event`` live,
heartbeats, and the token rules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.live import LiveServer, make_settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sessionhub.connectors.nina.simulator import NinaSimulator

from .harness import RIG, SMALL, TZ

pytestmark = pytest.mark.slow


@pytest.fixture
async def rig() -> AsyncIterator[NinaSimulator]:
    sim = NinaSimulator(plan=SMALL, seed=7, timezone=TZ, speed=1e6)  # a night in a blink
    await sim.start()
    try:
        yield sim
    finally:
        await sim.close()


def server(tmp_path: Path, sim: NinaSimulator, **extra: Any) -> LiveServer:
    settings = make_settings(
        tmp_path,
        nina_url=f"{RIG}={sim.url}",
        nina_timezone=TZ,
        nina_backoff_initial=0.02,
        nina_backoff_max=0.1,
        nina_guider_poll_interval=3600.0,
        **extra,
    )
    return LiveServer(settings).start()


async def recv(ws: ClientConnection, wait: float = 10.0) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), wait))
    return message


async def until(ws: ClientConnection, kind: str) -> dict[str, Any]:
    for _ in range(1000):
        message = await recv(ws)
        if message["type"] == kind:
            return message
    raise AssertionError(f"no {kind}")


async def test_connection_then_the_state_then_every_change_live(
    tmp_path: Path, rig: NinaSimulator
) -> None:
    live = server(tmp_path, rig, nina_heartbeat_interval=0.3)
    try:
        url = live.socket_url("/ws/unified", live.token("root", "admin"))
        async with connect(url, open_timeout=10) as ws:
            first = await recv(ws)
            assert first["type"] == "connection" and first["data"]["rigs"] == [RIG]
            state = await recv(ws)
            assert state["type"] == "unifiedSession"
            assert {"session_id", "target_name", "is_safe", "recent_events"} <= set(state["data"])
            sent = time.perf_counter()
            # The whole night through the rig's live socket, read as it comes.
            playing = asyncio.create_task(rig.play(rig.remaining))
            event = await until(ws, "nina-event")
            latency = time.perf_counter() - sent
            assert event["data"]["Source"] == "NINA" and event["data"]["Rig"] == RIG
            assert latency < 5.0
            last: dict[str, Any] = {}
            for _ in range(2000):
                message = await recv(ws)
                if message["type"] == "unifiedSession":
                    last = message["data"]
                    if last.get("session_state") == "finished" or last.get("end_time"):
                        break
            await playing
            assert last.get("total_images", 0) > 0
            assert (await until(ws, "heartbeat"))["type"] == "heartbeat"
    finally:
        live.stop()


async def test_the_token_rules_are_kato_s(tmp_path: Path, rig: NinaSimulator) -> None:
    live = server(tmp_path, rig)
    try:
        for url, code in (
            (live.socket_url("/ws/unified"), 3500),
            (live.socket_url("/ws/unified", "garbage"), 3500),
            (live.socket_url("/ws/unified", live.token("alice")), 3507),
            (live.socket_url("/ws/unified", live.token("root", "admin"), rig="nope"), 4404),
        ):
            async with connect(url, open_timeout=10) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await recv(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == code, url
        # The rig's own token may follow it.
        async with connect(live.socket_url("/ws/unified", live.token(RIG)), open_timeout=10) as ws:
            assert (await recv(ws))["type"] == "connection"
    finally:
        live.stop()
    anonymous = server(tmp_path / "anon", rig, nina_allow_anonymous=True)
    try:
        async with connect(anonymous.socket_url("/ws/unified"), open_timeout=10) as ws:
            assert (await recv(ws))["type"] == "connection"
            assert (await recv(ws))["type"] == "unifiedSession"
    finally:
        anonymous.stop()
