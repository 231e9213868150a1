"""Request logging (one structured line per request), Prometheus metrics and body limits.

A plain ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``: it adds no task
per request and leaves WebSocket and streaming responses untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from types import FrameType
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("sessionhub.http")


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sessionhub_http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sessionhub_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.events = Counter(
            "sessionhub_events_published_total",
            "Session events published",
            ["type"],
            registry=self.registry,
        )
        self.heartbeats = Gauge(
            "sessionhub_heartbeats_received",
            "Heartbeats received since start",
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.sessions = Gauge(
            "sessionhub_sessions", "Stored sessions", ["kind", "state"], registry=self.registry
        )

    def request_done(self, method: str, route: str, status: int, elapsed: float) -> None:
        """Count one answered request and its latency. The labelled children are looked up
        once per (method, route, status): a few microseconds per request otherwise."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            # Bounded: the parser knows a fixed set of methods, the routes are the app's
            # templates (or "unmatched"), the statuses the ones answered.
            self._children[key] = children
        children[0].inc()
        children[1].observe(elapsed)

    def watch_table(self, read: Callable[[], Mapping[str, Mapping[str, Any]]], label: str) -> None:
        """Export ``read()``'s numbers at each scrape: ``{name: {"type": "gauge"|"counter",
        "help", "values": {<label value>: number}}}`` (the NINA connector's, per rig)."""
        self.registry.register(_TableCollector(read, label))

    def watch_realtime(self, stats: Callable[[], Mapping[str, Any] | None]) -> None:
        """Export the realtime service's counters, read from ``stats()`` at each scrape
        (None: no realtime service, nothing exported)."""
        self.registry.register(_RealtimeCollector(stats))


class _TableCollector(Collector):
    def __init__(self, read: Callable[[], Mapping[str, Mapping[str, Any]]], label: str) -> None:
        self.read = read
        self.label = label

    def collect(self) -> Iterator[Metric]:
        for name, spec in self.read().items():
            family = CounterMetricFamily if spec.get("type") == "counter" else GaugeMetricFamily
            metric = family(name, str(spec.get("help", name)), labels=[self.label])
            for key, value in dict(spec.get("values", {})).items():
                metric.add_metric([str(key)], float(value))
            yield metric


class _RealtimeCollector(Collector):
    def __init__(self, stats: Callable[[], Mapping[str, Any] | None]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats()
        if s is None:
            return
        conns = GaugeMetricFamily(
            "sessionhub_realtime_connections", "Open realtime connections", labels=["transport"]
        )
        conns.add_metric(["websocket"], s["connections"])
        conns.add_metric(["sse"], s["sse_streams"])
        yield conns
        yield GaugeMetricFamily(
            "sessionhub_realtime_subscriptions",
            "Topic subscriptions of open WebSocket connections",
            value=s["subscriptions"],
        )
        yield CounterMetricFamily(
            "sessionhub_realtime_publications",
            "Publications fanned out by this node",
            value=s["publications_total"],
        )
        yield CounterMetricFamily(
            "sessionhub_realtime_deliveries",
            "Publications written to WebSocket subscribers",
            value=s["deliveries_total"],
        )
        yield CounterMetricFamily(
            "sessionhub_realtime_slow_disconnects",
            "Connections and streams cut off for falling behind (code 3008)",
            value=s["slow_disconnects"],
        )
        rec = CounterMetricFamily(
            "sessionhub_realtime_recoveries",
            "Resubscribes that asked to recover missed publications",
            labels=["recovered"],
        )
        rec.add_metric(["true"], s["recovered"])
        rec.add_metric(["false"], s["unrecovered"])
        yield rec


class ObserveMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        length = dict(scope.get("headers", ())).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _too_large(send, self.max_body)
            status = 413
            self._record(scope, status, start)
            return

        recorded = False

        async def send_wrapper(message: Message) -> None:
            # The line is written before the last of the answer goes out, so a client that has
            # its answer finds the request in the log and the metrics.
            nonlocal status, recorded
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
            elif kind == "http.response.body" and not message.get("more_body", False):
                recorded = True
                self._record(scope, status, start)
            await send(message)

        received = 0

        async def receive_limited() -> Message:
            # A chunked body has no content-length to check up front, so count as it arrives;
            # the route's body parsing re-raises HTTPException, which becomes a 413 problem.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise HTTPException(413, f"request body is larger than {self.max_body} bytes")
            return message

        try:
            await self.app(scope, receive_limited, send_wrapper)
        finally:
            if not recorded:
                self._record(scope, status, start)

    def _record(self, scope: Scope, status: int, start: float) -> None:
        record(self.metrics, scope, status, start)


#: Routes whose answers below 400 are logged at debug, not info. A heartbeat says only that
#: a client is alive: 10,000 sessions beating every 30 s would write 333 lines a second, and
#: in a profile the line was a fifth of a heartbeat's Python work. Probes and scrapes repeat
#: every few seconds for the same reason. Their failures are logged at info, and the metrics count
#: every answer.
QUIET_ROUTES = frozenset(
    {"/api/sessions/{session_id}/heartbeat", "/api/health", "/api/ready", "/metrics"}
)


def record(metrics: Metrics, scope: Scope, status: int, start: float) -> None:
    """Count and log one answered request (``start``: its ``perf_counter()``): the route
    label is the template of the route that answered (``scope["route"]``), the user the
    caller the answer was for (``scope["state"]["principal"]``). The line is at info, or at
    debug for a success on one of :data:`QUIET_ROUTES`."""
    elapsed = time.perf_counter() - start
    route = scope.get("route")
    template = getattr(route, "path", None) or "unmatched"
    method = scope.get("method", "")
    metrics.request_done(method, template, status, elapsed)
    level = logging.DEBUG if status < 400 and template in QUIET_ROUTES else logging.INFO
    if log.isEnabledFor(level):
        state: Any = scope.get("state") or {}
        principal = state.get("principal") if isinstance(state, dict) else None
        log.log(
            level,
            "request",
            extra={
                "fields": {
                    "method": method,
                    "path": scope.get("path"),
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "user": principal.sub if principal is not None else None,
                }
            },
        )


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps(
        {
            "type": "about:blank",
            "title": "Payload too large",
            "status": 413,
            "detail": f"request body is larger than {limit} bytes",
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg and any ``extra={"fields": {...}}``.

    Written once per request, so kept cheap: orjson, and the timestamp's seconds formatted
    once per second."""

    _second = -1
    _prefix = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        out: dict[str, Any] = {
            "ts": f"{self._prefix}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(out, default=str).decode()
        except TypeError:  # what orjson refuses (an int beyond 64 bits, a non-str key)
            return json.dumps(out, default=str)


class TurnHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes the lines of one event-loop turn together.

    A line logged on a thread running an event loop is formatted at once and written, with
    the others of that turn, by a callback at the end of the turn (or once ``max_lines`` are
    waiting); anywhere else it is written at once, after what waits. One write a turn instead
    of one a request: each write gives up the GIL, and on a busy node the SQLite writer
    thread takes it every time. Measured with wrk on SQLite: logging at info cost a PATCH
    about 13 % of its CPU with a write a line; written a turn at a time, a PATCH took 5 %
    less CPU. ``flush()`` (also at exit, by ``logging.shutdown``, and on SIGINT or SIGTERM
    under :func:`flushing_signals`) writes what waits; only a process killed outright loses
    the lines of its last turn."""

    #: Lines that may wait before they are written anyway.
    max_lines = 256

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        #: The loops with a write of the waiting lines scheduled.
        self._pending: set[asyncio.AbstractEventLoop] = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self.lock:  # type: ignore[union-attr]
            self._lines.append(line)
            if loop is None or len(self._lines) >= self.max_lines:
                self._write()
                return
            if loop in self._pending:
                return
            if len(self._pending) >= 8:  # forget loops that closed with a write scheduled
                self._pending = {p for p in self._pending if not p.is_closed()}
            self._pending.add(loop)
        loop.call_soon(self._turn_ended, loop)

    def _turn_ended(self, loop: asyncio.AbstractEventLoop) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._pending.discard(loop)
            self._write()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def _write(self) -> None:
        # Called holding the lock (an RLock: StreamHandler.flush takes it again).
        lines, self._lines = self._lines, []
        try:
            if lines:
                self.stream.write("\n".join(lines) + self.terminator)
            super().flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": "log write failed"}))


@contextlib.contextmanager
def flushing_signals(
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
) -> Iterator[None]:
    """While it lasts, ``signals`` first write what the root logger's handlers hold.

    uvicorn catches SIGINT and SIGTERM while it serves; once it has shut down it puts back
    the handlers it found and raises the signal again, which ends the process without
    ``atexit`` (``logging.shutdown``): without this the lines of the last loop turns a
    :class:`TurnHandler` holds, "Finished server process" among them, would be lost. Each
    signal then does what it did before (the default: end the process by that signal)."""
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def flush_then(signum: int, frame: FrameType | None) -> None:
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        before = previous.get(signal.Signals(signum))
        if before is signal.SIG_IGN:
            return
        if callable(before):
            before(signum, frame)
            return
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    for sig in signals:
        signal.signal(sig, flush_then)
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before if before is not None else signal.SIG_DFL)


def setup_logging(level: str = "info") -> None:
    handler = TurnHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "aiosqlite", "sqlalchemy.engine", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The line above carries neither the caller's file and line nor thread or process
    # names: not looking them up is most of what a record costs (the logging HOWTO's
    # "Optimization" section).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
