"""``/ws``: the KATO dashboard's WebSocket (seed 001) over the hub's live session counts.

Server to client (JSON text frames, the document's and the real dashboard's shapes):

* ``realtime_update`` every ``interval`` seconds (3) while at least one client is connected,
  and once at connect: ``{"type", "timestamp", "data": {"metrics": {...}, "sessions":
  {"active_count", "total_count"}}}``.
* ``session_event`` on every real create and end, at once, from hub events:
  ``{"type", "event_type": "session_created"|"session_destroyed", "timestamp", "data":
  {"current_count", "previous_count", "delta", "time_since_last_event", ...}}``.
* ``system_alert`` when a threshold is crossed (once per crossing): ``{"type", "id",
  "timestamp", "alerts": [{"level", "type", "message", "value", "threshold"}]}``.
* ``heartbeat`` (``{"type", "timestamp"}``) in reply to ``ping`` and every
  ``heartbeat_interval`` seconds; ``error`` for a message the server cannot use.

Client to server: the text ``ping``; ``{"type": "subscribe", "subscriptions": [...]}`` with
any of ``metrics``, ``containers``, ``sessions``, ``session_events``, ``system_alerts``.
Until a client subscribes it receives everything (as KATO does).

A token is required (``?token=`` or ``Authorization: Bearer``) and, because the numbers are
server-wide, the admin role - unless ``SESSIONHUB_KATO_ALLOW_ANONYMOUS=1``. Each client has a
bounded send queue; a client that does not read fast enough is closed with code 3008 (slow).
Settings: ``SESSIONHUB_KATO_*`` (see ``KatoConfig`` and ``docs/seeds/kato.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import orjson
import psutil
from fastapi import FastAPI, WebSocket
from starlette.websockets import WebSocketDisconnect

from ...consumers.counts import AlertTracker, SessionCounts, Threshold
from ...core import codes
from ...core.errors import Unauthenticated
from ...core.model import JSON, iso
from ...core.principal import Principal
from ..runtime import Runtime

log = logging.getLogger("sessionhub.kato")

SUBSCRIPTIONS = ("metrics", "containers", "sessions", "session_events", "system_alerts")
#: The parts of a ``realtime_update`` and the subscription that selects each.
_PARTS = ("metrics", "containers", "sessions")
ENV_PREFIX = "SESSIONHUB_KATO_"


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
    #: Messages queued per client before it is closed as slow.
    queue_size: int = 10_000

    @classmethod
    def load(cls, env: Mapping[str, str], extra: Mapping[str, Any]) -> KatoConfig:
        cfg = cls()
        for f in fields(cls):
            raw: Any = extra.get(f"kato_{f.name}")
            if raw is None:
                raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            current = getattr(cfg, f.name)
            try:
                if isinstance(current, bool):
                    value: Any = (
                        raw
                        if isinstance(raw, bool)
                        else str(raw).strip().lower() in ("1", "true", "yes", "on")
                    )
                elif isinstance(current, int):
                    value = int(raw)
                elif isinstance(current, float):
                    value = float(raw)
                else:
                    value = str(raw)
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}{f.name.upper()}: bad value {raw!r}") from None
            setattr(cfg, f.name, value)
        if cfg.interval <= 0:
            raise ValueError(f"{ENV_PREFIX}INTERVAL must be positive")
        if cfg.queue_size < 1:
            raise ValueError(f"{ENV_PREFIX}QUEUE_SIZE must be at least 1")
        return cfg

    def kind_list(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in self.kinds.split(",") if k.strip())


class _Client:
    """One ``/ws`` connection: its subscriptions and its bounded send queue."""

    def __init__(self, ws: WebSocket, principal: Principal, queue_size: int) -> None:
        self.ws = ws
        self.principal = principal
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=queue_size)
        #: None until the client subscribes: it receives everything, as with KATO.
        self.subscriptions: frozenset[str] | None = None
        self.close_code: int | None = None
        self.close_reason = ""

    def wants(self, topic: str) -> bool:
        return self.subscriptions is None or topic in self.subscriptions

    def parts(self) -> tuple[str, ...]:
        return tuple(p for p in _PARTS if self.wants(p))


class KatoService:
    """The counts, the alerts and the connected ``/ws`` clients of one runtime."""

    def __init__(self, runtime: Runtime, config: KatoConfig) -> None:
        self.runtime = runtime
        self.hub = runtime.hub
        self.config = config
        self.counts = SessionCounts(self.hub, kinds=config.kind_list())
        self.alerts = AlertTracker(
            [
                Threshold(
                    "high_session_count", config.alert_active_sessions, "Live sessions above limit"
                ),
                Threshold("high_cpu", config.alert_cpu_percent, "High CPU usage", "%", 90.0),
                Threshold(
                    "high_memory", config.alert_memory_percent, "High memory usage", "%", 95.0
                ),
            ]
        )
        self.clients: set[_Client] = set()
        self.sent_total = 0
        self.dropped_slow = 0
        self._rate = 0.0
        self._rate_mark = (time.monotonic(), 0)
        self._loop_task: asyncio.Task[None] | None = None
        self._process = psutil.Process()
        self._started = time.monotonic()

    # -- wiring ----------------------------------------------------------------------------

    def install(self, app: FastAPI) -> None:
        self.hub.add_listener(self.counts.on_event)
        self.counts.add_sink(self._on_session_event)
        app.add_api_websocket_route("/ws", self.endpoint, name="kato_ws")
        self.runtime.on_start.append(self.start)
        self.runtime.on_close.append(self.close)

    async def start(self) -> None:
        await self.counts.load()
        self._process.cpu_percent(None)  # the first reading primes the measurement
        if self.config.system_alerts:
            self.alerts.check({"high_session_count": float(self.counts.active)})

    async def close(self) -> None:
        await self._stop_loop()
        for c in list(self.clients):
            self._close(c, codes.SHUTDOWN.code, codes.SHUTDOWN.message)

    # -- fan-out ---------------------------------------------------------------------------

    @staticmethod
    def _encode(message: JSON) -> str:
        return orjson.dumps(message).decode()

    def _push(self, client: _Client, text: str) -> None:
        if client.close_code is not None:
            return
        try:
            client.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.dropped_slow += 1
            self._close(client, codes.SLOW.code, codes.SLOW.message)

    def _close(self, client: _Client, code: int, reason: str) -> None:
        """Close after what is queued, or at once (queue dropped) for a slow client."""
        if client.close_code is not None:
            return
        client.close_code, client.close_reason = code, reason
        if client.queue.full():
            while not client.queue.empty():
                client.queue.get_nowait()
        client.queue.put_nowait(None)

    def broadcast(self, message: JSON, topic: str) -> int:
        """Queue ``message`` for every client subscribed to ``topic``; encoded once."""
        text = self._encode(message)
        n = 0
        for c in tuple(self.clients):
            if c.wants(topic):
                self._push(c, text)
                n += 1
        return n

    def _now(self) -> str:
        return iso(self.hub.clock()) or ""

    def _heartbeat(self) -> JSON:
        return {"type": "heartbeat", "timestamp": self._now()}

    def _alert(self, alerts: list[JSON]) -> None:
        message = {
            "type": "system_alert",
            "id": f"alert_{int(time.time() * 1000)}_{secrets.token_hex(3)}",
            "timestamp": self._now(),
            "alerts": alerts,
        }
        self.broadcast(message, "system_alerts")

    def _on_session_event(self, message: JSON) -> None:
        # Runs inside the hub's publish, right after the change was committed.
        if self.config.session_events:
            self.broadcast(message, "session_events")
        if self.config.system_alerts:
            alerts = self.alerts.check({"high_session_count": float(self.counts.active)})
            if alerts:
                self._alert(alerts)

    # -- realtime_update ---------------------------------------------------------------------

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

    def _own_subscriptions(self) -> int:
        return sum(
            len(SUBSCRIPTIONS) if c.subscriptions is None else len(c.subscriptions)
            for c in self.clients
        )

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
        counts = await self.hub.store.count_by_kind_state() if store else {}
        for (kind, state), n in sorted(counts.items()):
            if self.counts.counted(kind):
                by_kind.setdefault(kind, {})[state] = n
                total += n
        active = self.counts.active
        if self.config.metrics:
            own: JSON = {
                "connections": len(self.clients),
                "subscriptions": self._own_subscriptions(),
                "messages_per_second": round(self._rate, 3),
                "messages_sent": self.sent_total,
                "slow_disconnects": self.dropped_slow,
            }
            realtime = self.runtime.services.get("realtime")
            rt: Mapping[str, Any] = realtime.stats() if realtime is not None else {}
            parts["metrics"] = {
                "connections": rt.get("connections", own["connections"]),
                "subscriptions": rt.get("subscriptions", own["subscriptions"]),
                "messages_per_second": rt.get("messages_per_second", own["messages_per_second"]),
                "publications_total": rt.get("publications_total", self.hub.stats.events_published),
                "events_published": self.hub.stats.events_published,
                "sessions": {"active": active, "total": total, "by_kind": by_kind},
                "process": self._process_stats(),
                "dashboard": own,
            }
        if self.config.session_events:
            parts["sessions"] = {"active_count": active, "total_count": total}
        return parts

    def _send_update(self, parts: dict[str, JSON], targets: Iterable[_Client]) -> None:
        timestamp = self._now()
        encoded: dict[tuple[str, ...], str] = {}
        for c in targets:
            wanted = tuple(p for p in c.parts() if p in parts)
            if not wanted:
                continue
            text = encoded.get(wanted)
            if text is None:
                message = {
                    "type": "realtime_update",
                    "timestamp": timestamp,
                    "data": {p: parts[p] for p in wanted},
                }
                text = encoded[wanted] = self._encode(message)
            self._push(c, text)

    async def tick(self, targets: Iterable[_Client] | None = None) -> None:
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
                self._alert(alerts)

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
                text = self._encode(self._heartbeat())
                for c in tuple(self.clients):
                    self._push(c, text)

    def _ensure_loop(self) -> None:
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

    # -- one connection ----------------------------------------------------------------------

    def _authenticate(self, ws: WebSocket) -> Principal | tuple[int, str]:
        token = ws.query_params.get("token")
        authorization = f"Bearer {token}" if token else ws.headers.get("authorization")
        api_key = ws.headers.get("x-api-key")
        if not authorization and not api_key:
            if self.config.allow_anonymous:
                return Principal("anonymous")
            return codes.INVALID_TOKEN.code, "token required: ?token=<jwt> or Authorization"
        try:
            principal = self.runtime.auth.authenticate(authorization, api_key)
        except Unauthenticated as exc:
            return codes.INVALID_TOKEN.code, exc.detail[:100]
        if not principal.is_admin and not self.config.allow_anonymous:
            return codes.PERMISSION_DENIED_DISCONNECT.code, "the /ws dashboard needs the admin role"
        return principal

    async def _sender(self, client: _Client) -> None:
        while True:
            text = await client.queue.get()
            if text is None:
                with contextlib.suppress(Exception):
                    await client.ws.close(
                        code=client.close_code or 1000, reason=client.close_reason
                    )
                return
            await client.ws.send_text(text)
            self.sent_total += 1

    def _handle(self, client: _Client, text: str) -> None:
        if text.strip() == "ping":
            self._push(client, self._encode(self._heartbeat()))
            return
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._error(client, "send the text ping or a JSON object")
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "ping":
            self._push(client, self._encode(self._heartbeat()))
        elif kind == "subscribe":
            wanted = message.get("subscriptions")
            if not isinstance(wanted, list) or not all(isinstance(x, str) for x in wanted):
                self._error(client, "subscriptions must be a list of strings")
                return
            unknown = sorted(set(wanted) - set(SUBSCRIPTIONS))
            if unknown:
                self._error(
                    client, f"unknown subscriptions {unknown}; known: {list(SUBSCRIPTIONS)}"
                )
            if self.config.selective_subscriptions:
                client.subscriptions = frozenset(w for w in wanted if w in SUBSCRIPTIONS)
        else:
            self._error(client, f"unknown message type {kind!r}; use ping or subscribe")

    def _error(self, client: _Client, message: str) -> None:
        self._push(
            client, self._encode({"type": "error", "timestamp": self._now(), "message": message})
        )

    async def endpoint(self, websocket: WebSocket) -> None:
        """The ``/ws`` handler: authenticate, then pump messages both ways."""
        await websocket.accept()
        who = self._authenticate(websocket)
        if not isinstance(who, Principal):
            code, reason = who
            await websocket.close(code=code, reason=reason)
            return
        client = _Client(websocket, who, self.config.queue_size)
        self.clients.add(client)
        sender = asyncio.get_running_loop().create_task(self._sender(client))
        try:
            await self.tick([client])  # the first realtime_update at once, as KATO's loop does
            self._ensure_loop()
            while True:
                frame = await websocket.receive()
                if frame["type"] == "websocket.disconnect":
                    break
                if frame.get("text") is not None:
                    self._handle(client, frame["text"])
                else:
                    self._error(client, "binary frames are not used on /ws")
        except WebSocketDisconnect:
            pass
        finally:
            self.clients.discard(client)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            if not self.clients:
                await self._stop_loop()


def install(app: FastAPI, runtime: Runtime) -> None:
    """Serve ``/ws`` unless ``SESSIONHUB_KATO_ENABLED=0``."""
    config = KatoConfig.load(os.environ, runtime.settings.extra)
    if not config.enabled:
        return
    service = KatoService(runtime, config)
    runtime.services["kato"] = service
    service.install(app)
