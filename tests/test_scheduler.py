"""The scheduler with an injected clock: coalesced heartbeats, drops, idle, archive, delete."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from conftest import FakeClock
from sessionhub.broker.memory import MemoryBroker
from sessionhub.core.principal import Principal
from sessionhub.core.streams import Publication
from sessionhub.hub import Hub
from sessionhub.kinds.generic import Generic
from sessionhub.kinds.registry import Registry, default_registry
from sessionhub.scheduler import Scheduler
from sessionhub.store.sqlite import SqliteStore
from unit.kinds import Approval, Swept

ALICE = Principal("alice")
ROOT = Principal("root", frozenset({"admin"}))


class CountingStore(SqliteStore):
    """Records every ``touch`` batch, so tests can see when heartbeats reach the database."""

    touches: list[dict[str, datetime]]

    async def touch(self, activity: Mapping[str, datetime]) -> int:
        self.touches.append(dict(activity))
        return await super().touch(activity)


@pytest.fixture
async def hub(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Hub]:
    store = CountingStore(f"sqlite+aiosqlite:///{tmp_path / 'sched.db'}")
    store.touches = []
    h = Hub(store, MemoryBroker(), Registry([Generic(), Approval(), Swept()]), clock=clock)
    await h.start()
    try:
        yield h
    finally:
        await h.close()


@pytest.fixture
def scheduler(hub: Hub) -> Scheduler:
    return Scheduler(hub)


def record(hub: Hub, topic: str) -> list[dict[str, object]]:
    seen: list[dict[str, object]] = []

    def on(pub: Publication) -> None:
        seen.append(json.loads(pub.data))

    hub.broker.subscribe(topic, on)
    return seen


async def test_heartbeats_are_coalesced_into_one_batched_write(
    hub: Hub, scheduler: Scheduler, clock: FakeClock
) -> None:
    store = hub.store
    assert isinstance(store, CountingStore)
    a, _ = await hub.create(ALICE, "generic")
    b, _ = await hub.create(ALICE, "generic")
    for _ in range(50):
        clock.advance(1)
        await hub.heartbeat(ALICE, a.id)
        await hub.heartbeat(ALICE, b.id)
    assert store.touches == []  # nothing written yet
    stored = await store.get(a.id)
    assert stored is not None and stored.last_activity_at == a.last_activity_at
    report = await scheduler.sweep()
    assert report.flushed_heartbeats == 2
    assert store.touches == [{a.id: clock.now, b.id: clock.now}]  # one batch, latest only
    stored = await store.get(a.id)
    assert stored is not None and stored.last_activity_at == clock.now and stored.version == 1
    assert hub.stats.heartbeats == 100 and hub.stats.heartbeat_flushes == 1
    # Nothing pending: the next sweep writes nothing.
    assert (await scheduler.sweep()).flushed_heartbeats == 0 and len(store.touches) == 1


async def test_a_session_with_recent_heartbeats_is_not_dropped(
    hub: Hub, scheduler: Scheduler, clock: FakeClock
) -> None:
    s, _ = await hub.create(ALICE, "generic")  # heartbeat timeout 300 s
    for _ in range(6):
        clock.advance(200)
        await hub.heartbeat(ALICE, s.id)
        report = await scheduler.sweep()
        assert report.dropped == []
    current = await hub.get(ALICE, s.id)
    assert current.state == "active" and current.version == 1


async def test_a_session_without_heartbeats_is_dropped_with_an_event(
    hub: Hub, scheduler: Scheduler, clock: FakeClock
) -> None:
    s, _ = await hub.create(ALICE, "generic")
    seen = record(hub, f"session:{s.id}")
    clock.advance(299)
    assert (await scheduler.sweep()).dropped == []
    clock.advance(2)
    report = await scheduler.sweep()
    assert report.dropped == [s.id]
    dropped = await hub.get(ALICE, s.id)
    assert dropped.state == "dropped" and dropped.end_reason == "heartbeat_timeout"
    assert dropped.version == 2 and dropped.ended_at == clock.now
    assert [(e["type"], e["actor"], e["data"]["reason"]) for e in seen] == [  # type: ignore[index]
        ("session.state_changed", "system", "heartbeat_timeout")
    ]
    # A dropped session is not dropped again, and heartbeats are refused.
    assert (await scheduler.sweep()).dropped == []
    from sessionhub.core.errors import IllegalTransition

    with pytest.raises(IllegalTransition):
        await hub.heartbeat(ALICE, s.id)


async def test_only_states_that_take_heartbeats_are_dropped(
    hub: Hub, scheduler: Scheduler, clock: FakeClock
) -> None:
    pending, _ = await hub.create(ALICE, "approval", attributes={"target": "pc"})
    active, _ = await hub.create(ALICE, "approval", attributes={"target": "pc"})
    await hub.act(ROOT, active.id, "approve")
    clock.advance(61)
    report = await scheduler.sweep()
    assert report.dropped == [active.id]
    assert (await hub.get(ROOT, pending.id)).state == "pending"


async def test_a_heartbeat_that_arrives_after_the_flush_still_counts(
    hub: Hub, scheduler: Scheduler, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, _ = await hub.create(ALICE, "generic")
    clock.advance(400)
    await hub.heartbeat(ALICE, s.id)

    async def no_flush() -> int:  # the heartbeat stays pending in memory
        return 0

    monkeypatch.setattr(hub, "flush_heartbeats", no_flush)
    assert (await scheduler.sweep()).dropped == []
    assert (await hub.get(ALICE, s.id)).state == "active"


async def test_a_session_changed_during_the_sweep_is_left_for_the_next_one(
    hub: Hub, scheduler: Scheduler, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, _ = await hub.create(ALICE, "generic")
    clock.advance(400)
    real_due = hub.store.due

    async def due_then_change(d):  # type: ignore[no-untyped-def]
        found = await real_due(d)
        if found:  # someone changes the session between the query and the drop
            await hub.update(ALICE, s.id, metadata={"x": 1})
        return found

    monkeypatch.setattr(hub.store, "due", due_then_change)
    report = await scheduler.sweep()
    assert report.dropped == []
    current = await hub.get(ALICE, s.id)
    assert current.state == "active" and current.version == 2


async def test_idle_timeout_abandons_archive_and_delete_follow(
    hub: Hub, scheduler: Scheduler, clock: FakeClock
) -> None:
    idle, _ = await hub.create(ALICE, "swept")
    done, _ = await hub.create(ALICE, "swept")
    await hub.act(ALICE, done.id, "finish")
    seen = record(hub, "sessions:swept")

    clock.advance(121)
    report = await scheduler.sweep()
    assert report.idled == [idle.id] and report.archived == [] and report.deleted == []
    s = await hub.get(ALICE, idle.id)
    assert s.state == "abandoned" and s.end_reason == "idle_timeout"

    clock.advance(3601)  # an hour after ending -> archived, keeping the first end reason
    report = await scheduler.sweep()
    assert sorted(report.archived) == sorted([idle.id, done.id])
    s = await hub.get(ALICE, done.id)
    assert s.state == "archived" and s.end_reason == "completed"

    clock.advance(86_401)  # a day after archiving -> deleted, with a tombstone event
    report = await scheduler.sweep()
    assert sorted(report.deleted) == sorted([idle.id, done.id])
    assert await hub.store.get(idle.id) is None and await hub.store.get(done.id) is None
    types = [e["type"] for e in seen]
    assert types == ["session.state_changed"] * 3 + ["session.deleted"] * 2
    assert [e.type for e in await hub.store.events(done.id)] == ["session.deleted"]
    assert (await scheduler.sweep()).total == 0


async def test_a_live_session_is_dropped_not_abandoned(
    hub: Hub, scheduler: Scheduler, clock: FakeClock
) -> None:
    s, _ = await hub.create(ALICE, "swept")
    await hub.act(ALICE, s.id, "go")
    clock.advance(200)  # past both the heartbeat (30 s) and the idle (120 s) timeouts
    report = await scheduler.sweep()
    assert report.dropped == [s.id] and report.idled == []
    assert (await hub.get(ALICE, s.id)).end_reason == "heartbeat_timeout"


async def test_drop_inactive_on_demand(hub: Hub, scheduler: Scheduler, clock: FakeClock) -> None:
    a, _ = await hub.create(ALICE, "generic")
    b, _ = await hub.create(ALICE, "generic")
    clock.advance(20)
    await hub.heartbeat(ALICE, b.id)
    clock.advance(20)
    dropped = await hub.drop_inactive(["generic"], timedelta(seconds=30))
    assert dropped == [a.id]
    assert (await hub.get(ALICE, b.id)).state == "active"


async def test_default_interval_is_well_inside_the_shortest_timeout(hub: Hub) -> None:
    shortest = hub.kinds.shortest_timeout()
    assert shortest is not None
    interval = Scheduler(hub).interval
    assert 0 < interval <= shortest.total_seconds() / 6
    for seconds in (0.3, 3, 12, 300, 3600):
        reg = default_registry({"generic": {"heartbeat_timeout": seconds}})
        h = Hub(hub.store, hub.broker, reg)
        iv = Scheduler(h).interval
        assert iv <= max(0.05, seconds / 6) and iv <= 5.0, (seconds, iv)
    # An explicit interval wins.
    assert Scheduler(hub, interval=0.5).interval == 0.5


async def test_start_and_stop_the_background_loop(hub: Hub) -> None:
    sched = Scheduler(hub, interval=3600)
    sched.start()
    await sched.stop()
    await sched.stop()  # stopping twice is harmless


async def test_the_heartbeat_cache_keeps_live_sessions_only_and_is_bounded(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Hub, "HEARTBEAT_CACHE_SIZE", 3)
    made = [(await hub.create(ALICE, "generic"))[0].id for _ in range(5)]
    assert list(hub._hb_cache) == made[-3:]
    await hub.act(ALICE, made[-1], "end")
    assert made[-1] not in hub._hb_cache
    # Evicted and ended sessions still answer correctly (after one read).
    await hub.heartbeat(ALICE, made[0])
    from sessionhub.core.errors import IllegalTransition

    with pytest.raises(IllegalTransition):
        await hub.heartbeat(ALICE, made[-1])


async def test_after_a_restart_a_session_gets_a_whole_timeout_to_be_heard_again(
    hub: Hub, clock: FakeClock
) -> None:
    """Heartbeats are coalesced in memory, so a crash can lose the last ones: the restarted
    node must not drop a session its client is still keeping alive, only one that stayed
    silent for a whole timeout after the start."""
    quiet, lively = (await hub.create(ALICE, "generic"))[0], (await hub.create(ALICE, "generic"))[0]
    timeout = hub.kinds.get_kind("generic").heartbeat_timeout
    assert timeout is not None
    clock.advance(timeout.total_seconds() + 60)  # both look silent: the crash lost their beats
    restarted = Scheduler(hub, interval=3600)
    restarted.start()  # the node comes back now
    try:
        assert (await restarted.sweep()).dropped == []  # not heard of yet is not silent
        clock.advance(timeout.total_seconds() / 2)
        await hub.heartbeat(ALICE, lively.id)  # its client is still there
        clock.advance(timeout.total_seconds() / 2 + 1)
        report = await restarted.sweep()
        assert report.dropped == [quiet.id]  # silent for a whole timeout since the start
    finally:
        await restarted.stop()
