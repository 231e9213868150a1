"""Seed 001's counts in-process: exact from hub events, no double counting on replays.

The HTTP API drives the changes; ``runtime.kato`` is the ``/ws`` service, whose ``counts``
(a consumer of the event log) feed every ``session_event``. A sink collects the messages the
clients would get; ``settled`` waits until the consumers have read the log to its end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import create_engine, update
from tests.inprocess import serve_in_process

from sessionhub.consumers.counts import AlertTracker, Threshold
from sessionhub.server.realtime.conn import Conn
from sessionhub.server.realtime.kato import KatoConfig, KatoService
from sessionhub.server.realtime.socket import Handshake, Out
from sessionhub.server.runtime import Runtime, build_runtime
from sessionhub.settings import Settings
from sessionhub.store.schema import events
from sessionhub.store.sql import SqlStore

Auth = Callable[..., dict[str, str]]
SECRET = "counts-test-secret-0123456789abcdef0123"


def kato(runtime: Runtime) -> KatoService:
    assert runtime.kato is not None
    return runtime.kato


async def settled(runtime: Runtime) -> None:
    """The consumers have read the event log up to its end."""
    await runtime.consumers.drain()


def collect(runtime: Runtime) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    kato(runtime).counts.add_sink(seen.append)
    return seen


async def test_every_create_and_end_moves_the_count_by_one(
    client: httpx.AsyncClient, auth: Auth, runtime: Runtime, clock: Any
) -> None:
    seen = collect(runtime)
    alice = auth("alice")
    ids = [
        (await client.post("/api/sessions", json={}, headers=alice)).json()["id"] for _ in range(3)
    ]
    clock.advance(2.5)
    await client.post(f"/api/sessions/{ids[1]}/actions/end", headers=alice)
    # A workspace: created (+1), then superseded by a second one (+1, -1), then completed (-1).
    ws1 = (await client.post("/api/sessions/", json={}, headers=alice)).json()["id"]
    ws2 = (await client.post("/api/sessions/", json={}, headers=alice)).json()["id"]
    await client.post(f"/api/sessions/{ws2}/complete", headers=alice)
    # Changes that neither create nor end do not count.
    await client.patch(f"/api/sessions/{ids[0]}", json={"metadata": {"x": 1}}, headers=alice)
    await client.post(f"/api/sessions/{ids[0]}/heartbeat", headers=alice)

    await settled(runtime)
    kinds = [(m["event_type"], m["data"]["session_id"]) for m in seen]
    assert kinds == [
        ("session_created", ids[0]),
        ("session_created", ids[1]),
        ("session_created", ids[2]),
        ("session_destroyed", ids[1]),
        ("session_created", ws1),
        ("session_created", ws2),
        ("session_destroyed", ws1),
        ("session_destroyed", ws2),
    ]
    assert [m["data"]["current_count"] for m in seen] == [1, 2, 3, 2, 3, 4, 3, 2]
    assert [m["data"]["previous_count"] for m in seen] == [0, 1, 2, 3, 2, 3, 4, 3]
    assert {m["data"]["delta"] for m in seen} == {1}
    assert seen[3]["data"]["time_since_last_event"] == 2.5  # from the hub clock
    assert seen[3]["timestamp"] == "2026-01-01T12:00:02.500000Z"
    assert kato(runtime).counts.active == 2
    r = await client.get("/api/sessions/count", headers=auth("root", "admin"))
    assert r.json()["active_sessions"] == 2


async def test_deleting_ended_sessions_does_not_count_again(
    client: httpx.AsyncClient, auth: Auth, runtime: Runtime, clock: Any
) -> None:
    alice = auth("alice")
    sid = (await client.post("/api/sessions/", json={}, headers=alice)).json()["id"]
    await settled(runtime)  # its creation counted; from here on, what the sweeps change
    seen = collect(runtime)
    clock.advance(25 * 3600)
    await runtime.scheduler.sweep()  # abandoned: -1
    clock.advance(8 * 86400)
    await runtime.scheduler.sweep()  # archived: an ended state to another, no change
    clock.advance(91 * 86400)
    report = await runtime.scheduler.sweep()  # deleted: was not live, no change
    assert report.deleted == [sid]
    await settled(runtime)
    assert [(m["event_type"], m["data"]["current_count"]) for m in seen] == [
        ("session_destroyed", 0)
    ]


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    runtime = build_runtime(settings)
    async with serve_in_process(runtime) as c:
        yield c, runtime


async def _unpublish_everything(runtime: Runtime) -> None:
    store = runtime.hub.store
    assert isinstance(store, SqlStore)
    async with store.engine.begin() as conn:
        await conn.execute(update(events).values(published=False))


async def test_outbox_replays_after_a_restart_do_not_double_count(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", jwt_secret=SECRET, sweep_interval=3600.0)
    async with serve(settings) as (client, rt):
        alice = {"Authorization": f"Bearer {rt.auth.issue('alice')}"}
        ids = [
            (await client.post("/api/sessions", json={}, headers=alice)).json()["id"]
            for _ in range(4)
        ]
        await client.post(f"/api/sessions/{ids[0]}/actions/end", headers=alice)
        await settled(rt)
        assert kato(rt).counts.active == 3
    # As if the process had died after committing but before publishing anything.
    engine = create_engine(f"sqlite:///{settings.data_dir / 'sessionhub.db'}")
    with engine.begin() as conn:
        conn.execute(update(events).values(published=False))
    engine.dispose()

    async with serve(settings) as (client, rt):
        assert rt.hub.stats.republished == 5  # every event came out of the outbox again
        await settled(rt)
        assert kato(rt).counts.active == 3  # ... and none of them was counted twice
        seen = collect(rt)
        # A replay while running (the outbox found unmarked again) changes nothing either:
        # the broker holds those events already, so they are marked, not published twice.
        await _unpublish_everything(rt)
        assert await rt.hub.republish_outbox() == 0
        assert rt.hub.outbox.stats.already_published == 5
        await settled(rt)
        assert seen == [] and kato(rt).counts.active == 3
        # Real changes still count.
        alice = {"Authorization": f"Bearer {rt.auth.issue('alice')}"}
        await client.post(f"/api/sessions/{ids[1]}/actions/end", headers=alice)
        await settled(rt)
        assert [m["data"]["current_count"] for m in seen] == [2]


async def test_kinds_setting_limits_what_is_counted(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "d",
        jwt_secret=SECRET,
        sweep_interval=3600.0,
        extra={"kato_kinds": "workspace"},
    )
    async with serve(settings) as (client, rt):
        seen = collect(rt)
        alice = {"Authorization": f"Bearer {rt.auth.issue('alice')}"}
        await client.post("/api/sessions", json={}, headers=alice)
        await client.post("/api/sessions/", json={}, headers=alice)
        await settled(rt)
        assert [m["data"]["kind"] for m in seen] == ["workspace"]
        parts = await kato(rt).snapshot()
        assert parts["sessions"] == {"active_count": 1, "total_count": 1}


def test_alerts_fire_once_per_upward_crossing() -> None:
    tracker = AlertTracker(
        [
            Threshold("high_cpu", 80.0, "High CPU usage", "%", 90.0),
            Threshold("off", 0.0, "disabled"),
        ]
    )
    assert tracker.check({"high_cpu": 50.0, "off": 1e9}) == []
    (alert,) = tracker.check({"high_cpu": 85.0})
    assert alert == {
        "level": "warning",
        "type": "high_cpu",
        "message": "High CPU usage: 85.0% (threshold 80%)",
        "value": 85.0,
        "threshold": 80.0,
    }
    assert tracker.check({"high_cpu": 99.0}) == []  # still above: no repeat
    assert tracker.check({"high_cpu": 80.0}) == []  # at the threshold: re-armed
    (again,) = tracker.check({"high_cpu": 95.0})
    assert again["level"] == "error"


def test_config_from_environment_and_settings() -> None:
    env = {
        "SESSIONHUB_KATO_INTERVAL": "1.5",
        "SESSIONHUB_KATO_SESSION_EVENTS": "0",
        "SESSIONHUB_KATO_ALERT_ACTIVE_SESSIONS": "100",
        "SESSIONHUB_KATO_KINDS": "generic, workspace",
        "SESSIONHUB_KATO_HEARTBEAT_INTERVAL": "50",
    }
    cfg = KatoConfig.load(env, {"kato_heartbeat_interval": 7})
    assert cfg.interval == 1.5 and cfg.session_events is False
    assert cfg.alert_active_sessions == 100.0 and cfg.kind_list() == ("generic", "workspace")
    assert cfg.heartbeat_interval == 7  # Settings.extra wins over the environment
    assert KatoConfig.load({}, {}).interval == 3.0  # the document's 3 s
    with pytest.raises(ValueError, match="INTERVAL"):
        KatoConfig.load({"SESSIONHUB_KATO_INTERVAL": "soon"}, {})
    with pytest.raises(ValueError, match="INTERVAL"):
        KatoConfig.load({"SESSIONHUB_KATO_INTERVAL": "0"}, {})


class FakeSink:
    """A socket whose reader reads everything at once, or (``stalled``) never reads."""

    def __init__(self, *, stalled: bool) -> None:
        self.stalled = stalled
        self.sent: list[bytes] = []
        self.unread = 0
        self.closed: tuple[int, str] | None = None

    def write(self, items: list[Out]) -> None:
        self.sent += [i.payload for i in items]
        if self.stalled:
            self.unread += sum(len(i.framed) for i in items)

    def write_one(self, item: Out) -> None:
        self.write([item])

    def buffered(self) -> int:
        return self.unread

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def ping(self) -> None:
        return None

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None


async def flushed(conns: Collection[Conn]) -> None:
    """Until the node has written out what these connections queued. Usually that is the
    next loop turn, but right after a long pass the node pauses its flush for a fraction of
    that pass (``node.FLUSH_PAUSE``), and on a busy machine a pass can be long."""
    for _ in range(400):  # at most 2 s
        if not any(c.queue for c in conns if not c.closed):
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the node never flushed its queues")


async def test_a_slow_client_is_closed_and_does_not_hold_up_the_others(
    client: httpx.AsyncClient, runtime: Runtime, token: Callable[..., str]
) -> None:
    svc, node = kato(runtime), runtime.realtime
    admin = Handshake("/ws", {"token": token("root", "admin")}, {}, "127.0.0.1")
    sinks = {"slow": FakeSink(stalled=True), "fast": FakeSink(stalled=False)}
    conns = {name: svc.open(node, sink, admin) for name, sink in sinks.items()}
    for conn in conns.values():
        node.register(conn)
        conn.opened()
    pad = "x" * (node.max_queue_bytes // 5)
    for i in range(10):  # twice what the send queue of one connection may hold
        message = {"type": "session_event", "n": i, "pad": pad}
        await runtime.hub.broker.publish(["kato:session_events"], orjson.dumps(message))
        await flushed(conns.values())
    assert sinks["slow"].closed is not None and sinks["slow"].closed[0] == 3008  # codes.SLOW
    assert conns["slow"].closed and node.stats()["slow_disconnects"] == 1
    got = [orjson.loads(m) for m in sinks["fast"].sent]
    assert [m["n"] for m in got if m.get("type") == "session_event"] == list(range(10))
    assert sinks["fast"].closed is None and not conns["fast"].closed
    conns["fast"].disconnect(1000)
