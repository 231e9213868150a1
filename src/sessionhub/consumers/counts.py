"""Live session counts (seed 001): exact, from every committed event, never by polling.

``SessionCounts`` is a consumer of the event log (``consumers/base.py``). When it starts
(on the node that leads the consumers) it reads the log's position, then the number of live
(not ended) sessions and their versions from the store; from then on it moves the count by
one on every real create and every end (a transition into an ended state, or the deletion
of a live session), in log order. Each change yields a ``session_event`` message in the
document's shape, so ``current_count`` is always ``previous_count`` plus or minus one and no
change is lost between two looks.

The messages are published on broker topics, so every node's KATO ``/ws`` clients get them,
whichever node made the change: ``kato:session_events`` (the ``session_event`` messages),
``kato:counts`` (``{"active": n}`` at start and after every change) and
``kato:system_alerts`` (``system_alert`` messages for the live-session threshold).

Nothing is counted twice: events older than what the start-up load read are recognised by
id and version (a session the load saw as live is not created again; a version not newer
than the one seen changes nothing; an end for a session that is not live is ignored).

``AlertTracker`` turns values and thresholds into ``system_alert`` entries, once per
crossing: an alert fires when a value goes above its threshold and is re-armed only after
the value is back at or below it.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

from ..core.model import CREATED, DELETED, JSON, STATE_CHANGED, Event, iso
from ..core.query import SessionQuery
from ..hub import Hub

log = logging.getLogger("sessionhub.counts")

SESSION_CREATED = "session_created"
SESSION_DESTROYED = "session_destroyed"
#: How many ended session ids are remembered to ignore a late replay of their creation.
ENDED_MEMORY = 100_000
#: The topics the counts are published on.
EVENTS_TOPIC = "kato:session_events"
COUNTS_TOPIC = "kato:counts"
ALERTS_TOPIC = "kato:system_alerts"

Sink = Callable[[JSON], None]


class SessionCounts:
    """The live-session count, kept exact from the event log.

    ``kinds`` limits the count to those kinds (empty: every kind). Sinks registered with
    ``add_sink`` receive each ``session_event`` message synchronously, before it is published.
    ``alert_above`` > 0 publishes a ``system_alert`` when the count goes above it.
    """

    name = "counts"

    def __init__(self, hub: Hub, *, kinds: Iterable[str] = (), alert_above: float = 0.0) -> None:
        self.hub = hub
        self.counted_kinds = frozenset(kinds)
        self.kinds: frozenset[str] | None = self.counted_kinds or None
        self.loaded = False
        self._live: dict[str, int] = {}  # live session id -> newest version seen
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._sinks: list[Sink] = []
        self._last_at: datetime | None = None
        self.created_total = 0
        self.destroyed_total = 0
        self.alerts = AlertTracker(
            [Threshold("high_session_count", alert_above, "Live sessions above limit")]
        )
        self._outbox: list[tuple[str, bytes]] = []

    @property
    def active(self) -> int:
        """Sessions of the counted kinds that have not ended."""
        return len(self._live)

    def add_sink(self, sink: Sink) -> Callable[[], None]:
        self._sinks.append(sink)
        return lambda: self._sinks.remove(sink) if sink in self._sinks else None

    def counted(self, kind: str) -> bool:
        """Whether sessions of ``kind`` are counted."""
        return (not self.counted_kinds or kind in self.counted_kinds) and kind in self.hub.kinds

    def _is_live(self, kind: str, state: str) -> bool:
        return state not in self.hub.kinds[kind].lifecycle.ended

    # -- the consumer -------------------------------------------------------------------------

    async def begin(self) -> int:
        """Read the log's position, then every live session (id and version); returns the
        position to follow the log from."""
        position = await self.hub.store.last_seq()
        await self.load()
        self.alerts.check({"high_session_count": float(self.active)})  # prime, do not alert
        await self._publish([(COUNTS_TOPIC, self._counts())])
        return position

    async def handle(self, events: Sequence[Event], start: int | None, position: int) -> bool:
        for event in events:
            self.on_event(event)
        out, self._outbox = self._outbox, []
        await self._publish(out)
        return True

    async def end(self) -> None:
        self.loaded = False

    async def _publish(self, messages: list[tuple[str, bytes]]) -> None:
        for topic, data in messages:
            try:
                await self.hub.broker.publish([topic], data)
            except Exception:
                log.exception("publishing live counts failed")

    def _counts(self) -> bytes:
        return orjson.dumps({"active": self.active})

    async def load(self) -> int:
        """Read every live session (id and version) from the store; returns the count."""
        live: dict[str, int] = {}
        for name, kind in self.hub.kinds.items():
            if not self.counted(name):
                continue
            states = tuple(s for s in kind.lifecycle.states if s not in kind.lifecycle.ended)
            if not states:
                continue
            cursor: str | None = None
            for _ in range(100_000):  # bounded: 50M live sessions
                page = await self.hub.store.find(
                    SessionQuery(kinds=(name,), states=states, limit=500, cursor=cursor)
                )
                for s in page.items:
                    live[s.id] = s.version
                cursor = page.next_cursor
                if cursor is None:
                    break
        self._live = live
        self._last_at = self.hub.clock()
        self.loaded = True
        log.info("live session count loaded: %d", len(live))
        return len(live)

    # -- events ----------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Move the count on a real create or end."""
        if not self.loaded or not self.counted(event.kind):
            return  # before ``load`` the store is the truth; the load will read it
        sid = event.session_id
        if event.type == CREATED:
            if sid in self._live or sid in self._ended:
                # Older than the load: counted by it (and perhaps ended since) already.
                return
            if self._is_live(event.kind, str(event.data.get("state", ""))):
                self._live[sid] = event.version
                self._emit(SESSION_CREATED, event, +1)
        elif event.type == STATE_CHANGED:
            seen = self._live.get(sid)
            if seen is None or event.version <= seen:
                return  # not live here, or older than what the load read
            if self._is_live(event.kind, str(event.data.get("to", ""))):
                self._live[sid] = event.version
            else:
                self._end(sid)
                self._emit(SESSION_DESTROYED, event, -1)
        elif event.type == DELETED:
            if sid in self._live:
                self._end(sid)
                self._emit(SESSION_DESTROYED, event, -1)
        elif sid in self._live and event.version > self._live[sid]:
            self._live[sid] = event.version

    def _end(self, sid: str) -> None:
        del self._live[sid]
        self._ended[sid] = None
        if len(self._ended) > ENDED_MEMORY:
            self._ended.popitem(last=False)

    def _emit(self, event_type: str, event: Event, step: int) -> None:
        current = len(self._live)
        since = (event.at - self._last_at).total_seconds() if self._last_at else 0.0
        self._last_at = event.at
        if step > 0:
            self.created_total += 1
        else:
            self.destroyed_total += 1
        message: JSON = {
            "type": "session_event",
            "event_type": event_type,
            "timestamp": iso(event.at),
            "data": {
                "current_count": current,
                "previous_count": current - step,
                # The document shows the size of the change; the direction is event_type.
                "delta": abs(step),
                "time_since_last_event": round(max(0.0, since), 6),
                "session_id": event.session_id,
                "kind": event.kind,
            },
        }
        for sink in tuple(self._sinks):
            try:
                sink(message)
            except Exception:
                log.exception("session event sink failed")
        self._outbox.append((EVENTS_TOPIC, orjson.dumps(message)))
        self._outbox.append((COUNTS_TOPIC, self._counts()))
        alerts = self.alerts.check({"high_session_count": float(current)})
        if alerts:
            self._outbox.append((ALERTS_TOPIC, orjson.dumps(alert_message(alerts, event.at))))


def alert_message(alerts: list[JSON], at: datetime) -> JSON:
    """A ``system_alert`` message in the document's shape."""
    return {
        "type": "system_alert",
        "id": f"alert_{int(at.timestamp() * 1000)}_{secrets.token_hex(3)}",
        "timestamp": iso(at),
        "alerts": alerts,
    }


@dataclass(frozen=True, slots=True)
class Threshold:
    """One alert rule: ``type`` fires when the value goes above ``limit``."""

    type: str
    limit: float
    label: str
    unit: str = ""
    #: Above this the level is ``error`` instead of ``warning``.
    error_above: float | None = None


class AlertTracker:
    """Edge-triggered alerts: one entry per crossing above a threshold, not one per check."""

    def __init__(self, thresholds: Iterable[Threshold]) -> None:
        self.thresholds = {t.type: t for t in thresholds}
        self._above: dict[str, bool] = {}

    def check(self, values: dict[str, float]) -> list[JSON]:
        """Alerts for the thresholds that ``values`` crossed upwards since the last check."""
        out: list[JSON] = []
        for name, value in values.items():
            t = self.thresholds.get(name)
            if t is None or t.limit <= 0:
                continue
            above = value > t.limit
            if above and not self._above.get(name, False):
                level = (
                    "error" if t.error_above is not None and value >= t.error_above else "warning"
                )
                shown = f"{value:.1f}{t.unit}" if t.unit else f"{value:g}"
                out.append(
                    {
                        "level": level,
                        "type": t.type,
                        "message": f"{t.label}: {shown} (threshold {t.limit:g}{t.unit})",
                        "value": round(value, 2),
                        "threshold": t.limit,
                    }
                )
            self._above[name] = above
        return out
