"""Seed 001 (KATO dashboard ``/ws``) against a real server on 127.0.0.1 and a real client.

The live server (``tests/live.py``) serves the app in a background thread; the ``websockets``
client speaks to it. The text ``ping`` doubles as a barrier: the server handles a client's frames in order and queues
its replies behind everything already queued for that client, so once the heartbeat for a
ping arrives, every message caused before the ping has arrived too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from tests.live import LiveServer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sessionhub.core.model import parse_iso
from sessionhub.settings import Settings

SECRET = "kato-test-secret-0123456789abcdef01234"
RECV_TIMEOUT = 20.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        jwt_secret=SECRET,
        sweep_interval=3600.0,
        extra={
            "kato_interval": 0.1,
            "kato_heartbeat_interval": 0,
            "kato_alert_active_sessions": 2,
            "kato_alert_cpu_percent": 0,
            "kato_alert_memory_percent": 0,
        },
    )


class KatoServer(LiveServer):
    """The live server with KATO's ``/ws`` URL at hand."""

    def ws(self, token: str | None = None) -> str:
        return self.socket_url("/ws", token)

    @property
    def http(self) -> str:
        return self.url


@pytest.fixture
def live(settings: Settings) -> Iterator[KatoServer]:
    server = KatoServer(settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def http(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=live.http, limits=limits, timeout=30) as c:
        yield c


async def recv(ws: ClientConnection) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)
    out: dict[str, Any] = orjson.loads(raw)
    return out


async def until(ws: ClientConnection, kind: str, *, limit: int = 10_000) -> list[dict[str, Any]]:
    """Messages up to and including the first of ``kind`` (bounded)."""
    seen = []
    for _ in range(limit):
        msg = await recv(ws)
        seen.append(msg)
        if msg["type"] == kind:
            return seen
    raise AssertionError(f"no {kind} within {limit} messages")


async def barrier(ws: ClientConnection, live: LiveServer) -> list[dict[str, Any]]:
    """Everything caused before now: once the consumers have read the event log to its end
    (what they publish is then queued for this client), the ping's heartbeat (dropped) comes
    after all of it."""
    await live.settle()
    await ws.send("ping")
    return (await until(ws, "heartbeat"))[:-1]


async def subscribe(ws: ClientConnection, live: LiveServer, *subs: str) -> list[dict[str, Any]]:
    await ws.send(orjson.dumps({"type": "subscribe", "subscriptions": list(subs)}).decode())
    return await barrier(ws, live)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def closed_with(url: str, **kw: Any) -> tuple[int, str]:
    async with connect(url, open_timeout=10, **kw) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await recv(ws)
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


async def test_a_token_is_required_and_admin(live: LiveServer) -> None:
    code, reason = await closed_with(live.ws())
    assert code == 3500 and "token required" in reason
    code, _ = await closed_with(live.ws("not-a-token"))
    assert code == 3500
    code, reason = await closed_with(live.ws(live.token("alice")))
    assert code == 3507 and "admin" in reason
    # A token whose subject is "anonymous" is a user like any other, not the anonymous guest.
    code, reason = await closed_with(live.ws(live.token("anonymous")))
    assert code == 3507 and "admin" in reason
    async with connect(live.ws(live.token("root", "admin")), open_timeout=10) as ws:
        assert (await recv(ws))["type"] == "realtime_update"
    headers = bearer(live.token("root", "admin"))
    async with connect(live.ws(), open_timeout=10, additional_headers=headers) as ws:
        assert (await recv(ws))["type"] == "realtime_update"


async def test_realtime_update_shape_matches_the_document(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    alice = bearer(live.token("alice"))
    ids = []
    for _ in range(2):
        r = await http.post("/api/sessions", json={}, headers=alice)
        ids.append(r.json()["id"])
    await http.post(f"/api/sessions/{ids[0]}/actions/end", headers=alice)
    await http.post("/api/sessions/", json={}, headers=alice)  # a workspace
    await live.settle()  # the counts have followed every change (none is pushed later)

    async with connect(live.ws(live.token("root", "admin")), open_timeout=10) as ws:
        first = await recv(ws)  # sent at connect, as KATO's loop does
        second = await until(ws, "realtime_update")  # and then every interval
    for msg in (first, second[-1]):
        assert set(msg) == {"type", "timestamp", "data"}
        assert msg["type"] == "realtime_update"
        parse_iso(msg["timestamp"])
        assert set(msg["data"]) == {"metrics", "sessions"}  # no containers here
        assert msg["data"]["sessions"] == {"active_count": 2, "total_count": 3}
    metrics = first["data"]["metrics"]
    assert {"connections", "subscriptions", "messages_per_second", "publications_total"} <= set(
        metrics
    )
    # The hub's realtime layer reports its numbers when it runs; /ws's own are "dashboard".
    # The one engine counts every socket: this /ws client is the one connection.
    assert metrics["connections"] == 1
    assert metrics["dashboard"]["connections"] == 1
    assert metrics["dashboard"]["subscriptions"] == 5  # not subscribed yet: everything
    assert isinstance(metrics["messages_per_second"], float | int)
    assert metrics["sessions"]["by_kind"] == {
        "generic": {"active": 1, "ended": 1},
        "workspace": {"active": 1},
    }
    assert metrics["sessions"]["active"] == 2 and metrics["sessions"]["total"] == 3
    process = metrics["process"]
    assert process["memory_rss_bytes"] > 0 and 0 < process["memory_percent"] < 100
    assert process["cpu_percent"] >= 0


async def test_ping_answers_heartbeat_and_bad_frames_answer_error(live: LiveServer) -> None:
    async with connect(live.ws(live.token("root", "admin")), open_timeout=10) as ws:
        await subscribe(ws, live)  # nothing: only replies from now on
        await ws.send("ping")
        hb = await recv(ws)
        assert set(hb) == {"type", "timestamp"} and hb["type"] == "heartbeat"
        await ws.send('{"type": "ping"}')
        assert (await recv(ws))["type"] == "heartbeat"
        await ws.send("{not json")
        err = await recv(ws)
        assert err["type"] == "error" and "ping" in err["message"]
        await ws.send('{"type": "subscribe", "subscriptions": "metrics"}')
        assert (await recv(ws))["type"] == "error"
        await ws.send('{"type": "dance"}')
        assert (await recv(ws))["type"] == "error"


async def test_burst_of_200_creates_and_200_ends_gives_exactly_400_events(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    users = [bearer(live.token(f"user{i}")) for i in range(4)]
    async with connect(live.ws(live.token("root", "admin")), open_timeout=10) as ws:
        await subscribe(ws, live, "session_events")

        async def one(i: int) -> str:
            h = users[i % len(users)]
            r = await http.post("/api/sessions", json={}, headers=h)
            assert r.status_code == 201, r.text
            sid: str = r.json()["id"]
            r = await http.post(f"/api/sessions/{sid}/actions/end", headers=h)
            assert r.status_code == 200, r.text
            return sid

        ids = await asyncio.gather(*(one(i) for i in range(200)))
        events = await barrier(ws, live)

    assert len(events) == 400, [e["type"] for e in events if e["type"] != "session_event"]
    assert all(e["type"] == "session_event" for e in events)
    previous = 0
    for e in events:
        assert set(e) == {"type", "event_type", "timestamp", "data"}
        d = e["data"]
        assert {"current_count", "previous_count", "delta", "time_since_last_event"} <= set(d)
        assert d["delta"] == 1
        assert d["previous_count"] == previous
        step = 1 if e["event_type"] == "session_created" else -1
        assert e["event_type"] in ("session_created", "session_destroyed")
        assert d["current_count"] == d["previous_count"] + step >= 0
        previous = d["current_count"]
    assert previous == 0
    created = [e["data"]["session_id"] for e in events if e["event_type"] == "session_created"]
    destroyed = [e["data"]["session_id"] for e in events if e["event_type"] == "session_destroyed"]
    assert sorted(created) == sorted(destroyed) == sorted(ids)
    # The HTTP fallback agrees.
    r = await http.get("/api/sessions/count", headers=bearer(live.token("root", "admin")))
    assert r.json() == {"count": 200, "active_sessions": 0}


async def test_subscribe_narrows_what_a_client_receives(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    alice = bearer(live.token("alice"))
    async with connect(live.ws(live.token("root", "admin")), open_timeout=10) as ws:
        await subscribe(ws, live, "sessions")
        update = (await until(ws, "realtime_update"))[-1]
        assert set(update["data"]) == {"sessions"}
        await http.post("/api/sessions", json={}, headers=alice)
        seen = await barrier(ws, live)
        assert {m["type"] for m in seen} <= {"realtime_update"}  # no session_event

        await subscribe(ws, live, "metrics")
        update = (await until(ws, "realtime_update"))[-1]
        assert set(update["data"]) == {"metrics"}

        await subscribe(ws, live, "session_events")
        await http.post("/api/sessions", json={}, headers=alice)
        seen = await barrier(ws, live)
        assert [m["type"] for m in seen] == ["session_event"]  # and no realtime_update
        assert seen[0]["data"]["current_count"] == 2


async def test_system_alert_once_per_crossing(live: LiveServer, http: httpx.AsyncClient) -> None:
    alice = bearer(live.token("alice"))

    async def create() -> str:
        r = await http.post("/api/sessions", json={}, headers=alice)
        sid: str = r.json()["id"]
        return sid

    async with connect(live.ws(live.token("root", "admin")), open_timeout=10) as ws:
        await subscribe(ws, live, "system_alerts")
        a, b = await create(), await create()
        assert await barrier(ws, live) == []  # 2 is not above the threshold of 2
        await create()
        alerts = await barrier(ws, live)
        assert len(alerts) == 1
        alert = alerts[0]
        assert set(alert) == {"type", "id", "timestamp", "alerts"}
        assert alert["type"] == "system_alert"
        (entry,) = alert["alerts"]
        assert set(entry) == {"level", "type", "message", "value", "threshold"}
        assert entry["type"] == "high_session_count" and entry["level"] == "warning"
        assert entry["value"] == 3 and entry["threshold"] == 2
        await create()
        assert await barrier(ws, live) == []  # still above: no repeat
        for sid in (a, b):
            await http.post(f"/api/sessions/{sid}/actions/end", headers=alice)
        assert await barrier(ws, live) == []  # back to 2: re-armed, no alert
        await create()
        again = await barrier(ws, live)
        assert len(again) == 1 and again[0]["id"] != alert["id"]
