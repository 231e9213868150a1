"""Fixtures of the NINA connector tests: a simulated rig, the runtime, the connector.

The simulator and the hub share one ``FakeClock``: the simulator moves it by each step's
gap before emitting, so a night of hours plays in milliseconds, history times and receipt
stamps agree, and the scheduler's idle sweep can be driven by hand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from conftest import FakeClock
from sessionhub.connectors.nina.simulator import NinaSimulator
from sessionhub.server.runtime import Runtime

from .harness import DUSK, SMALL, TZ, Harness, open_harness


@pytest.fixture
def clock() -> FakeClock:
    """The shared clock of hub and simulator, at dusk of the test night."""
    return FakeClock(DUSK)


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[NinaSimulator]:
    s = NinaSimulator(clock=clock, advance=clock.advance, plan=SMALL, seed=7, timezone=TZ)
    await s.start()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def idle(
    runtime: Runtime, sim: NinaSimulator, clock: FakeClock, auth: Callable[..., dict[str, str]]
) -> AsyncIterator[Harness]:
    """The runtime and the simulator running; the connector not started yet."""
    async with open_harness(runtime, sim, clock, auth("root", "admin")) as h:
        yield h


@pytest.fixture
async def nina(idle: Harness) -> Harness:
    """The connector started and connected (its first seed done)."""
    await idle.start()
    return idle
