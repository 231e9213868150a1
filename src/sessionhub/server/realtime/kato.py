"""``/ws``: the KATO dashboard's WebSocket (seed 001), a wire format on the realtime engine.

Server to client (JSON text frames, the document's and the real dashboard's shapes):

* ``realtime_update`` every ``interval`` seconds (3) while at least one client is connected,
  and once at connect: ``{"type", "timestamp", "data": {"metrics": {...}, "sessions":
  {"active_count", "total_count"}}}``.
* ``session_event`` on every real create and end, at once: ``{"type", "event_type":
  "session_created"|"session_destroyed", "timestamp", "data": {"current_count",
  "previous_count", "delta", "time_since_last_event", ...}}``.
* ``system_alert`` when a threshold is crossed (once per crossing): ``{"type", "id",
  "timestamp", "alerts": [{"level", "type", "message", "value", "threshold"}]}``.
* ``heartbeat`` (``{"type", "timestamp"}``) in reply to ``ping`` and every
  ``heartbeat_interval`` seconds; ``error`` for a message the server cannot use.

Client to server: the text ``ping``; ``{"type": "subscribe", "subscriptions": [...]}`` with
any of ``metrics``, ``containers``, ``sessions``, ``session_events``, ``system_alerts``.
Until a client subscribes it receives everything (as KATO does).

The counts come from the live-count consumer (``consumers/counts.py``), which follows the
event log on the node that leads the consumers and publishes ``session_event``, the count
and its alerts on the broker topics ``kato:session_events``, ``kato:counts`` and
``kato:system_alerts``; every node's ``/ws`` clients follow those topics, so the numbers are
the same whichever node a dashboard is connected to. ``realtime_update`` and the CPU/memory
alerts are this node's (its process's numbers).

A token is required (``?token=`` or ``Authorization: Bearer``) and, because the numbers are
server-wide, the admin role - unless ``SESSIONHUB_KATO_ALLOW_ANONYMOUS=1``. Like every socket,
a client that does not read fast enough is closed with code 3008 (slow) and one that stops
answering pings is closed with 1011. Settings: ``SESSIONHUB_KATO_*`` (``KatoConfig``,
``docs/seeds/kato.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import psutil

from ...consumers.counts import (
    ALERTS_TOPIC,
    COUNTS_TOPIC,
    EVENTS_TOPIC,
    AlertTracker,
    SessionCounts,
    Threshold,
    alert_message,
)
from ...core import codes
from ...core.errors import Unavailable
from ...core.model import JSON, iso
from ...core.principal import Principal
from ...core.streams import Publication
from ...settings import load_section
from .conn import Conn
from .node import ANONYMOUS, RealtimeNode
from .socket import Handshake, Out, Sink

log = logging.getLogger("sessionhub.kato")

PATH = "/ws"
SUBSCRIPTIONS = ("metrics", "containers", "sessions", "session_events", "system_alerts")
#: The parts of a ``realtime_update`` and the subscription that selects each.
_PARTS = ("metrics", "containers", "sessions")
#: Subscription -> the broker topic that carries it.
_TOPICS = {"session_events": EVENTS_TOPIC, "system_alerts": ALERTS_TOPIC}
ENV_PREFIX = "SESSIONHUB_KATO_"


def encode_raw(pub: Publication) -> Out:
    """The ``kato:*`` topics carry finished ``/ws`` messages: sent as they are."""
    return Out(pub.data)


@dataclass(slots=True)
class KatoConfig:
    """Feature flags and thresholds of ``/ws``; each is ``SESSIONHUB_KATO_<NAME>`` in the
    environment, or ``Settings.extra["kato_<name>"]`` (which wins)."""

    #: Serve ``/ws`` at all.
    enabled: bool = True
    #: Seconds between ``realtime_update`` messages.
    interval: float = 3.0
    #: Seconds between unsolicited ``heartbeat`` messages (0: only in reply to ``ping``).
    heartbeat_interval: float = 30.0
    #: ``session_event`` messages and the ``sessions`` part of ``realtime_update``.
    session_events: bool = True
    #: The ``metrics`` part of ``realtime_update``.
    metrics: bool = True
    #: ``system_alert`` messages.
    system_alerts: bool = True
    #: Honour ``subscribe`` messages (off: every client receives everything).
    selective_subscriptions: bool = True
    #: Accept clients without a token and non-admin tokens.
    allow_anonymous: bool = False
    #: Kinds counted (comma-separated; empty: every kind).
    kinds: str = ""
    #: Alert when live sessions exceed this many (0: off).
    alert_active_sessions: float = 0.0
    #: Alert when this process's CPU use exceeds this percentage (0: off).
    alert_cpu_percent: float = 90.0
    #: Alert when this process's share of memory exceeds this percentage (0: off).
    alert_memory_percent: float = 90.0

    @classmethod
    def load(cls, env: Mapping[str, str], extra: Mapping[str, Any]) -> KatoConfig:
        cfg = load_section(cls(), env, extra, env_prefix=ENV_PREFIX, extra_prefix="kato_")
        if cfg.interval <= 0:
            raise ValueError(f"{ENV_PREFIX}INTERVAL must be positive")
        return cfg

    def kind_list(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in self.kinds.split(",") if k.strip())


class KatoService:
    """The ``/ws`` wire of one node: its clients' shared numbers, timers and alerts."""

    def __init__(self, node: RealtimeNode, config: KatoConfig, counts: SessionCounts) -> None:
        self.node = node
        self.hub = node.hub
        self.config = config
        self.counts = counts
        self.alerts = AlertTracker(
            [
                Threshold("high_cpu", config.alert_cpu_percent, "High CPU usage", "%", 90.0),
                Threshold(
                    "high_memory", config.alert_memory_percent, "High memory usage", "%", 95.0
                ),
            ]
        )
        #: The live count as the counts topic last said (any node's consumer may lead).
        self.active = 0
        self.sent_total = 0
        self._rate = 0.0
        self._rate_mark = (time.monotonic(), 0)
        self._loop_task: asyncio.Task[None] | None = None
        self._unsubscribe: Any = None
        self._process = psutil.Process()
        self._started = time.monotonic()

    @property
    def clients(self) -> list[KatoConn]:
        return [c for c in self.node.connections("kato") if isinstance(c, KatoConn)]

    def open(self, node: RealtimeNode, sink: Sink, handshake: Handshake) -> Conn:
        return KatoConn(self, node, sink, handshake)

    async def start(self) -> None:
        self._process.cpu_percent(None)  # the first reading primes the measurement
        self._unsubscribe = self.hub.broker.subscribe(COUNTS_TOPIC, self._on_counts)
        try:
            latest, _, _ = await self.hub.broker.history(COUNTS_TOPIC, limit=1)
        except Unavailable as exc:
            # A node starts while the broker is down: the count comes with the next
            # kato:counts publication once it is back, and the node still serves.
            log.warning("KATO counts not read at start (%s); following them from now", exc)
            return
        if latest:
            self._on_counts(latest[-1])

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self._stop_loop()

    def _on_counts(self, pub: Publication) -> None:
        with contextlib.suppress(ValueError, TypeError, KeyError):
            self.active = int(orjson.loads(pub.data)["active"])

    # -- messages ----------------------------------------------------------------------------

    def _now(self) -> str:
        return iso(self.hub.clock()) or ""

    def heartbeat(self) -> bytes:
        return orjson.dumps({"type": "heartbeat", "timestamp": self._now()})

    def _process_stats(self) -> JSON:
        p = self._process
        with p.oneshot():
            return {
                "pid": p.pid,
                "cpu_percent": round(p.cpu_percent(None), 2),
                "memory_rss_bytes": p.memory_info().rss,
                "memory_percent": round(p.memory_percent(), 3),
                "threads": p.num_threads(),
                "uptime_seconds": round(time.monotonic() - self._started, 3),
            }

    def _measure_rate(self) -> None:
        now = time.monotonic()
        then, sent = self._rate_mark
        if now - then > 0:
            self._rate = (self.sent_total - sent) / (now - then)
        self._rate_mark = (now, self.sent_total)

    async def snapshot(self, *, store: bool = True) -> dict[str, JSON]:
        """The parts of a ``realtime_update`` (only the enabled ones). ``store=False`` skips
        the one store query (the session totals by kind and state then read 0)."""
        parts: dict[str, JSON] = {}
        by_kind: dict[str, dict[str, int]] = {}
        total = 0
        counts = await self.hub.count_by_kind_state() if store else {}
        for (kind, state), n in sorted(counts.items()):
            if self.counts.counted(kind):
                by_kind.setdefault(kind, {})[state] = n
                total += n
        active = self.counts.active if self.counts.loaded else self.active
        clients = self.clients
        if self.config.metrics:
            own: JSON = {
                "connections": len(clients),
                "subscriptions": sum(len(c.parts()) + len(c.topics) for c in clients),
                "messages_per_second": round(self._rate, 3),
                "messages_sent": self.sent_total,
                "slow_disconnects": self.node.stats_slow,
            }
            rt = self.node.stats()
            parts["metrics"] = {
                "connections": rt["connections"],
                "subscriptions": rt["subscriptions"],
                "messages_per_second": rt["messages_per_second"],
                "publications_total": rt["publications_total"],
                "events_published": self.hub.stats.events_published,
                "sessions": {"active": active, "total": total, "by_kind": by_kind},
                "process": self._process_stats(),
                "dashboard": own,
            }
        if self.config.session_events:
            parts["sessions"] = {"active_count": active, "total_count": total}
        return parts

    def _send_update(self, parts: dict[str, JSON], targets: Iterable[KatoConn]) -> None:
        timestamp = self._now()
        encoded: dict[tuple[str, ...], Out] = {}
        for c in targets:
            wanted = tuple(p for p in c.parts() if p in parts)
            if not wanted:
                continue
            item = encoded.get(wanted)
            if item is None:
                message = {
                    "type": "realtime_update",
                    "timestamp": timestamp,
                    "data": {p: parts[p] for p in wanted},
                }
                item = encoded[wanted] = Out(orjson.dumps(message))
            c.enqueue(item)
            self.sent_total += 1

    async def tick(self, targets: Iterable[KatoConn] | None = None) -> None:
        """One ``realtime_update`` to ``targets`` (default: every client, and then the
        process thresholds are checked too)."""
        periodic = targets is None
        chosen = tuple(self.clients) if targets is None else tuple(targets)
        wanted = {p for c in chosen for p in c.parts()}
        cfg = self.config
        thresholds = (
            periodic
            and cfg.system_alerts
            and cfg.metrics
            and (cfg.alert_cpu_percent > 0 or cfg.alert_memory_percent > 0)
        )
        if not wanted and not thresholds:
            return  # nobody reads a realtime_update and no threshold needs the numbers
        parts = await self.snapshot(store=bool(wanted))
        self._send_update(parts, chosen)
        if thresholds and "metrics" in parts:
            process = parts["metrics"]["process"]
            alerts = self.alerts.check(
                {"high_cpu": process["cpu_percent"], "high_memory": process["memory_percent"]}
            )
            if alerts:
                # This process's numbers: for the dashboards connected to this node.
                item = Out(orjson.dumps(alert_message(alerts, self.hub.clock())))
                for c in self.clients:
                    if c.wants("system_alerts"):
                        c.enqueue(item)

    async def _loop(self) -> None:
        next_heartbeat = time.monotonic() + self.config.heartbeat_interval
        while self.clients:
            await asyncio.sleep(self.config.interval)
            if not self.clients:
                break
            self._measure_rate()
            try:
                await self.tick()
            except Exception:
                log.exception("realtime_update failed; will retry")
            if self.config.heartbeat_interval > 0 and time.monotonic() >= next_heartbeat:
                next_heartbeat = time.monotonic() + self.config.heartbeat_interval
                item = Out(self.heartbeat())
                for c in self.clients:
                    c.enqueue(item)

    def ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(
                self._loop(), name="sessionhub-kato-updates"
            )

    async def _stop_loop(self) -> None:
        task, self._loop_task = self._loop_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def authenticate(self, handshake: Handshake) -> Principal | tuple[int, str]:
        principal = self.node.authenticate(handshake, anonymous=self.config.allow_anonymous)
        if isinstance(principal, tuple) or principal is ANONYMOUS:
            return principal
        if not principal.is_admin and not self.config.allow_anonymous:
            return codes.PERMISSION_DENIED_DISCONNECT.code, "the /ws dashboard needs the admin role"
        return principal


class KatoConn(Conn):
    """One ``/ws`` client: its subscriptions; it follows the ``kato:*`` topics it wants."""

    wire = "kato"
    joinable = False  # dashboards parse one JSON message per frame
    #: ``ping`` and ``subscribe`` messages are tiny; anything near this is not one.
    max_message = 64 * 1024

    def __init__(self, svc: KatoService, node: RealtimeNode, sink: Sink, hs: Handshake) -> None:
        super().__init__(node, sink, hs)
        self.svc = svc
        self.principal: Principal | None = None
        #: None until the client subscribes: it receives everything, as with KATO.
        self.subscriptions: frozenset[str] | None = None

    def wants(self, topic: str) -> bool:
        return self.subscriptions is None or topic in self.subscriptions

    def parts(self) -> tuple[str, ...]:
        return tuple(p for p in _PARTS if self.wants(p))

    def opened(self) -> None:
        who = self.svc.authenticate(self.handshake)
        if not isinstance(who, Principal):
            code, reason = who
            self.disconnect(code, reason)
            return
        self.principal = who
        self._follow()
        self.spawn(self._greet())

    async def _greet(self) -> None:
        # The first realtime_update at once, as KATO's loop does; then every interval.
        try:
            await self.svc.tick([self])
        finally:
            if not self.closed:
                self.svc.ensure_loop()

    def _follow(self) -> None:
        """Follow the topics of what the client wants (and leave the others)."""
        cfg = self.svc.config
        enabled = {"session_events": cfg.session_events, "system_alerts": cfg.system_alerts}
        for name, topic in _TOPICS.items():
            if enabled[name] and self.wants(name):
                if topic not in self.topics:
                    self.node.live(self, topic, encode_raw)
            elif topic in self.topics:
                self.node.detach(self, topic)

    def received(self, payload: bytes, binary: bool) -> None:
        if binary:
            self._error("binary frames are not used on /ws")
            return
        text = payload.decode("utf-8", "replace")
        if text.strip() == "ping":
            self.send(self.svc.heartbeat())
            return
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self._error("send the text ping or a JSON object")
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "ping":
            self.send(self.svc.heartbeat())
        elif kind == "subscribe":
            wanted = message.get("subscriptions")
            if not isinstance(wanted, list) or not all(isinstance(x, str) for x in wanted):
                self._error("subscriptions must be a list of strings")
                return
            unknown = sorted(set(wanted) - set(SUBSCRIPTIONS))
            if unknown:
                self._error(f"unknown subscriptions {unknown}; known: {list(SUBSCRIPTIONS)}")
            if self.svc.config.selective_subscriptions:
                self.subscriptions = frozenset(w for w in wanted if w in SUBSCRIPTIONS)
                self._follow()
        else:
            self._error(f"unknown message type {str(kind)[:40]!r}; use ping or subscribe")

    def _error(self, message: str) -> None:
        self.send(orjson.dumps({"type": "error", "timestamp": self.svc._now(), "message": message}))

    def cleanup(self) -> None:
        if not self.svc.clients:
            self.spawn(self.svc._stop_loop())
