"""What one rig's connector has seen and done: for ``/api/health`` detail and ``/metrics``."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from ...core.model import JSON
from ...kinds.imaging import js_time

log = logging.getLogger("sessionhub.nina")

#: Counters of input that was not used, by reason (see ``normalize.BadInput``).
BAD_INPUT = (
    "bad_json",
    "bad_shape",
    "bad_time",
    "bad_values",
    "error_frame",
    "oversized",
    "unknown_events",
)
#: Counters of everything else.
COUNTERS = (
    "frames",
    "history_items",
    "events",
    "applied",
    "notable",
    "duplicate",
    "twin",
    "stale",
    "messages",
    "commits",
    "commit_errors",
    "heartbeats",
    "published",
    "seeds",
    "seed_errors",
    "guider_polls",
    "guider_errors",
    "connects",
)
#: Bad-input log lines per reason before logging only every 1000th (a flood must not
#: become a flood of log lines).
LOG_FIRST = 5


@dataclass(slots=True)
class RigStatus:
    """Connection state and counters of one rig."""

    rig: str
    url: str
    connected: bool = False
    connected_since: datetime | None = None
    last_event_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    #: Failed attempts since the last good connection (what the backoff is at).
    retries: int = 0
    #: Failed attempts in total.
    failures: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> int:
        value = self.counts.get(name, 0) + n
        self.counts[name] = value
        return value

    def bad(self, reason: str, detail: str, n: int = 1) -> None:
        """Count input that was not used, and log it (the first few, then every 1000th)."""
        total = self.count(reason, n)
        if total <= LOG_FIRST or total % 1000 < n:
            log.warning("nina %s: %s (%s #%d): %s", self.rig, reason, self.url, total, detail[:200])

    def up(self, now: datetime) -> None:
        self.connected = True
        self.connected_since = now
        self.retries = 0
        self.count("connects")

    def down(self, error: str, now: datetime) -> None:
        if self.connected:
            log.info("nina %s: disconnected: %s", self.rig, error)
        self.connected = False
        self.connected_since = None
        self.last_error = error[:300]
        self.last_error_at = now
        self.retries += 1
        self.failures += 1

    def to_json(self) -> JSON:
        counts = {name: self.counts.get(name, 0) for name in (*COUNTERS, *BAD_INPUT)}
        return {
            "rig": self.rig,
            "connected": self.connected,
            "connected_since": js_time(self.connected_since),
            "last_event_at": js_time(self.last_event_at),
            "retries": self.retries,
            "failures": self.failures,
            "reconnects": max(0, counts["connects"] - 1),
            "last_error": self.last_error,
            "last_error_at": js_time(self.last_error_at),
            "counts": counts,
            "bad_input": sum(counts[name] for name in BAD_INPUT),
        }
