"""Timeouts and clean-up: heartbeat drops, idle abandonment, archiving and deletion, per kind.

Each sweep first flushes the hub's coalesced heartbeats, so a session is never dropped for
a heartbeat that arrived but was not yet written. The flush interval is kept well inside the
shortest timeout of any kind. Time comes from the hub's clock, so tests inject it.

After a start (a restart after a crash, whose last heartbeats were in memory only), a session
is dropped or abandoned for inactivity only once the node has been up for that timeout: its
client gets a whole timeout to be heard again, so a crash never makes a live session look
dropped.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .core.kind import Kind
from .core.query import Due
from .hub import Hub
from .leadership import Leadership
from .tasks import stop

log = logging.getLogger("sessionhub.scheduler")


@dataclass(slots=True)
class SweepReport:
    """What one sweep did, by outcome -> session ids."""

    dropped: list[str] = field(default_factory=list)
    idled: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    flushed_heartbeats: int = 0

    @property
    def total(self) -> int:
        return (
            len(self.dropped)
            + len(self.idled)
            + len(self.expired)
            + len(self.archived)
            + len(self.deleted)
        )


class Scheduler:
    """Runs sweeps every ``interval`` seconds (or on demand with ``sweep``)."""

    def __init__(
        self, hub: Hub, *, interval: float | None = None, leader: Leadership | None = None
    ) -> None:
        self.hub = hub
        #: With several nodes, only the one holding the ``scheduler`` lease sweeps (every
        #: node still writes its own coalesced heartbeats). None: this node always sweeps.
        self.leader = leader
        shortest = hub.kinds.shortest_timeout()
        default = 5.0 if shortest is None else max(0.05, min(5.0, shortest.total_seconds() / 6))
        self.interval = interval if interval is not None else default
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        #: When this node started sweeping (None: sweeps are driven by hand, no grace).
        self.started_at: datetime | None = None

    def start(self) -> None:
        self.started_at = self.hub.clock()
        self._task = asyncio.create_task(self._run(), name="sessionhub-scheduler")

    def _heard_long_enough(self, timeout: timedelta, now: datetime) -> bool:
        """Whether this node has been up for ``timeout``: before that, activity it has not
        heard of may have been lost with the previous process."""
        return self.started_at is None or now - self.started_at >= timeout

    async def stop(self) -> None:
        await stop([self._task])
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                if self.leader is not None and not self.leader.leading:
                    await self.hub.flush_heartbeats()
                    continue
                # What a node that died committed and never published goes out from here.
                await self.hub.outbox.republish_stale()
                report = await self.sweep()
                if report.total:
                    log.info(
                        "sweep: dropped=%d idle=%d expired=%d archived=%d deleted=%d",
                        len(report.dropped),
                        len(report.idled),
                        len(report.expired),
                        len(report.archived),
                        len(report.deleted),
                    )
            except Exception:
                log.exception("sweep failed; will retry")

    async def sweep(self, *, now: datetime | None = None) -> SweepReport:
        """One pass over every kind's timeouts."""
        async with self._lock:
            report = SweepReport()
            report.flushed_heartbeats = await self.hub.flush_heartbeats()
            now = now or self.hub.clock()
            for kind in self.hub.kinds.values():
                await self._sweep_kind(kind, now, report)
            return report

    @staticmethod
    def alive_states(kind: Kind) -> frozenset[str]:
        """The states in which ``kind``'s sessions are dropped when heartbeats stop."""
        return kind.alive_states()

    async def _sweep_kind(self, kind: Kind, now: datetime, report: SweepReport) -> None:
        lc = kind.lifecycle
        if kind.heartbeat_timeout is not None and self._heard_long_enough(
            kind.heartbeat_timeout, now
        ):
            report.dropped += await self._apply_due(
                kind,
                self.alive_states(kind),
                "last_activity_at",
                now - kind.heartbeat_timeout,
                kind.heartbeat_action,
                "heartbeat_timeout",
            )
        if kind.idle_timeout is not None and self._heard_long_enough(kind.idle_timeout, now):
            states = frozenset(t for t in lc.states if t not in lc.ended)
            report.idled += await self._apply_due(
                kind,
                states,
                "last_activity_at",
                now - kind.idle_timeout,
                kind.idle_action,
                "idle_timeout",
            )
        if kind.wait_timeout is not None and kind.wait_states:
            report.expired += await self._apply_due(
                kind,
                kind.wait_states,
                "updated_at",
                now - kind.wait_timeout,
                kind.wait_action,
                kind.wait_reason,
            )
        if kind.archive_after is not None and kind.archive_from:
            report.archived += await self._apply_due(
                kind,
                kind.archive_from,
                "updated_at",
                now - kind.archive_after,
                "archive",
                None,
            )
        if kind.delete_after is not None and kind.delete_from:
            for s in await self.hub.store.due(
                Due(kind.name, kind.delete_from, "updated_at", now - kind.delete_after)
            ):
                await self.hub.delete(s)
                report.deleted.append(s.id)

    async def _apply_due(
        self,
        kind: Kind,
        states: frozenset[str],
        column: str,
        before: datetime,
        action: str,
        reason: str | None,
    ) -> list[str]:
        return await self.hub.sweep_due(Due(kind.name, states, column, before), action, reason)
