"""``/ws/unified``: the NINA imaging dashboard's WebSocket (seed 000), a wire on the engine.

On connect: ``connection``, then the current ``unifiedSession`` (the rig's current night, or
its last one), then every ``unifiedSession``/``sessionUpdate`` and ``nina-event`` the
connector publishes on the broker topic ``nina:<rig>``, relayed as they are, and a
``heartbeat`` every 20 seconds. The snapshot and the stream are gapless: the snapshot names
the topic position it reflects, the connection follows the topic from there (what arrived
while it was read is delivered once, in order). ``?rig=<name>`` picks a rig (default: the
first configured).

The token rules are KATO's ``/ws``: ``?token=`` or ``Authorization: Bearer``, and the admin
role; a non-admin may follow the rig named like their token's subject;
``SESSIONHUB_NINA_ALLOW_ANONYMOUS=1`` opens it read-only without a token. Like every socket it
is pinged and closed with 1011 when silent, and cut off with 3008 when it cannot keep up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ...connectors.nina import messages
from ...connectors.nina.service import NinaService
from ...core import codes
from ...core.errors import SessionHubError
from ...core.principal import Principal
from ...core.recovery import activate
from ...core.streams import Publication, StreamPosition
from .conn import Conn
from .node import ANONYMOUS, RealtimeNode
from .socket import Handshake, Out, Sink

log = logging.getLogger("sessionhub.nina")

PATH = "/ws/unified"


def encode_raw(pub: Publication) -> Out:
    """The ``nina:<rig>`` topics carry finished ``/ws/unified`` messages."""
    return Out(pub.data)


class Unified:
    """The ``/ws/unified`` wire of one node, over its NINA connector."""

    def __init__(self, node: RealtimeNode, nina: NinaService) -> None:
        self.node = node
        self.nina = nina
        self._heartbeat: asyncio.Task[None] | None = None

    def open(self, node: RealtimeNode, sink: Sink, handshake: Handshake) -> Conn:
        return UnifiedConn(self, node, sink, handshake)

    @property
    def clients(self) -> list[UnifiedConn]:
        return [c for c in self.node.connections("unified") if isinstance(c, UnifiedConn)]

    def authenticate(self, handshake: Handshake, rig: str) -> Principal | tuple[int, str]:
        principal = self.node.authenticate(handshake, anonymous=self.nina.config.allow_anonymous)
        if isinstance(principal, tuple) or principal is ANONYMOUS:
            return principal
        if not (principal.is_admin or principal.sub == rig or self.nina.config.allow_anonymous):
            return codes.PERMISSION_DENIED_DISCONNECT.code, "this rig's stream is for admins"
        return principal

    def ensure_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(
                self._beat(), name="sessionhub-unified-heartbeat"
            )

    async def _beat(self) -> None:
        while self.clients:
            await asyncio.sleep(self.nina.config.heartbeat_interval)
            item = Out(messages.heartbeat_message(self.node.hub.clock()))
            for c in self.clients:
                if c.live:
                    c.enqueue(item)

    async def close(self) -> None:
        task, self._heartbeat = self._heartbeat, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class UnifiedConn(Conn):
    """One ``/ws/unified`` client of one rig."""

    wire = "unified"
    joinable = False  # the dashboard parses one JSON message per frame
    max_message = 64 * 1024  # the client sends nothing but, perhaps, a ping

    def __init__(self, wire: Unified, node: RealtimeNode, sink: Sink, hs: Handshake) -> None:
        super().__init__(node, sink, hs)
        self.unified = wire
        self.rig = hs.query.get("rig") or ""
        self.live = False
        self._backlog: list[Publication] = []

    def opened(self) -> None:
        nina = self.unified.nina
        try:
            rig = nina.runner(self.rig or None).name
        except SessionHubError as exc:
            self.disconnect(4404, exc.detail[:100])
            return
        who = self.unified.authenticate(self.handshake, rig)
        if not isinstance(who, Principal):
            self.disconnect(*who)
            return
        self.rig = rig
        # Pending first: what the connector publishes while the snapshot is read is kept.
        self.node.attach(self, messages.topic(rig), self._backlog)
        self.spawn(self._greet())

    async def _greet(self) -> None:
        nina = self.unified.nina
        now = self.node.hub.clock()
        try:
            data = await nina.state(self.rig)
        except Exception:
            log.exception("reading the unified session of %s failed", self.rig)
            self.disconnect(codes.SERVER_ERROR)
            return
        if self.closed:
            return
        stream = data.pop("stream", None) or {}
        self.send(messages.connection_message(now, nina.rigs))
        self.send(messages.unified_message(data, now))
        position = StreamPosition(int(stream.get("offset", 0)), str(stream.get("epoch", "")))
        topic = messages.topic(self.rig)
        backlog, self._backlog = self._backlog, []
        if position.epoch:
            done = activate(topic, position, backlog)
            replay = done.deliver if done.outcome != "gap" else backlog
        else:
            replay = backlog
        for pub in replay:
            self.enqueue(encode_raw(pub))
        self.node.live(self, topic, encode_raw)
        self.live = True
        self.unified.ensure_heartbeat()

    def received(self, payload: bytes, binary: bool) -> None:
        if payload.strip() == b"ping":  # a courtesy: answer with a heartbeat
            self.send(messages.heartbeat_message(self.node.hub.clock()))

    def topic_gap(self, topic: str) -> None:
        # Another node's broker link lost messages: start over from a fresh snapshot.
        self.disconnect(codes.INSUFFICIENT_STATE)
