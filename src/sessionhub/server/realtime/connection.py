"""One realtime client connection: the Centrifugo protocol's commands, independent of the
WebSocket engine that carries them.

An engine (the fast asyncio one in ``engine.py`` or the ASGI one in ``asgi.py``) hands each
received text message to :meth:`Connection.feed` and implements :class:`Sink` to write
:class:`Out` messages. Everything the connection sends goes through one ordered queue, which
the service flushes once per event-loop turn: replies and pushes that pile up meanwhile leave
in one write (and consecutive replies in one frame), and a queue that cannot drain marks a
slow consumer.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from ... import __version__
from ...core import centrifugo as proto
from ...core import codes
from ...core.centrifugo import Command, CommandError, ProtocolError
from ...core.codes import Code
from ...core.errors import Unauthenticated
from ...core.principal import Principal
from ...core.streams import ClientInfo, Publication, StreamPosition
from ...core.topics import ends_topic
from . import wsframe

if TYPE_CHECKING:
    from .service import RealtimeService

log = logging.getLogger("sessionhub.realtime")


class Out:
    """One outgoing JSON message, with its WebSocket frame built once.

    ``shared`` messages (publications, pings, join/leave) are the very same object in every
    subscriber's queue. Replies belong to one connection: those queued in one loop turn are
    collected in one ``Out`` (``parts``) and sealed into one frame, newline-separated, when
    the queue is flushed.
    """

    __slots__ = ("framed", "parts", "payload", "shared")

    def __init__(self, payload: bytes, *, shared: bool = True) -> None:
        self.payload = payload
        self.framed = wsframe.text(payload)
        self.shared = shared
        self.parts: list[bytes] | None = None

    @classmethod
    def batch(cls, first: bytes) -> Out:
        out = cls.__new__(cls)
        out.payload = b""
        out.framed = b""
        out.shared = False
        out.parts = [first]
        return out

    def seal(self) -> None:
        if self.parts is not None:
            self.payload = b"\n".join(self.parts)
            self.framed = wsframe.text(self.payload)
            self.parts = None


class Sink(Protocol):
    """What a WebSocket engine offers a connection."""

    def write(self, items: list[Out]) -> None:
        """Send ``items`` in order (one write where the engine can)."""

    def write_one(self, item: Out) -> None:
        """Send one item (the latency path of a lone publication)."""

    def buffered(self) -> int:
        """Bytes accepted by ``write`` and not yet handed to the network."""

    def close(self, code: int, reason: str) -> None:
        """Send a close frame after what is queued, then close (abort if it cannot drain)."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


@dataclass(slots=True)
class Subscription:
    topic: str
    join_leave: bool = False
    active: bool = False
    #: Publications that arrived while the subscribe command was being answered.
    backlog: list[Publication] = field(default_factory=list)
    offset: int = 0
    epoch: str = ""


#: Frames waiting in one connection's inbox before it stops reading from the socket.
INBOX_LIMIT = 64


class Connection:
    """State and command handling of one client connection."""

    def __init__(
        self, service: RealtimeService, sink: Sink, *, transport: str = "websocket"
    ) -> None:
        self.service = service
        self.sink = sink
        self.transport = transport
        self.client = str(uuid.uuid4())
        self.principal: Principal | None = None
        self.queue: list[Out] = []
        self.subs: dict[str, Subscription] = {}
        self.opened_at = time.monotonic()
        self.expires_at: float | None = None
        self.awaiting_pong = False
        self.closed = False
        self._inbox: deque[bytes] = deque()
        self._task: asyncio.Task[None] | None = None
        self._paused = False
        self._batches: list[Out] = []
        #: The engine's raw writer (``transport.write``) for the latency path of a lone
        #: publication, or None. An engine that sets it must also report a slow reader
        #: itself (the fast engine does so from ``pause_writing``) and never let it write
        #: once the connection is closed (a closed connection is detached from its topics).
        self.writer: Callable[[bytes], object] | None = None

    # -- input --------------------------------------------------------------------------------

    def feed(self, payload: bytes) -> None:
        """A text message arrived (one or more newline-separated commands)."""
        if self.closed:
            return
        self.awaiting_pong = False
        if payload == proto.PING:  # a pong: nothing else to do
            return
        self._inbox.append(payload)
        if len(self._inbox) >= INBOX_LIMIT and not self._paused:
            self._paused = True
            self.sink.pause_reading()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            done = 0
            while self._inbox and not self.closed:
                payload = self._inbox.popleft()
                if self._paused and len(self._inbox) < INBOX_LIMIT // 2:
                    self._paused = False
                    self.sink.resume_reading()
                try:
                    commands = proto.parse_frame(payload)
                except ProtocolError as exc:
                    self.disconnect(exc.code, exc.detail)
                    return
                for cmd in commands:
                    if self.closed:
                        return
                    await self._handle(cmd)
                done += 1
                if done % 16 == 0:
                    # Let the loop flush and serve others during a burst of commands.
                    await asyncio.sleep(0)
        finally:
            self._task = None
            if self._inbox and not self.closed:
                self._task = asyncio.get_running_loop().create_task(self._run())

    async def _handle(self, cmd: Command) -> None:
        if cmd.method == "":
            return
        if self.principal is None and cmd.method != "connect":
            self.disconnect(codes.BAD_REQUEST_DISCONNECT, "connect first")
            return
        handler = _HANDLERS.get(cmd.method)
        try:
            if handler is None:
                if cmd.method == "send":
                    return  # asynchronous messages have no receiver here
                raise CommandError(codes.METHOD_NOT_FOUND)
            result = await handler(self, cmd)
        except CommandError as exc:
            self.reply(proto.error_reply(cmd.id, exc.code, exc.detail))
            return
        except ProtocolError as exc:
            self.disconnect(exc.code, exc.detail)
            return
        except Exception:
            log.exception("realtime command %s failed", cmd.method)
            self.reply(proto.error_reply(cmd.id, codes.INTERNAL))
            return
        if result is not None:
            self.reply(proto.reply(cmd.id, cmd.method, result))

    # -- output -------------------------------------------------------------------------------

    def enqueue(self, item: Out) -> None:
        if self.closed:
            return
        if not self.queue:
            self.service.mark_dirty(self)
        self.queue.append(item)

    def reply(self, payload: bytes) -> None:
        """Queue a reply; replies queued in one loop turn leave in one frame (batching)."""
        if self.closed:
            return
        q = self.queue
        if q:
            last = q[-1]
            if last.parts is not None:
                last.parts.append(payload)
                return
        batch = Out.batch(payload)
        self._batches.append(batch)
        self.enqueue(batch)

    def flush(self) -> None:
        """Write what is queued (called by the service once per loop turn)."""
        if self.closed or not self.queue:
            return
        items, self.queue = self.queue, []
        if self._batches:
            for batch in self._batches:
                batch.seal()
            self._batches = []
        try:
            self.sink.write(items)
        except Exception:
            log.debug("write failed", exc_info=True)
            self.disconnect(codes.WRITE_ERROR)
            return
        self.drop_if_slow()

    def drop_if_slow(self) -> None:
        """Disconnect with 3008 (and count it) if more than ``max_queue_bytes`` is unsent."""
        if not self.closed and self.sink.buffered() > self.service.max_queue_bytes:
            self.service.stats_slow += 1
            self.disconnect(codes.SLOW)

    def send_now(self, item: Out) -> bool:
        """Write ``item`` now, unless something is queued (then after it, in order).
        Whether the connection is now too far behind (the caller disconnects it)."""
        if self.closed:
            return False
        if self.queue:
            self.queue.append(item)
            return False
        self.sink.write_one(item)
        return self.sink.buffered() > self.service.max_queue_bytes

    def disconnect(self, code: Code, reason: str = "") -> None:
        """End the connection with a disconnect code: queued messages (unless it is too slow
        to take them), a disconnect push and a close frame with the same code."""
        if self.closed:
            return
        if code is not codes.SLOW and self.queue:
            self.flush()
            if self.closed:
                return
        self.closed = True
        self.queue = []
        self._batches = []
        try:
            self.sink.write([Out(proto.disconnect_push(code, reason))])
            self.sink.close(code.code, reason or code.message)
        except Exception:
            log.debug("close failed", exc_info=True)
        self._cleanup()

    def lost(self) -> None:
        """The transport is gone (the peer closed, the network failed)."""
        if self.closed:
            self._cleanup()
            return
        self.closed = True
        self.queue = []
        self._cleanup()

    def _cleanup(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        self._inbox.clear()
        self.service.unregister(self)

    # -- helpers ------------------------------------------------------------------------------

    @property
    def user(self) -> str:
        return self.principal.sub if self.principal else ""

    def info(self) -> ClientInfo:
        return ClientInfo(self.client, self.user)

    def activate(self, sub: Subscription, position: StreamPosition, *, ended: bool = False) -> None:
        """Start delivering live publications to ``sub``, after its subscribe reply is
        queued: the backlog that arrived meanwhile goes first, without repeats. ``ended``:
        the reply already carried the topic's last publication (a deleted session's)."""
        sub.active = True
        sub.offset, sub.epoch = position.offset, position.epoch
        backlog, sub.backlog = sub.backlog, []
        for pub in backlog:
            if pub.offset <= sub.offset and pub.epoch == sub.epoch:
                continue
            if pub.epoch != sub.epoch or pub.offset != sub.offset + 1:
                # The stream moved under us (a new epoch, a gap): let the client resubscribe
                # and recover instead of carrying on with a hole.
                self.service.detach(self, sub.topic)
                self.enqueue(Out(proto.unsubscribe_push(sub.topic, codes.UNSUBSCRIBE_INSUFFICIENT)))
                return
            sub.offset = pub.offset
            self.enqueue(Out(proto.pub_push(pub.topic, pub.data, pub.offset)))
            ended = ended or ends_topic(pub.topic, pub.data)
        if ended:
            # The session was deleted (its last publication recovered, or arriving while the
            # subscribe was answered): end the subscription as live subscribers' ends.
            self.service.detach(self, sub.topic)
            self.enqueue(Out(proto.unsubscribe_push(sub.topic, codes.SESSION_DELETED)))
            return
        self.service.mark_active(self, sub)


# -- command handlers ---------------------------------------------------------------------------


def _authenticate(conn: Connection, token: str) -> tuple[Principal, float | None]:
    """The token's principal and expiry (None: it does not expire)."""
    if not token:
        raise CommandError(codes.UNAUTHORIZED, "a token is required")
    try:
        verified: tuple[Principal, float | None] = conn.service.auth.authenticate_with_expiry(
            f"Bearer {token}"
        )
        return verified
    except Unauthenticated as exc:
        if "expired" in exc.detail:
            raise CommandError(codes.TOKEN_EXPIRED) from None
        raise ProtocolError(codes.INVALID_TOKEN) from None


async def _connect(conn: Connection, cmd: Command) -> dict[str, Any]:
    if conn.principal is not None:
        raise ProtocolError(codes.BAD_REQUEST_DISCONNECT, "already connected")
    token = proto.get_str(cmd.params, "token")
    conn.principal, conn.expires_at = _authenticate(conn, token)
    conn.service.connected(conn)
    expires_in = None if conn.expires_at is None else conn.expires_at - time.time()
    return proto.connect_result(
        conn.client, __version__, ping=conn.service.ping_interval, expires_in=expires_in
    )


async def _refresh(conn: Connection, cmd: Command) -> dict[str, Any]:
    token = proto.get_str(cmd.params, "token", required=True)
    principal, expires_at = _authenticate(conn, token)
    if principal.sub != conn.user:
        raise ProtocolError(codes.INVALID_TOKEN, "a refresh token must be for the same user")
    conn.principal, conn.expires_at = principal, expires_at
    result: dict[str, Any] = {"client": conn.client, "version": __version__}
    if conn.expires_at is not None:
        result["expires"] = True
        result["ttl"] = max(1, int(conn.expires_at - time.time()))
    return result


async def _require_read(conn: Connection, topic: str) -> None:
    assert conn.principal is not None
    if not await conn.service.may_read(conn.principal, topic):
        raise CommandError(codes.PERMISSION_DENIED)


async def _subscribe(conn: Connection, cmd: Command) -> None:
    service = conn.service
    p = cmd.params
    topic = proto.get_channel(p)
    if topic in conn.subs:
        raise CommandError(codes.ALREADY_SUBSCRIBED)
    if len(conn.subs) >= service.max_subscriptions:
        raise CommandError(codes.LIMIT_EXCEEDED, "too many subscriptions on one connection")
    await _require_read(conn, topic)
    if conn.closed or topic in conn.subs:
        return
    recover = proto.get_bool(p, "recover")
    offset = proto.get_int(p, "offset")
    epoch = proto.get_str(p, "epoch", max_len=64)
    flag = proto.get_int(p, "flag")
    sub = Subscription(topic, join_leave=proto.get_bool(p, "join_leave"))
    service.attach(conn, sub)
    ended = False
    try:
        if recover:
            pubs, pos, complete = await service.broker.history(
                topic, since=StreamPosition(offset, epoch), limit=service.recover_limit
            )
            if not complete and flag & proto.FLAG_REJECT_UNRECOVERED:
                raise CommandError(codes.UNRECOVERABLE_POSITION)
            if complete:
                service.stats_recovered += 1
                ended = bool(pubs) and ends_topic(topic, pubs[-1].data)
                top = pubs[-1].offset if pubs else offset
                result = proto.subscribe_result(
                    offset=top,
                    epoch=pos.epoch,
                    was_recovering=True,
                    recovered=True,
                    publications=[proto.publication(x.data, x.offset) for x in pubs],
                )
                position = StreamPosition(top, pos.epoch)
            else:
                service.stats_unrecovered += 1
                result = proto.subscribe_result(
                    offset=pos.offset, epoch=pos.epoch, was_recovering=True, recovered=False
                )
                position = pos
        else:
            position = await service.broker.position(topic)
            result = proto.subscribe_result(offset=position.offset, epoch=position.epoch)
    except BaseException:
        service.detach(conn, topic)
        raise
    if conn.closed or conn.subs.get(topic) is not sub:
        return
    conn.reply(proto.reply(cmd.id, "subscribe", result))
    conn.activate(sub, position, ended=ended)
    if conn.subs.get(topic) is sub:
        await service.presence.join(topic, conn.info(), ttl=service.lease_ttl)
    return None


async def _unsubscribe(conn: Connection, cmd: Command) -> dict[str, Any]:
    topic = proto.get_channel(cmd.params)
    if topic in conn.subs:
        conn.service.detach(conn, topic)
        await conn.service.presence.leave(topic, conn.client)
    return {}


async def _publish(conn: Connection, cmd: Command) -> dict[str, Any]:
    topic = proto.get_channel(cmd.params)
    assert conn.principal is not None
    if not conn.service.may_publish(conn.principal, topic):
        raise CommandError(codes.PERMISSION_DENIED)
    if "data" not in cmd.params:
        raise CommandError(codes.BAD_REQUEST, "data is required")
    await conn.service.broker.publish([topic], orjson.dumps(cmd.params["data"]))
    return {}


async def _presence(conn: Connection, cmd: Command) -> dict[str, Any]:
    topic = proto.get_channel(cmd.params)
    await _require_read(conn, topic)
    clients = await conn.service.presence.presence(topic)
    return {
        "presence": {
            c: proto.client_info(i.client, i.user, i.conn_info) for c, i in clients.items()
        }
    }


async def _presence_stats(conn: Connection, cmd: Command) -> dict[str, Any]:
    topic = proto.get_channel(cmd.params)
    await _require_read(conn, topic)
    clients, users = await conn.service.presence.stats(topic)
    return {"num_clients": clients, "num_users": users}


async def _history(conn: Connection, cmd: Command) -> dict[str, Any]:
    p = cmd.params
    topic = proto.get_channel(p)
    await _require_read(conn, topic)
    limit = proto.get_int(p, "limit")
    most = conn.service.recover_limit
    limit = most if limit < 0 else min(limit, most)
    reverse = proto.get_bool(p, "reverse")
    since_raw = p.get("since")
    broker = conn.service.broker
    if isinstance(since_raw, dict):
        since = StreamPosition(
            proto.get_int(since_raw, "offset"), proto.get_str(since_raw, "epoch", max_len=64)
        )
        pubs, pos, complete = await broker.history(topic, since=since, limit=max(limit, 1))
        if not complete and len(pubs) < max(limit, 1):
            raise CommandError(codes.UNRECOVERABLE_POSITION)
        pubs = pubs[:limit]
    elif since_raw is not None:
        raise CommandError(codes.BAD_REQUEST, "since must be an object")
    else:
        pubs, pos, _ = await broker.history(topic, limit=limit)
    if reverse:
        pubs = pubs[::-1]
    return {
        "publications": [proto.publication(x.data, x.offset) for x in pubs],
        "epoch": pos.epoch,
        "offset": pos.offset,
    }


async def _ping(_conn: Connection, _cmd: Command) -> dict[str, Any]:
    return {}


async def _sub_refresh(_conn: Connection, _cmd: Command) -> dict[str, Any]:
    # Subscriptions here need no token of their own, so there is nothing to refresh.
    return {}


_HANDLERS: dict[str, Callable[[Connection, Command], Any]] = {
    "connect": _connect,
    "refresh": _refresh,
    "subscribe": _subscribe,
    "unsubscribe": _unsubscribe,
    "publish": _publish,
    "presence": _presence,
    "presence_stats": _presence_stats,
    "history": _history,
    "ping": _ping,
    "sub_refresh": _sub_refresh,
}
