"""The Centrifugo client protocol (JSON) on the realtime engine: ``/connection/websocket``.

The protocol's decisions are made by :class:`sessionhub.core.connection.ClientState`, a
sans-I/O state machine; this module is the pump that feeds it the client's messages and
answers its requests with the hub (tokens, permissions, positions, history, presence) and
the node's registry (attach, live, detach). Commands of one connection run one at a time,
in order, in a task of their own; a burst of them pauses reading from the socket rather
than piling up.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections import deque
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from ... import __version__
from ...core import centrifugo as proto
from ...core import codes
from ...core import connection as machine
from ...core.centrifugo import ProtocolError
from ...core.errors import NotFound
from ...core.principal import Principal
from ...core.streams import PresenceEvent, Publication
from ...core.topics import parse, static_permission
from .conn import Conn
from .node import RealtimeNode
from .socket import Handshake, Out, Sink

log = logging.getLogger("sessionhub.realtime")

PATH = "/connection/websocket"
#: Frames waiting in one connection's inbox before it stops reading from the socket.
INBOX_LIMIT = 64


def encode_publication(pub: Publication) -> Out:
    """The push every Centrifugo subscriber of ``pub.topic`` receives (built once)."""
    return Out(proto.pub_push(pub.topic, pub.data, pub.offset))


def encode_presence(event: PresenceEvent) -> Out:
    info = proto.client_info(event.info.client, event.info.user, event.info.conn_info)
    push = proto.join_push if event.joined else proto.leave_push
    return Out(push(event.topic, info))


#: How many topics ``Centrifugo.may_publish`` remembers the answer for.
_PUBLISHABLE_MAX = 4096


@dataclass(frozen=True, slots=True)
class CentrifugoConfig:
    """The protocol's limits on this node."""

    max_subscriptions: int = 128
    recover_limit: int = 1000
    #: Topic patterns (fnmatch) that connected admins may publish to; none by default.
    publish_topics: tuple[str, ...] = ()


class Centrifugo:
    """The Centrifugo wire of one node: its configuration and permission checks."""

    def __init__(self, node: RealtimeNode, config: CentrifugoConfig) -> None:
        self.node = node
        self.config = config
        self.limits = machine.Limits(
            version=__version__,
            ping_interval=node.ping_interval,
            max_subscriptions=config.max_subscriptions,
            recover_limit=config.recover_limit,
        )
        #: The server's ping, the same bytes for every connection.
        self.ping = Out(proto.PING)
        #: Topics checked against ``publish_topics`` (a publisher names the same few over
        #: and over; the patterns never change), up to ``_PUBLISHABLE_MAX`` of them.
        self._publishable: dict[str, bool] = {}

    def open(self, node: RealtimeNode, sink: Sink, handshake: Handshake) -> Conn:
        return CentrifugoConn(self, node, sink, handshake)

    async def may_read(self, principal: Principal, topic: str) -> bool:
        """Whether ``principal`` may follow ``topic`` (subscribe, history, presence)."""
        return await may_read(self.node, principal, topic)

    def may_publish(self, principal: Principal, topic: str) -> bool:
        """Clients publish only where configured (no topic by default), and only admins:
        session events come from the hub, never from a client."""
        if not principal.is_admin:
            return False
        known = self._publishable.get(topic)
        if known is None:
            known = any(fnmatch.fnmatchcase(topic, p) for p in self.config.publish_topics)
            if len(self._publishable) >= _PUBLISHABLE_MAX:
                self._publishable.clear()  # a client naming ever new topics: start over
            self._publishable[topic] = known
        return known

    def unsubscribe(
        self, client: str, topic: str, code: codes.Code = codes.UNSUBSCRIBE_SERVER
    ) -> bool:
        """End one client's subscription from the server side (code 2000 by default)."""
        conn = self.node.clients.get(client)
        if not isinstance(conn, CentrifugoConn) or topic not in conn.state.subs:
            return False
        conn.end_subscription(topic, code)
        return True


async def may_read(node: RealtimeNode, principal: Principal, topic: str) -> bool:
    """Whether ``principal`` may follow ``topic``: the topic's own rule, or for
    ``session:<id>`` whether the principal may read that session."""
    allowed = static_permission(principal, topic)
    if allowed is not None:
        return allowed
    _, session_id = parse(topic)
    if not session_id:
        return False
    try:
        await node.hub.get(principal, session_id)
    except NotFound:
        return False
    return True


class CentrifugoConn(Conn):
    """One Centrifugo client: the state machine and the pump around it."""

    wire = "centrifugo"
    __slots__ = ("_inbox", "_paused", "_task", "proto", "state")

    def __init__(self, wire: Centrifugo, node: RealtimeNode, sink: Sink, hs: Handshake) -> None:
        super().__init__(node, sink, hs)
        self.proto = wire
        self.state = machine.ClientState(self.client, wire.limits, opened_at=self.opened_at)
        #: Messages waiting for the command task; made when one arrives and dropped when
        #: the task has worked through them (an idle connection does not keep a deque:
        #: 760 bytes each).
        self._inbox: deque[bytes] | None = None
        self._task: asyncio.Task[None] | None = None
        self._paused = False

    @property
    def principal(self) -> Principal | None:
        return self.state.principal

    @property
    def user(self) -> str:
        return self.state.user

    # -- input --------------------------------------------------------------------------------

    def received(self, payload: bytes, binary: bool) -> None:
        if self.closed:
            return
        self.state.awaiting_pong = False
        if payload == proto.PING:  # a pong: nothing else to do
            return
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append(payload)
        if len(inbox) >= INBOX_LIMIT and not self._paused:
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
                    commands = self.state.receive(payload)
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
            elif not self._inbox:
                self._inbox = None

    async def _handle(self, cmd: proto.Command) -> None:
        gen = self.state.handle(cmd, time.time())
        answer: Any = None
        error: BaseException | None = None
        try:
            while True:
                request = gen.throw(error) if error is not None else gen.send(answer)
                answer, error = None, None
                try:
                    if isinstance(request, machine.SYNC_REQUESTS):
                        answer = self._sync(request)
                    else:
                        answer = await self._perform(request)
                except Exception as exc:  # handed to the machine, which decides
                    error = exc
        except StopIteration as stop:
            self._emit(stop.value)
        except Exception:
            log.exception("realtime command %s failed", cmd.method)
            self.reply(proto.error_reply(cmd.id, codes.INTERNAL))

    def _emit(self, outputs: Iterable[machine.Output]) -> None:
        for out in outputs:
            if isinstance(out, machine.Close):
                self.disconnect(out.code, out.reason)
                return
            if out.reply:
                self.reply(out.payload)
            else:
                self.enqueue(Out(out.payload, shared=False))

    def _sync(self, request: machine.Request) -> Any:
        node = self.node
        if isinstance(request, machine.Register):
            node.clients[self.client] = self
        elif isinstance(request, machine.Attach):
            backlog = request.sub.backlog
            assert isinstance(backlog, list)  # a subscription is attached before it is live
            node.attach(self, request.sub.topic, backlog)
        elif isinstance(request, machine.Live):
            node.live(self, request.sub.topic, encode_publication)
            if request.sub.join_leave:
                node.watch(self, request.sub.topic, encode_presence)
        elif isinstance(request, machine.Detach):
            node.detach(self, request.topic)
        elif isinstance(request, machine.Emit):
            self._emit(request.outputs)
        elif isinstance(request, machine.MayPublish):
            assert self.principal is not None
            return self.proto.may_publish(self.principal, request.topic)
        return None

    async def _perform(self, request: machine.Request) -> Any:
        hub = self.node.hub
        if isinstance(request, machine.Authenticate):
            return self.node.auth.authenticate_with_expiry(f"Bearer {request.token}")
        if isinstance(request, machine.MayRead):
            assert self.principal is not None
            return await self.proto.may_read(self.principal, request.topic)
        if isinstance(request, machine.Position):
            return await hub.broker.position(request.topic)
        if isinstance(request, machine.History):
            result = await hub.broker.history(
                request.topic, since=request.since, limit=request.limit
            )
            if request.since is not None:
                if result[2]:
                    self.node.stats_recovered += 1
                else:
                    self.node.stats_unrecovered += 1
            return result
        if isinstance(request, machine.Join):
            if not self.closed and request.topic in self.state.subs:
                await hub.presence.join(request.topic, self.state.info(), ttl=self.node.lease_ttl)
            return None
        if isinstance(request, machine.Leave):
            await hub.presence.leave(request.topic, self.client)
            return None
        if isinstance(request, machine.PresenceOf):
            return await hub.presence.presence(request.topic)
        if isinstance(request, machine.PresenceStats):
            return await hub.presence.stats(request.topic)
        if isinstance(request, machine.Publish):
            await hub.broker.publish([request.topic], request.data)
            return None
        raise TypeError(f"unknown request {request!r}")

    # -- the engine's side --------------------------------------------------------------------

    def goodbye(self, code: int, reason: str) -> list[Out]:
        entry = codes.lookup(code) or codes.Code(
            code, "close", reason, codes.Family.DISCONNECT, codes.reconnects(code), ""
        )
        return [Out(proto.disconnect_push(entry, reason))]

    def tick(self, now: float) -> Coroutine[Any, Any, None] | None:
        decision = self.state.tick(now)
        if isinstance(decision, machine.Close):
            self.disconnect(decision.code, decision.reason)
            return None
        if not decision:
            return None
        self.enqueue(self.proto.ping)
        return self._renew() if self.state.subs else None

    async def _renew(self) -> None:
        """Renew the presence leases of live subscriptions (they lapse if we stop)."""
        presence = self.node.hub.presence
        info = self.state.info()
        for topic, sub in list(self.state.subs.items()):
            if sub.active and not self.closed:
                await presence.join(topic, info, ttl=self.node.lease_ttl)

    def topic_ended(self, topic: str) -> None:
        self.end_subscription(topic, codes.SESSION_DELETED)

    def topic_gap(self, topic: str) -> None:
        self.end_subscription(topic, codes.UNSUBSCRIBE_INSUFFICIENT)

    def end_subscription(self, topic: str, code: codes.Code) -> None:
        """End one subscription with an ``unsubscribe`` push (the client may resubscribe
        for codes from 2500, and recovers from its position)."""
        if self.state.subs.pop(topic, None) is None:
            return
        self.node.detach(self, topic)
        self.enqueue(Out(proto.unsubscribe_push(topic, code)))
        self.spawn(self.node.hub.presence.leave(topic, self.client))

    def lost(self) -> None:
        self.state.closed = True
        super().lost()

    def disconnect(self, code: codes.Code | int, reason: str = "") -> None:
        self.state.closed = True
        super().disconnect(code, reason)

    def cleanup(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        self._inbox = None
        topics = list(self.state.subs)
        self.state.subs.clear()
        if topics:
            self.spawn(self._leave_all(topics))

    async def _leave_all(self, topics: list[str]) -> None:
        for topic in topics:
            await self.node.hub.presence.leave(topic, self.client)
