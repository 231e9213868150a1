"""The fast WebSocket engine: an asyncio protocol that uvicorn hands upgraded connections to.

``sessionhub serve`` runs uvicorn with ``ws=uvicorn_ws_protocol(app)``. For every path the
realtime node has a route for (``/connection/websocket``, ``/ws``, ``/stream/{id}``, ...) this
engine talks WebSocket itself, straight on the transport: a publication is framed once and
written to each subscriber with one ``transport.write`` per event-loop turn, no task, no ASGI
message and no await per send. A path with no route is handed, untouched, to uvicorn's own
implementation and reaches the ASGI app as usual (which answers it: 403/404). Under another
ASGI server the same wires are served by the ASGI routes in ``asgi.py``.

Every upgrade gets an answer: a head too large is 431 (a request target too long 414), a
malformed upgrade 400, a peer over its connection limit 429, never silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import sys
from collections.abc import Mapping
from typing import Any, ClassVar, cast

from ...core import codes
from . import wsframe
from .conn import Conn
from .node import RealtimeNode
from .socket import Handshake, Out

log = logging.getLogger("sessionhub.realtime")

#: The longest request head (request line and headers) an upgrade may have.
MAX_HEAD = 16384
#: The longest request target (path and query).
MAX_TARGET = 8192
#: Close codes a peer may send (RFC 6455 7.4): others are a protocol error (1002).
_VALID_CLOSE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def valid_close_code(code: int) -> bool:
    return code in _VALID_CLOSE or 3000 <= code <= 4999


def _default_ws_class() -> type[asyncio.Protocol]:
    from uvicorn.config import WS_PROTOCOLS
    from uvicorn.importer import import_from_string

    name = WS_PROTOCOLS["auto"]
    assert name is not None
    cls = import_from_string(name)
    if cls is None:  # pragma: no cover - neither websockets nor wsproto installed
        raise RuntimeError("uvicorn has no WebSocket implementation available")
    return cast(type[asyncio.Protocol], cls)


class _Sockets:
    """Stands for every established socket of this engine in one uvicorn server's
    ``server_state.connections``: one entry while any is open, instead of one each.

    uvicorn keeps that set only to call ``shutdown()`` on each connection and to wait, when
    it stops, until the set is empty. A set's table costs 64 to 128 bytes per entry at a
    thousand entries (it grows fourfold, and a WebSocket upgrade leaves a deleted slot where
    the HTTP connection was), while the node already holds every connection: the stand-in's
    ``shutdown`` tells each of them to come back (3001) and it leaves the set when the last
    one has gone, so uvicorn still waits for their close handshakes."""

    __slots__ = ("count", "node", "server_state")

    def __init__(self, server_state: Any, node: RealtimeNode) -> None:
        self.server_state = server_state
        self.node = node
        #: Established sockets not yet lost.
        self.count = 0

    def opened(self) -> None:
        self.count += 1
        if self.count == 1:
            self.server_state.connections.add(self)

    def lost(self) -> None:
        self.count -= 1
        if self.count == 0:
            self.server_state.connections.discard(self)

    def shutdown(self) -> None:
        for conn in self.node.connections():
            sink = conn.sink
            if (
                isinstance(sink, RealtimeWebSocketProtocol)
                and sink._server_state is self.server_state
            ):
                sink.shutdown()


@functools.lru_cache(maxsize=8)
def _trusted(allowed: str | tuple[str, ...]) -> tuple[bool, tuple[Any, ...]]:
    """uvicorn's ``forwarded_allow_ips`` as (everyone, the networks it names)."""
    items = allowed.split(",") if isinstance(allowed, str) else allowed
    names = [i.strip() for i in items if i.strip()]
    networks = []
    for name in names:
        with contextlib.suppress(ValueError):  # not an address (uvicorn allows names too)
            networks.append(ipaddress.ip_network(name, strict=False))
    return "*" in names, tuple(networks)


def client_address(peer: str, headers: Mapping[str, str], config: Any) -> str:
    """The address a connection is counted against: the socket's peer, or, behind a proxy
    uvicorn trusts (``proxy_headers`` and ``forwarded_allow_ips``, as for HTTP requests),
    the client that proxy names in ``X-Forwarded-For`` (the nearest address it does not
    trust), so that a load balancer's one address does not exhaust the per-address limit."""
    forwarded = headers.get("x-forwarded-for")
    if not forwarded or not getattr(config, "proxy_headers", False):
        return peer
    allowed = getattr(config, "forwarded_allow_ips", None) or "127.0.0.1,::1"
    everyone, networks = _trusted(allowed if isinstance(allowed, str) else tuple(allowed))

    def trusted(address: str) -> bool:
        if everyone:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in networks)

    if not trusted(peer):
        return peer
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        if not trusted(hop):
            return hop
    return hops[0] if hops else peer


class RealtimeWebSocketProtocol(asyncio.Protocol):
    """uvicorn's ``ws_protocol_class``: serves the node's routes natively and hands any
    other path to uvicorn's default WebSocket protocol."""

    # Slots: one of these lives as long as each socket.
    __slots__ = (
        "_abort_handle",
        "_app_state",
        "_closing",
        "_config",
        "_conn",
        "_deadline",
        "_delegate",
        "_head",
        "_parser",
        "_server_state",
        "_transport",
    )

    #: The ASGI app whose ``state.runtime.realtime`` serves connections.
    app: Any = None
    #: id(uvicorn server state) -> the stand-in for its established sockets (one per
    #: server; ``uvicorn_ws_protocol`` gives each class its own).
    _standins: ClassVar[dict[int, _Sockets]] = {}

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._config = config
        self._server_state = server_state
        self._app_state = app_state
        self._transport: asyncio.Transport | None = None
        self._head = b""
        self._delegate: asyncio.Protocol | None = None
        self._parser: wsframe.FrameParser | None = None
        self._conn: Conn | None = None
        self._closing = False
        self._abort_handle: asyncio.TimerHandle | None = None
        self._deadline: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        node = self._node()
        timeout = node.handshake_timeout if node is not None else 10.0
        # A head that never completes is cut off rather than held open forever.
        self._deadline = asyncio.get_running_loop().call_later(timeout, self._late)

    def data_received(self, data: bytes) -> None:
        if self._delegate is not None:
            cast(Any, self._delegate).data_received(data)
            return
        if self._parser is not None:
            self._frames(data)
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD:
                self._reject(431, "request header fields too large")
            return
        head, rest = self._head[: end + 4], self._head[end + 4 :]
        self._head = b""
        self._handshake(head, rest)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        if self._delegate is not None:
            self._delegate.connection_lost(exc)
            return
        if self._abort_handle is not None:
            self._abort_handle.cancel()
        if self._conn is not None:
            self._conn.lost()
            self._sockets(self._conn.node).lost()

    def eof_received(self) -> bool | None:
        if self._delegate is not None:
            return self._delegate.eof_received()
        return None

    def pause_writing(self) -> None:
        if self._delegate is not None:
            self._delegate.pause_writing()
            return
        conn = self._conn
        if conn is not None and not conn.closed and conn.drop_slow:
            # More than max_queue_bytes unsent: a slow consumer. Disconnect from a fresh
            # loop turn, not from inside the write that noticed (it may be in a fan-out).
            asyncio.get_running_loop().call_soon(conn.drop_if_slow)

    def resume_writing(self) -> None:
        if self._delegate is not None:
            self._delegate.resume_writing()
        elif self._conn is not None and not self._conn.closed and not self._conn.drop_slow:
            self._conn.writable()

    # -- uvicorn ------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """uvicorn is stopping: tell the client to come back (3001)."""
        if self._delegate is not None:
            shutdown = getattr(self._delegate, "shutdown", None)
            if shutdown is not None:
                shutdown()
        elif self._conn is not None and not self._conn.closed:
            self._conn.disconnect(codes.SHUTDOWN)
        elif self._transport is not None:
            self._transport.close()

    # -- Sink ---------------------------------------------------------------------------------

    def write(self, items: list[Out]) -> None:
        if self._closing or self._transport is None:
            return
        if len(items) == 1:
            self._transport.write(items[0].framed)
        else:
            self._transport.write(b"".join([i.framed for i in items]))

    def write_one(self, item: Out) -> None:
        if not self._closing and self._transport is not None:
            self._transport.write(item.framed)

    def buffered(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport is not None else 0

    def ping(self) -> None:
        if not self._closing and self._transport is not None:
            self._transport.write(wsframe.frame(wsframe.OP_PING, b""))

    def close(self, code: int, reason: str) -> None:
        if self._closing or self._transport is None:
            return
        self._closing = True
        transport = self._transport
        transport.write(wsframe.close(code, reason))
        # close() lets the queued bytes drain first; a reader that never drains them is
        # cut off after close_timeout.
        transport.close()
        node = self._node()
        timeout = node.close_timeout if node is not None else 5.0
        self._abort_handle = asyncio.get_running_loop().call_later(timeout, transport.abort)

    def pause_reading(self) -> None:
        if self._transport is not None and not self._closing:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()

    # -- internals ----------------------------------------------------------------------------

    def _sockets(self, node: RealtimeNode) -> _Sockets:
        """The stand-in for this server's established sockets (``_Sockets``)."""
        standins = type(self)._standins
        sockets = standins.get(id(self._server_state))
        if sockets is None or sockets.server_state is not self._server_state:
            sockets = standins[id(self._server_state)] = _Sockets(self._server_state, node)
        return sockets

    def _node(self) -> RealtimeNode | None:
        app = type(self).app
        runtime = getattr(getattr(app, "state", None), "runtime", None)
        node = getattr(runtime, "realtime", None)
        return node if isinstance(node, RealtimeNode) else None

    def _handshake(self, head: bytes, rest: bytes) -> None:
        try:
            request = wsframe.parse_request(head)
        except wsframe.WebSocketError as exc:
            self._reject(400, exc.reason)
            return
        node = self._node()
        found = node.match(request.path) if node is not None else None
        if node is None or found is None:
            self._cancel_deadline()
            self._hand_over(head + rest)
            return
        if len(request.target) > MAX_TARGET:
            self._reject(414, f"request target longer than {MAX_TARGET} bytes")
            return
        if len(head) > MAX_HEAD:
            # A head handed over whole (uvicorn parsed it first) is checked here too.
            self._reject(431, "request header fields too large")
            return
        try:
            response = wsframe.handshake_response(request)
        except wsframe.WebSocketError as exc:
            self._reject(400, exc.reason)
            return
        assert self._transport is not None
        peer_info = self._transport.get_extra_info("peername")
        peer = str(peer_info[0]) if isinstance(peer_info, tuple) and peer_info else ""
        # Interned: the address is a key of the node's per-address count, and the many
        # connections from one address (a proxy, a NAT) share one string.
        peer = sys.intern(client_address(peer, request.headers, self._config))
        if not node.admit(peer):
            self._reject(429, "too many connections from this address", retry_after=5)
            return
        route, params = found
        hs = Handshake.from_target(request.target, request.headers, peer, params or None)
        self._cancel_deadline()
        self._transport.write(response)
        conn = route.factory(node, self, hs)
        self._conn = conn
        # Counted from here: connection_lost uncounts whatever has a conn.
        self._sockets(node).opened()
        # The shared parser until a frame arrives in parts (``_frames``).
        self._parser = wsframe.shared(conn.max_message)
        if conn.drop_slow:
            # A lone publication is written straight to the transport (node fan-out); the
            # transport tells us through pause_writing when a reader falls too far behind.
            conn.writer = self._transport
            self._transport.set_write_buffer_limits(high=node.max_queue_bytes)
        else:
            # The wire keeps its own newest-only slot: it only needs to know when the
            # socket is full and when it drained.
            self._transport.set_write_buffer_limits(
                high=conn.write_limit, low=conn.write_limit // 4
            )
        node.register(conn)
        conn.opened()
        if rest and not conn.closed:
            self._frames(rest)

    def _hand_over(self, head: bytes) -> None:
        cls = _default_ws_class()
        delegate = cls(  # type: ignore[call-arg]
            config=self._config, server_state=self._server_state, app_state=self._app_state
        )
        self._delegate = delegate
        assert self._transport is not None
        delegate.connection_made(self._transport)
        cast(Any, delegate).data_received(head)

    def _reject(self, status: int, reason: str, *, retry_after: int | None = None) -> None:
        self._cancel_deadline()
        if self._transport is not None:
            self._transport.write(wsframe.reject_response(status, reason, retry_after=retry_after))
            self._transport.close()

    def _late(self) -> None:
        self._deadline = None
        if self._parser is None and self._delegate is None:
            self._reject(408, "the upgrade request did not arrive in time")

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _frames(self, data: bytes) -> None:
        assert self._parser is not None and self._conn is not None
        if self._closing:
            return
        parser = self._parser
        try:
            messages = parser.feed(data)
        except wsframe.WebSocketError as exc:
            parser.reset()  # it may be the shared one: the next connection starts clean
            self._protocol_close(exc.code, exc.reason)
            return
        if parser.idle:
            if not parser.is_shared:
                self._parser = wsframe.shared(parser.max_size)  # back to the shared one
        elif parser.is_shared:
            # Part of a frame or of a fragmented message is held: this connection takes it
            # into a parser of its own.
            self._parser = parser.detach()
        conn = self._conn
        conn.heard = True
        for op, payload in messages:
            if op == wsframe.OP_TEXT or op == wsframe.OP_BINARY:
                if op == wsframe.OP_TEXT and not _utf8(payload):
                    # RFC 6455 8.1: a text message that is not UTF-8 fails the connection.
                    self._protocol_close(wsframe.CLOSE_INVALID_DATA, "text is not UTF-8")
                    return
                conn.received(payload, op == wsframe.OP_BINARY)
            elif op == wsframe.OP_PING:
                assert self._transport is not None
                self._transport.write(wsframe.frame(wsframe.OP_PONG, payload))
            elif op == wsframe.OP_CLOSE:
                code, _ = wsframe.parse_close(payload)
                conn.lost()
                if not payload:
                    code = wsframe.CLOSE_NORMAL  # no code given: a normal closure
                elif len(payload) == 1 or not valid_close_code(code):
                    code = wsframe.CLOSE_PROTOCOL_ERROR  # never echo a code that is not one
                elif not _utf8(payload[2:]):
                    code = wsframe.CLOSE_INVALID_DATA  # a close reason is UTF-8 (RFC 6455 7.1.6)
                self._protocol_close(code, "")
                return
            if self._closing:
                return

    def _protocol_close(self, code: int, reason: str) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.lost()
        self.close(code, reason)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def uvicorn_ws_protocol(app: Any) -> type[asyncio.Protocol]:
    """The ``ws`` argument for ``uvicorn.Config`` that serves ``app``'s realtime routes
    with this engine: ``uvicorn.Config(app, ws=uvicorn_ws_protocol(app), ...)``."""
    # Empty slots: without them the subclass would give every socket a ``__dict__``.
    attrs = {"app": app, "__slots__": (), "_standins": {}}
    return type("SessionhubWebSocketProtocol", (RealtimeWebSocketProtocol,), attrs)
