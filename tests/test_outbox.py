"""The outbox (outbox.py): every committed event reaches the broker once, in commit order -
while the broker is down, after a crash, and when the node that committed it died."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import orjson
import pytest
from tests.live import until

from sessionhub.broker.memory import MemoryBroker
from sessionhub.core.errors import Unavailable
from sessionhub.core.principal import Principal
from sessionhub.core.streams import Publication, StreamPosition
from sessionhub.hub import Hub
from sessionhub.kinds.generic import Generic
from sessionhub.kinds.registry import Registry
from sessionhub.store import open_store

ALICE = Principal("alice")


class FlakyBroker(MemoryBroker):
    """A memory broker that can be switched off, as a Redis that restarts."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def publish(self, topics: Sequence[str], data: bytes) -> dict[str, StreamPosition]:
        if self.down:
            raise Unavailable("the broker is not answering")
        return await super().publish(topics, data)


class LastingBroker(MemoryBroker):
    """A broker that outlives the process using it (as Redis does): closing keeps history."""

    async def close(self) -> None:
        return None


def hub_on(url: str, broker: MemoryBroker, *, marks: float = 0.05) -> Hub:
    return Hub(open_store(url), broker, Registry([Generic()]), mark_interval=marks)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}"


@pytest.fixture
async def flaky(url: str) -> AsyncIterator[tuple[Hub, FlakyBroker]]:
    broker = FlakyBroker()
    hub = hub_on(url, broker)
    await hub.start()
    try:
        yield hub, broker
    finally:
        broker.down = False
        await hub.close()


def versions(pubs: list[Publication]) -> list[int]:
    return [int(orjson.loads(p.data)["version"]) for p in pubs]


async def test_a_broker_outage_delays_events_but_keeps_writes_and_order(
    flaky: tuple[Hub, FlakyBroker],
) -> None:
    hub, broker = flaky
    s, _ = await hub.create(ALICE, "generic")
    seen: list[Publication] = []
    broker.subscribe(f"session:{s.id}", seen.append)
    broker.down = True
    for i in range(5):  # every change is durable and answered: the broker is not needed
        await hub.update(ALICE, s.id, metadata={"n": i})
    assert hub.outbox.degraded and seen == []
    assert (await hub.get(ALICE, s.id)).version == 6
    broker.down = False
    await until(lambda: len(seen) == 5, what="the waiting events")
    assert versions(seen) == [2, 3, 4, 5, 6]  # in commit order
    await hub.update(ALICE, s.id, metadata={"n": "after"})
    await until(lambda: len(seen) == 6, what="a live event after the outage")
    assert versions(seen)[-1] == 7 and not hub.outbox.degraded
    # The marks are written in the background: every event ends up marked published.
    for _ in range(500):
        if not await hub.store.unpublished():
            break
        await asyncio.sleep(0.02)
    assert await hub.store.unpublished() == [] and hub.outbox._to_mark == []


async def test_a_dead_nodes_unpublished_events_are_published_by_the_sweeping_node(
    url: str,
) -> None:
    broker = FlakyBroker()
    dead, survivor = hub_on(url, broker), hub_on(url, broker)
    await dead.start()
    await survivor.start()
    try:
        s, _ = await survivor.create(ALICE, "generic")
        seen: list[Publication] = []
        broker.subscribe(f"session:{s.id}", seen.append)
        broker.down = True
        await dead.update(ALICE, s.id, metadata={"by": "dead"})  # committed, not published
        broker.down = False
        dead.outbox._backlog.clear()  # the node dies with it: nobody there will publish it
        # Seen unmarked for the first time: it may be in flight; left for a later sweep.
        assert await survivor.outbox.republish_stale(stale_after=60.0) == 0
        assert await survivor.outbox.republish_stale(stale_after=0.0) == 1
        assert versions(seen) == [2]
        # Found in the broker's history by its id, a second sweep does not publish it again.
        assert await survivor.outbox.republish_stale(stale_after=0.0) == 0
        await until(lambda: not survivor.outbox._to_mark, what="the mark")
        assert await survivor.store.unpublished() == []
    finally:
        await dead.close()
        await survivor.close()


async def test_an_event_the_broker_already_holds_is_marked_not_published_again(
    url: str,
) -> None:
    """Published, then the process died before marking it: the restart must not send
    subscribers the same event twice (the broker outlives the process, as Redis does)."""
    broker = LastingBroker()
    first = hub_on(url, broker, marks=3600)
    await first.start()
    s, _ = await first.create(ALICE, "generic")
    first.outbox._to_mark.clear()  # it dies before the marks are written
    await first.close()
    seen: list[Publication] = []
    broker.subscribe(f"session:{s.id}", seen.append)
    restarted = hub_on(url, broker)
    await restarted.start()
    try:
        assert restarted.outbox.stats.already_published >= 1 and seen == []
        assert await restarted.store.unpublished() == []
    finally:
        await restarted.close()
