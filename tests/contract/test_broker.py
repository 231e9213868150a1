"""The Broker contract (broker/base.py): one suite for every implementation (presence has its
own: ``test_presence.py``).

Add an implementation by adding a factory to ``BROKERS`` (and, if it needs a service, its
mark and namespace fixture to ``SERVICES``: see ``conftest.redis_prefix``). Time is injected:
``clock.advance(seconds)``; the Redis broker stores it with each history entry.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from tests.conftest import REDIS_URL

from sessionhub.broker.base import Broker
from sessionhub.broker.memory import MemoryBroker
from sessionhub.core.streams import Publication, StreamPosition


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def memory(clock: Clock, size: int, ttl: float, namespace: str) -> Broker:
    return MemoryBroker(history_size=size, history_ttl=ttl, clock=clock)


def redis(clock: Clock, size: int, ttl: float, namespace: str) -> Broker:
    from sessionhub.broker.redis import RedisBroker

    return RedisBroker(REDIS_URL, history_size=size, history_ttl=ttl, clock=clock, prefix=namespace)


#: Factories: ``(clock, history size, history ttl, namespace)``; the namespace keeps a test's
#: state in a service apart from every other test's.
BROKERS: dict[str, Callable[[Clock, int, float, str], Broker]] = {
    "memory": memory,
    "redis": redis,
}
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
        pytest.param(n, marks=[SERVICES[n][0]] if n in SERVICES else []) for n in sorted(BROKERS)
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
    made: list[Broker] = []

    async def factory(size: int = 100, ttl: float = 600.0) -> Broker:
        b = BROKERS[name](clock, size, ttl, namespace)
        await b.start()
        made.append(b)
        return b

    yield factory
    for b in made:
        await b.close()


async def test_offsets_start_at_one_and_rise_by_one_per_topic(make: Any) -> None:
    b = await make()
    start = await b.position("t")
    assert start.offset == 0 and start.epoch
    p1 = await b.publish(["t", "u"], b"1")
    p2 = await b.publish(["t"], b"2")
    assert p1["t"] == StreamPosition(1, start.epoch)
    assert p2["t"].offset == 2 and p1["u"].offset == 1
    assert await b.position("t") == p2["t"]


async def test_listeners_get_every_publication_in_order_with_shared_bytes(make: Any) -> None:
    b = await make()
    got: list[Publication] = []
    unsubscribe = b.subscribe("t", got.append)
    data = b'{"x":1}'
    for _ in range(3):
        await b.publish(["t", "other"], data)
    assert [p.offset for p in got] == [1, 2, 3]
    assert all(p.topic == "t" and p.data == data for p in got)
    unsubscribe()
    await b.publish(["t"], data)
    assert len(got) == 3


async def test_history_since_a_position_is_exact(make: Any) -> None:
    b = await make()
    for i in range(5):
        await b.publish(["t"], b"%d" % i)
    pos = await b.position("t")
    pubs, now, complete = await b.history("t", since=StreamPosition(2, pos.epoch))
    assert complete and now == pos
    assert [(p.offset, p.data) for p in pubs] == [(3, b"2"), (4, b"3"), (5, b"4")]
    pubs, _, complete = await b.history("t", since=pos)
    assert complete and pubs == []
    newest, _, complete = await b.history("t", limit=2)
    assert complete and [p.offset for p in newest] == [4, 5]


async def test_history_says_when_it_cannot_recover(make: Any, clock: Clock) -> None:
    b = await make(size=3, ttl=60.0)
    for i in range(5):
        await b.publish(["t"], b"%d" % i)
    epoch = (await b.position("t")).epoch
    # Older than the retained window (only 3..5 are kept).
    assert (await b.history("t", since=StreamPosition(1, epoch)))[2] is False
    assert (await b.history("t", since=StreamPosition(2, epoch)))[2] is True
    # Another epoch, or a position ahead of the stream.
    assert (await b.history("t", since=StreamPosition(4, "other")))[2] is False
    assert (await b.history("t", since=StreamPosition(9, epoch)))[2] is False
    # More than the limit follows: the first ones, and not complete.
    pubs, _, complete = await b.history("t", since=StreamPosition(2, epoch), limit=2)
    assert [p.offset for p in pubs] == [3, 4] and complete is False
    # Age: after the ttl the window is empty, so only "nothing missed" is recoverable.
    clock.advance(61)
    assert (await b.history("t", since=StreamPosition(4, epoch)))[2] is False
    assert (await b.history("t", since=StreamPosition(5, epoch)))[2] is True


async def test_an_idle_topic_never_recovers_wrongly(make: Any, clock: Clock) -> None:
    """A broker may forget an idle topic (new epoch) or keep it; either way recovering from
    an old position gives exactly what followed it, or says it cannot."""
    b = await make(ttl=60.0)
    await b.publish(["t"], b"x")
    old = await b.position("t")
    clock.advance(61)
    await b.expire()
    await b.publish(["t"], b"y")
    pubs, _, complete = await b.history("t", since=old)
    if complete:
        assert [p.data for p in pubs] == [b"y"]
    else:
        assert pubs == []


async def test_broadcast_reaches_listeners_without_offset_or_history(make: Any) -> None:
    b = await make()
    got: list[Publication] = []
    b.subscribe("live", got.append)
    await b.publish(["live"], b"kept")
    await b.broadcast("live", b"frame")
    await b.broadcast("nobody-listens", b"lost")
    for _ in range(300):  # over Redis pub/sub the frame arrives a moment later
        if len(got) >= 2:
            break
        await asyncio.sleep(0.01)
    assert [(p.offset, p.epoch, p.data) for p in got][1:] == [(0, "", b"frame")]
    pubs, pos, _ = await b.history("live")
    assert [p.data for p in pubs] == [b"kept"] and pos.offset == 1  # not in history
