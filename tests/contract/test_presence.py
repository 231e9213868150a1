"""The Presence contract (presence/base.py): one suite for every implementation.

Add an implementation by adding a factory to ``PRESENCE`` (and, if it needs a service, its
mark and namespace fixture to ``SERVICES``: see ``conftest.redis_prefix``). Time is injected:
``clock.advance(seconds)``; Redis presence scores leases with it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from tests.conftest import REDIS_URL

from sessionhub.core.streams import ClientInfo, PresenceEvent
from sessionhub.presence.base import Presence
from sessionhub.presence.memory import MemoryPresence


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def memory(clock: Clock, namespace: str) -> Presence:
    return MemoryPresence(clock=clock)


def redis(clock: Clock, namespace: str) -> Presence:
    from sessionhub.presence.redis import RedisPresence

    return RedisPresence(REDIS_URL, clock=clock, prefix=namespace)


#: Factories: ``(clock, namespace)``; the namespace keeps a test's state in a service apart
#: from every other test's.
PRESENCE: dict[str, Callable[[Clock, str], Presence]] = {"memory": memory, "redis": redis}
#: The implementations that need a service: its mark, and the fixture of a namespace of the
#: test's own in it (or a skip when the service is not there).
SERVICES: dict[str, tuple[pytest.MarkDecorator, str]] = {
    "redis": (pytest.mark.redis, "redis_prefix")
}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(
    params=[
        pytest.param(n, marks=[SERVICES[n][0]] if n in SERVICES else []) for n in sorted(PRESENCE)
    ]
)
def implementation(request: pytest.FixtureRequest) -> tuple[str, str]:
    """``(name, namespace)`` of the implementation under test."""
    name: str = request.param
    namespace: str = request.getfixturevalue(SERVICES[name][1]) if name in SERVICES else ""
    return name, namespace


@pytest.fixture
async def make(implementation: tuple[str, str], clock: Clock) -> AsyncIterator[Callable[..., Any]]:
    name, namespace = implementation
    made: list[Presence] = []

    async def factory() -> Presence:
        b = PRESENCE[name](clock, namespace)
        await b.start()
        made.append(b)
        return b

    yield factory
    for b in made:
        await b.close()


async def test_presence_leases_join_renew_leave(make: Any) -> None:
    b = await make()
    events: list[PresenceEvent] = []
    b.watch("t", events.append)
    a = ClientInfo("c1", "alice")
    assert await b.join("t", a, ttl=30) is True
    assert await b.join("t", a, ttl=30) is False  # a renewal: no second join
    await b.join("t", ClientInfo("c2", "alice"), ttl=30)
    await b.join("t", ClientInfo("c3", "bob"), ttl=30)
    assert sorted(await b.presence("t")) == ["c1", "c2", "c3"]
    assert await b.stats("t") == (3, 2)
    assert await b.leave("t", "c2") is True
    assert await b.leave("t", "c2") is False
    assert [(e.joined, e.info.client, e.reason) for e in events] == [
        (True, "c1", ""),
        (True, "c2", ""),
        (True, "c3", ""),
        (False, "c2", "left"),
    ]
    assert await b.presence("elsewhere") == {}


async def test_a_lease_that_is_not_renewed_is_lost(make: Any, clock: Clock) -> None:
    b = await make()
    events: list[PresenceEvent] = []
    b.watch("t", events.append)
    await b.join("t", ClientInfo("c1", "alice"), ttl=10)
    await b.join("t", ClientInfo("c2", "bob"), ttl=10)
    clock.advance(6)
    await b.join("t", ClientInfo("c2", "bob"), ttl=10)  # c2 renews, c1 does not
    clock.advance(6)
    assert await b.expire() == 1
    assert list(await b.presence("t")) == ["c2"]
    assert (events[-1].joined, events[-1].info.client, events[-1].reason) == (False, "c1", "lost")
    clock.advance(11)
    assert await b.presence("t") == {}  # read also expires
    assert events[-1].reason == "lost"


async def test_leases_of_different_lengths_each_lapse_on_time(make: Any, clock: Clock) -> None:
    b = await make()
    await b.join("t", ClientInfo("long", "alice"), ttl=30)
    await b.join("t", ClientInfo("short", "bob"), ttl=5)  # shorter than every lease before
    await b.join("t", ClientInfo("mid", "carol"), ttl=10)
    clock.advance(4)
    await b.join("t", ClientInfo("short", "bob"), ttl=5)  # the soonest renews: now at 9
    clock.advance(6.5)  # 10.5: mid (10) has lapsed, short (9) too
    assert sorted(await b.presence("t")) == ["long"]
    clock.advance(20)
    assert await b.presence("t") == {}


class CountingLeases(dict[str, Any]):
    """A topic's leases that count the scans for lapsed ones."""

    scans = 0

    def items(self) -> Any:
        type(self).scans += 1
        return super().items()


async def test_memory_renewals_do_not_scan_a_topics_leases_until_one_may_have_lapsed(
    clock: Clock,
) -> None:
    # Every subscriber renews each ping interval: a scan per renewal is N² per interval.
    b = MemoryPresence(clock=clock)
    await b.join("t", ClientInfo("c0", "u"), ttl=10)
    topic: Any = b._topics["t"]
    topic.leases = CountingLeases(topic.leases)
    for _ in range(3):
        for i in range(200):
            await b.join("t", ClientInfo(f"c{i}", "u"), ttl=10)
        clock.advance(4)
    # 600 joins; scans only when the clock passed the soonest expiry the topic knew of.
    assert CountingLeases.scans <= 3
    assert len(await b.presence("t")) == 200
    clock.advance(10)
    assert await b.presence("t") == {}
