"""Leadership among nodes: exactly one node at a time runs a role (the scheduler's sweeps, the
consumers of the event log, an upstream connector).

A role is a lease in the store (``Store.acquire_lease``: a row with its holder, an expiry and
a **fencing token** that rises every time the holder changes). Every node tries to take it;
the holder renews it every third of its ttl. A node that dies stops renewing, and another
takes it over once it lapses: within ``ttl`` (plus one renewal period) of a SIGKILL. A node
that was paused past its lease (a long GC, a frozen VM) learns at its next renewal that the
token moved on and stops at once; what it did meanwhile is guarded by compare-and-set on
versions and consumer positions, so two leaders for a moment never corrupt anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from .hub import Hub
from .tasks import stop

log = logging.getLogger("sessionhub.leadership")

Step = Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


class Leadership:
    """Holds the lease ``role`` while this node leads it; ``on_gain``/``on_lose`` run at the
    changes (in this task, one at a time)."""

    def __init__(
        self,
        hub: Hub,
        role: str,
        node_id: str,
        *,
        ttl: float = 6.0,
        on_gain: Step = _nothing,
        on_lose: Step = _nothing,
    ) -> None:
        self.hub = hub
        self.role = role
        self.node_id = node_id
        self.ttl = ttl
        self.on_gain = on_gain
        self.on_lose = on_lose
        self.leading = False
        #: The fencing token of the lease while this node holds it.
        self.token: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Try once now (so a single node leads before it serves), then keep trying."""
        await self.check()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"sessionhub-lead-{self.role}"
        )

    async def close(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        await stop([task])
        await self._lose()
        # An orderly stop hands the role over at once instead of after the lease's ttl.
        with contextlib.suppress(Exception):
            await self.hub.release_lease(self.role, self.node_id)

    async def check(self) -> bool:
        """Take or renew the lease now; run ``on_gain``/``on_lose`` on a change."""
        try:
            token = await self.hub.lease(self.role, self.node_id, ttl=self.ttl)
        except Exception as exc:
            # The store is not answering: a leader that cannot renew must assume it lost.
            log.warning("lease %r: %s", self.role, exc)
            token = None
        if token is None:
            await self._lose()
            return False
        if not self.leading or token != self.token:
            await self._lose()
            try:
                await self.on_gain()
            except Exception:
                log.exception("taking up %s failed; will retry", self.role)
                return False
            # Leading only once the role is taken up, so nothing runs it half-prepared.
            self.token = token
            self.leading = True
            log.info("node %s leads %s (token %d)", self.node_id, self.role, token)
        return True

    async def _lose(self) -> None:
        if not self.leading:
            return
        self.leading = False
        self.token = None
        log.info("node %s no longer leads %s", self.node_id, self.role)
        try:
            await self.on_lose()
        except Exception:
            log.exception("giving up %s failed", self.role)

    async def _run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.ttl / 3)
            await self.check()
