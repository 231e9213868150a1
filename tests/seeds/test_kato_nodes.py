"""KATO's counts come from broker topics, not from the node a dashboard is connected to: two
hubs on one database and one (memory) broker - two nodes - show the same numbers, whichever
node made the change, and the count is kept by the one node that leads the consumers."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import orjson
from tests.inprocess import serve_in_process

from sessionhub.server.realtime.socket import Handshake, Out
from sessionhub.server.runtime import Runtime, build_runtime
from sessionhub.settings import Settings

SECRET = "nodes-test-secret-0123456789abcdef01234"


class Sink:
    """A socket that reads everything at once."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def write(self, items: list[Out]) -> None:
        self.sent += [orjson.loads(i.payload) for i in items]

    def write_one(self, item: Out) -> None:
        self.write([item])

    def buffered(self) -> int:
        return 0

    def close(self, code: int, reason: str) -> None:
        return None

    def ping(self) -> None:
        return None

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None


def node(tmp_path: Path, name: str) -> Runtime:
    settings = Settings(
        data_dir=tmp_path / name,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}",
        jwt_secret=SECRET,
        sweep_interval=3600.0,
        node_id=name,
    )
    return build_runtime(settings)


def dashboard(rt: Runtime) -> Sink:
    """A KATO /ws client connected to ``rt``'s node."""
    assert rt.kato is not None
    sink = Sink()
    token = rt.auth.issue("root", ["admin"])
    conn = rt.kato.open(rt.realtime, sink, Handshake("/ws", {"token": token}, {}, "127.0.0.1"))
    rt.realtime.register(conn)
    conn.opened()
    return sink


def session_events(sink: Sink) -> list[tuple[str, int]]:
    return [
        (m["event_type"], m["data"]["current_count"])
        for m in sink.sent
        if m.get("type") == "session_event"
    ]


async def test_two_nodes_sharing_a_broker_show_the_same_counts(tmp_path: Path) -> None:
    a, b = node(tmp_path, "node-a"), node(tmp_path, "node-b")
    # One broker and one presence for both: what Redis is to a real cluster.
    b.hub.broker = a.hub.broker
    b.hub.presence = a.hub.presence
    b.realtime.hub = b.hub
    async with AsyncExitStack() as stack:
        http_a = await stack.enter_async_context(serve_in_process(a))
        http_b = await stack.enter_async_context(serve_in_process(b))
        assert a.consumers.leading and not b.consumers.leading  # one node counts
        on_a, on_b = dashboard(a), dashboard(b)
        alice = {"Authorization": f"Bearer {a.auth.issue('alice')}"}
        s1 = (await http_a.post("/api/sessions", json={}, headers=alice)).json()["id"]
        (await http_b.post("/api/sessions", json={}, headers=alice)).json()["id"]
        await http_b.post(f"/api/sessions/{s1}/actions/end", headers=alice)
        await a.consumers.drain()
        expected = [("session_created", 1), ("session_created", 2), ("session_destroyed", 1)]
        assert session_events(on_a) == expected
        assert session_events(on_b) == expected  # the same messages on the other node
        assert a.kato is not None and b.kato is not None
        assert a.kato.counts.active == 1 and not b.kato.counts.loaded
        assert b.kato.active == 1  # from the kato:counts topic
        parts = await b.kato.snapshot()
        assert parts["sessions"]["active_count"] == 1
