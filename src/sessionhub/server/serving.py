"""The uvicorn configuration ``sessionhub serve`` runs with (tests and benchmarks use it too,
so they measure and check what users run).

uvicorn's HTTP protocol bounds neither the size of a request head nor the time it may take
to arrive: a client that dribbles a head byte by byte (slowloris), or sends a megabyte of
headers, holds a connection (and memory) for as long as it likes. :class:`BoundedHttp` adds
both bounds and answers instead of hanging: a request target over ``MAX_TARGET`` is 414, a
head over ``MAX_HEAD`` is 431, a head not complete ``head_timeout`` seconds after its first
byte is 408; a connection that never sends a byte is closed after the keep-alive timeout,
like an idle keep-alive connection. WebSocket upgrades pass through the same checks before
the realtime engine (``realtime/native.py``) sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import Any

import uvicorn

from ..settings import Settings
from .httplane import HttpLane, complete, take
from .realtime import uvicorn_ws_protocol

#: The longest request head (request line and headers), bytes: the WebSocket engine's too.
MAX_HEAD = 16384
#: The longest request target (path and query), bytes.
MAX_TARGET = 8192
#: Seconds a request head may take from its first byte to its blank line.
HEAD_TIMEOUT = 10.0

_PHRASES = {
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
}


def _refusal(status: int, reason: str) -> bytes:
    problem = {"type": "about:blank", "title": _PHRASES[status], "status": status}
    body = json.dumps({**problem, "detail": reason}).encode()
    return (
        f"HTTP/1.1 {status} {_PHRASES[status]}\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


def _is_uvloop(transport: asyncio.BaseTransport) -> bool:
    return type(transport).__module__.startswith("uvloop")


def _nodelay(transport: asyncio.BaseTransport) -> None:
    """Disable Nagle's algorithm. asyncio does so only for sockets whose ``proto`` is
    ``IPPROTO_TCP``, and a listening socket made as ``socket(AF_INET, SOCK_STREAM)`` (uvicorn's,
    a test harness's) has proto 0: then a response written in two parts on a kept-alive
    connection waits for the client's delayed ACK, 40 ms per request. uvloop sets it itself,
    and asking a uvloop transport for its socket is not free (see ``_addresses``)."""
    if _is_uvloop(transport):
        return
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):  # a socket that is already gone
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _addresses(
    transport: asyncio.BaseTransport,
) -> tuple[tuple[str, int | None] | None, tuple[str, int] | None]:
    """The ASGI scope's ``server`` and ``client`` for a connection, as uvicorn's
    ``get_local_addr``/``get_remote_addr`` give them, read through the transport's
    ``sockname``/``peername``. uvicorn asks for the transport's ``socket`` instead: on uvloop
    that makes a pseudo-socket which the transport keeps, and which keeps the address tuples
    it returned, for as long as the connection lives (364 bytes per connection, measured by
    ``bench/conn_heap.py``), although the HTTP protocol that asked is gone after a WebSocket
    upgrade. ``peername`` on uvloop is read from the kernel each time and kept by nobody."""
    local = transport.get_extra_info("sockname")
    server: tuple[str, int | None] | None = None
    if isinstance(local, (list, tuple)) and len(local) >= 2:
        server = (str(local[0]), int(local[1]))
    elif isinstance(local, str) and local:
        server = (local, None)  # a Unix socket: its path
    peer = transport.get_extra_info("peername")
    client = (
        (str(peer[0]), int(peer[1])) if isinstance(peer, (list, tuple)) and len(peer) >= 2 else None
    )
    return server, client


def bounded_http_protocol(
    head_timeout: float = HEAD_TIMEOUT, lane: HttpLane | None = None
) -> type[asyncio.Protocol] | str:
    """uvicorn's httptools protocol with the head bounds above (``"auto"`` without httptools:
    then h11's own 16 KiB limit applies, without a deadline), answering the hot REST routes
    through ``lane`` before ASGI (``httplane.py``)."""
    try:
        from uvicorn.protocols.http.flow_control import FlowControl
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
        return "auto"

    class BoundedHttp(HttpToolsProtocol):
        """One HTTP connection whose request heads are bounded in size and time."""

        #: Seconds a head may take from its first byte to its blank line.
        deadline = head_timeout

        # Per-connection state: class defaults, set on the instance when it changes. Set
        # in an __init__ of ours, these four would take uvicorn's instance past CPython's
        # 30 shared dict keys and give every HTTP connection a dict of its own (1.3 KB).
        _head_bytes = 0
        _in_head = False
        _refused = False
        _head_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            # uvicorn's own connection_made but for where the addresses come from
            # (``_addresses``); tests/test_serving_addresses.py holds the two to the same
            # state, so an uvicorn that sets more here fails there, not in production.
            self.connections.add(self)
            self.transport = transport
            self.flow = FlowControl(transport)
            self.server, self.client = _addresses(transport)
            self.scheme = "https" if transport.get_extra_info("sslcontext") else "http"
            _nodelay(transport)
            # A connection that never sends a byte is an idle keep-alive connection.
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            super().data_received(data)
            if self._refused or not self._in_head:
                return
            # Still inside an incomplete head: everything it has sent so far counts, and
            # from now on it has a deadline (armed only here: most heads arrive whole).
            self._head_bytes += len(data)
            if self._head_deadline is None:
                self._head_deadline = self.loop.call_later(self.deadline, self._head_late)
            if len(self.url or b"") > MAX_TARGET:
                self._refuse(414, f"the request target is longer than {MAX_TARGET} bytes")
            elif self._head_bytes > MAX_HEAD:
                self._refuse(431, f"the request head is larger than {MAX_HEAD} bytes")

        def on_message_begin(self) -> None:
            # A request has begun: the connection is not idle. (uvicorn cancels this timer
            # when data arrives; a request answered inside its own callback, as the HTTP
            # lane answers a heartbeat, re-arms it before the next pipelined one is read.)
            self._unset_keepalive_if_required()
            super().on_message_begin()
            self._in_head = True
            self._head_bytes = 0
            self._cancel_head_deadline()

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._cancel_head_deadline()
            size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            if len(self.url) > MAX_TARGET:
                self._refuse(414, f"the request target is longer than {MAX_TARGET} bytes")
            elif size > MAX_HEAD:
                self._refuse(431, f"the request head is larger than {MAX_HEAD} bytes")
            elif lane is None or not take(self, lane):
                super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if not self._refused:
                super().on_message_complete()
                if lane is not None:
                    complete(self)

        def handle_websocket_upgrade(self) -> None:
            self._cancel_head_deadline()
            if not self._refused:  # the realtime engine keeps its own handshake deadline
                super().handle_websocket_upgrade()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_deadline()
            super().connection_lost(exc)

        def _head_late(self) -> None:
            self._head_deadline = None
            if self._in_head and not self._refused:
                self._refuse(408, f"the request head did not arrive within {head_timeout:g} s")

        def _cancel_head_deadline(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _refuse(self, status: int, reason: str) -> None:
            self._refused = True
            self._in_head = False
            self._cancel_head_deadline()
            self._unset_keepalive_if_required()
            if not self.transport.is_closing():
                self.transport.write(_refusal(status, reason))
                self.transport.close()

    return BoundedHttp


def _http_lane(app: Any) -> HttpLane | None:
    """The app's HTTP lane (``create_app`` makes one), None for another ASGI app."""
    lane = getattr(getattr(app, "state", None), "http_lane", None)
    return lane if isinstance(lane, HttpLane) else None


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """uvicorn settings for ``app``: sessionhub's own WebSocket engine on every realtime
    path, request heads bounded in size and time (``BoundedHttp``), our JSON logging instead
    of uvicorn's, no uvicorn pings (the realtime protocol has its own), and an HTTP
    keep-alive longer than clients' own. The head deadline is ``Settings.http_head_timeout``
    (``SESSIONHUB_HTTP_HEAD_TIMEOUT``); ``extra["http_head_timeout"]`` still wins (tests)."""
    head_timeout = float(settings.extra.get("http_head_timeout", settings.http_head_timeout))
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "ws_ping_interval": None,
        "timeout_keep_alive": max(1, round(settings.http_keep_alive)),
        "lifespan": "on",
        # Open streams (SSE, sockets) must not hold a Ctrl-C up: after this long uvicorn
        # stops waiting for them; clients resume from their last position.
        "timeout_graceful_shutdown": 3,
        "http": bounded_http_protocol(head_timeout, _http_lane(app)),
        # Every realtime path on sessionhub's fast WebSocket engine; other paths unchanged.
        "ws": uvicorn_ws_protocol(app),
    }
    if "ws" in overrides and "ws_ping_interval" not in overrides:
        # Another WebSocket implementation serves the realtime paths (through the ASGI
        # routes, which cannot ping): let it ping, and drop peers that stop answering.
        options["ws_ping_interval"] = settings.ping_interval
        options["ws_ping_timeout"] = settings.ping_interval
    options.update(overrides)
    return uvicorn.Config(app, **options)
