"""``/room/{slug}`` and ``/``: Aesthetic Computer's room socket (seed 003) on the realtime engine.

The protocol is the upstream session server's (``relay/rooms.py`` has the messages): a
client connects to ``wss://<host>/room/<slug>`` (what ``GET /session/<slug>`` answers) or,
as old clients do, to ``/``, which is one room shared by everyone there (the upstream
server's single space; also reachable as ``/room/*``). Frames are JSON text, one message
each. Rooms are open, as upstream; with ``SESSIONHUB_ROOMS_REQUIRE_TOKEN=1`` a token
(``?token=`` or ``Authorization: Bearer``) is required and its subject is the player's user.

Per connection: frames above ``max_message`` bytes close the socket with 1009; messages
beyond ``rate`` per second (after a ``burst``) are dropped and counted, and ``flood`` drops
within one second close it with 3013; frames sent before the join completes (the upstream
client queues what it sends while connecting) wait, up to ``pending``. The server pings
every ``ping_interval`` seconds (15) and closes a client that answered none of the last
interval with 3012. One address may be in at most ``rooms_per_address`` rooms (3504).
A reader too slow for its room is closed with 3008, as on every wire.

Close codes: 1009 frame too big; 3001 server shutting down; 3004 server error; 3008 too
slow; 3012 no pong; 3013 flood (these reconnect); 3500 missing or bad token; 3501 bad
slug; 3504 too many rooms from this address (final).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any, cast
from urllib.parse import unquote

from ...core import codes
from ...core.errors import Unauthenticated
from ...kinds import room as kind
from ...relay.rooms import Bucket, Player, RoomService, RoomState
from ...tasks import stop
from .asgi import AsgiSink
from .conn import Conn
from .node import RealtimeNode
from .socket import Handshake, Out, Sink

log = logging.getLogger("sessionhub.rooms")

#: The per-slug room socket, and the upstream path old clients use (one shared room).
PATH = "/room/{slug}"
SHARED_PATH = "/"
WIRE = "room"


def encode(payload: bytes) -> Out:
    """Frame a room message once for every player of this node (``RoomService.encode``)."""
    return Out(payload)


class RoomSockets:
    """The room wire of one node: its two factories and the server pings."""

    def __init__(self, service: RoomService, node: RealtimeNode) -> None:
        self.service = service
        self.node = node
        self.config = service.config
        self._pinger: asyncio.Task[None] | None = None
        self.no_pong = 0
        self.floods = 0

    def open(self, node: RealtimeNode, sink: Sink, handshake: Handshake) -> Conn:
        """Factory for ``/room/{slug}``."""
        raw = (handshake.params or {}).get("slug", "")
        asgi = isinstance(sink, AsgiSink)  # ASGI hands path parameters over decoded
        return RoomConn(self, node, sink, handshake, raw if asgi else unquote(raw))

    def open_shared(self, node: RealtimeNode, sink: Sink, handshake: Handshake) -> Conn:
        """Factory for ``/``: the one room old clients share."""
        return RoomConn(self, node, sink, handshake, kind.SHARED)

    def connections(self) -> list[RoomConn]:
        return [c for c in self.node.connections(WIRE) if isinstance(c, RoomConn)]

    async def start(self) -> None:
        if self._pinger is None:
            self._pinger = asyncio.get_running_loop().create_task(
                self._pings(), name="sessionhub-room-pings"
            )

    async def close(self) -> None:
        await stop([self._pinger])
        self._pinger = None

    async def _pings(self) -> None:
        while True:
            await asyncio.sleep(self.config.ping_interval)
            for conn in self.connections():
                if conn.closed or not conn.can_ping:
                    continue
                if not conn.heard:
                    # Nothing arrived since the last ping, not even its pong: gone.
                    self.no_pong += 1
                    conn.disconnect(codes.NO_PONG)
                    continue
                conn.heard = False
                conn.sink.ping()


class RoomConn(Conn):
    """One player's socket: limits here, the protocol in ``RoomService``."""

    wire = WIRE
    #: One message per frame: the upstream client ``JSON.parse``s each frame whole, so
    #: queued messages must never leave joined into one (the ASGI sink joins text frames
    #: with newlines unless told not to).
    joinable = False

    def __init__(
        self, sockets: RoomSockets, node: RealtimeNode, sink: Sink, hs: Handshake, slug: str
    ) -> None:
        super().__init__(node, sink, hs)
        self.sockets = sockets
        self.service = sockets.service
        config = sockets.config
        #: Read by the engine right after the factory: frames above it close with 1009.
        self.max_message = config.max_message
        #: ASGI offers no ping frames: liveness there is the ASGI server's.
        self.can_ping = not isinstance(sink, AsgiSink)
        self.slug = slug
        self.bucket = Bucket(config.rate, config.burst, time.monotonic())
        self.inbox: deque[bytes] = deque()
        self.room: RoomState | None = None
        self.player: Player | None = None
        self._pump: asyncio.Task[None] | None = None
        self._admitted = False

    # -- opening ------------------------------------------------------------------------

    def opened(self) -> None:
        allowed, user = self._user()
        if not allowed:
            return
        if not kind.valid_slug(self.slug):
            self.disconnect(codes.BAD_REQUEST_DISCONNECT, "bad room slug")
            return
        if not self.service.admit(self.handshake.peer, self.slug):
            self.disconnect(codes.CONNECTION_LIMIT, "too many rooms from this address")
            return
        self._admitted = True
        self.spawn(self._join(user))

    def _user(self) -> tuple[bool, str | None]:
        """(admitted, the token's subject or None); a refused connection is closed here."""
        authorization, api_key = self.handshake.credentials()
        if not authorization and not api_key:
            if self.sockets.config.require_token:
                self.disconnect(codes.INVALID_TOKEN, "token required: ?token=<jwt>")
                return False, None
            return True, None
        try:
            return True, str(self.node.auth.authenticate(authorization, api_key).sub)
        except Unauthenticated as exc:
            if self.sockets.config.require_token:
                self.disconnect(codes.INVALID_TOKEN, exc.detail[:100])
                return False, None
            return True, None  # rooms are open: a bad token only means no verified identity

    async def _join(self, user: str | None) -> None:
        try:
            room, player = await self.service.join(
                self.slug,
                client=self.client,
                address=self.handshake.peer,
                deliver=self._deliver,
                direct=self.send,
                close=self.disconnect,
                user=user,
            )
        except Exception:
            log.exception("joining room %r failed", self.slug)
            self.service.release(self.handshake.peer, self.slug)
            self.disconnect(codes.SERVER_ERROR, "could not join the room")
            return
        if self.closed:
            await self.service.leave(room, player)
            return
        self.room, self.player = room, player
        self.flush()  # ``connected`` first, before anything relayed to this player
        if self.inbox:
            self._start_pump()

    def _deliver(self, item: object) -> None:
        self.enqueue(cast(Out, item))

    # -- messages -----------------------------------------------------------------------

    def received(self, payload: bytes, binary: bool) -> None:
        if not self.bucket.take(time.monotonic()):
            self.service.dropped_total += 1
            if self.room is not None:
                self.room.dropped += 1
            if self.bucket.window_drops >= self.sockets.config.flood:
                self.sockets.floods += 1
                self.disconnect(codes.TOO_MANY_REQUESTS_DISCONNECT, "message flood")
            return
        if len(self.inbox) >= self.sockets.config.pending:
            self.service.dropped_total += 1
            return
        self.inbox.append(payload)
        if self.player is not None and self._pump is None:
            self._start_pump()

    def _start_pump(self) -> None:
        self._pump = asyncio.get_running_loop().create_task(self._relay())

    async def _relay(self) -> None:
        """Hand the player's messages to the room one at a time, in order."""
        room, player = self.room, self.player
        assert room is not None and player is not None
        try:
            while self.inbox and not self.closed:
                await self.service.receive(room, player, self.inbox.popleft())
        except Exception:
            log.exception("relaying a message in room %r failed", self.slug)
        finally:
            self._pump = None

    # -- liveness and the end -------------------------------------------------------------

    def tick(self, now: float) -> Coroutine[Any, Any, None] | None:
        """The node's tick renews the presence lease; pings are the wire's own (15 s)."""
        if self.room is None or self.player is None:
            return None
        return self.service.renew(self.room, self.player)

    def cleanup(self) -> None:
        if self._pump is not None and self._pump is not asyncio.current_task():
            self._pump.cancel()
        if self.room is not None and self.player is not None:
            # The relay's task, so a shutdown can wait for the others' ``left``.
            self.service.spawn(self.service.leave(self.room, self.player))
