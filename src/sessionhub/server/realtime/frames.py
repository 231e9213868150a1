"""``WebSocket /stream/{session_id}``: the screen-share relay's wire on the realtime engine.

Connect with ``?role=sharer`` (the owner, sends binary frames) or ``?role=viewer`` (the
default; receives binary frames). Credentials: ``Authorization: Bearer <token>`` or, for
browsers that cannot set headers, ``?token=<token>``. The connection is accepted first and
then closed with a code from ``relay.frames.CLOSE_CODES`` if it may not join, so every
client sees why. Once joined, the server sends one text message
``{"type": "ready", "role", "session_id", "quality", "width", "height", "fps"}``; after that
viewers receive only binary frames. Text from clients is ignored; binary messages from the
sharer are frames. A slow viewer is not cut off: it skips to the newest frame.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import orjson

from ...core.errors import SessionHubError
from ...relay.frames import (
    CLOSE_BAD_REQUEST,
    FrameRelay,
    Participant,
    Room,
    Viewer,
    close_code_for,
)
from .conn import Conn
from .node import RealtimeNode
from .socket import Handshake, Out, Sink

log = logging.getLogger("sessionhub.stream")

PATH = "/stream/{session_id}"
#: A viewer's socket counts as full above this many unsent bytes (then frames wait in the
#: one-frame slot): about one frame, so a slow viewer never queues more than that.
VIEWER_FULL = 64 * 1024
#: Frames from a sharer waiting to be relayed before reading from its socket pauses (the
#: sharer is then slowed by TCP, not by memory here).
SHARER_BACKLOG = 8


class Frames:
    """The ``/stream/{id}`` wire of one node, over its frame relay."""

    def __init__(self, relay: FrameRelay) -> None:
        self.relay = relay

    def open(self, node: RealtimeNode, sink: Sink, handshake: Handshake) -> Conn:
        return FrameConn(self.relay, node, sink, handshake)


class FrameConn(Conn):
    """A sharer or viewer connection of one screen share."""

    wire = "frames"
    #: A frame of a 1080p share is a few hundred KB; a little room above the largest.
    max_message = 8 << 20
    #: Viewers skip frames instead of being cut off; sharers are never written much to.
    drop_slow = False
    write_limit = VIEWER_FULL

    def __init__(self, relay: FrameRelay, node: RealtimeNode, sink: Sink, hs: Handshake) -> None:
        super().__init__(node, sink, hs)
        self.relay = relay
        self.role = hs.query.get("role", "viewer")
        self.session_id = (hs.params or {}).get("session_id", "")
        # Arrival order, taken before any await: among sharers, the newest wins.
        self.ticket = relay.ticket()
        self.room: Room | None = None
        self.participant: Participant | None = None
        self._inbox: deque[bytes] = deque()
        self._pump: asyncio.Task[None] | None = None
        self._paused = False

    def opened(self) -> None:
        self.spawn(self._join())

    async def _join(self) -> None:
        try:
            if self.role not in ("sharer", "viewer"):
                raise SessionHubError("role must be 'sharer' or 'viewer'")
            authorization, api_key = self.handshake.credentials()
            principal = self.node.auth.authenticate(authorization, api_key)
            if self.role == "sharer":
                room, participant = await self.relay.join_sharer(
                    principal, self.session_id, ticket=self.ticket
                )
            else:
                room, participant = await self.relay.join_viewer(
                    principal, self.session_id, self._send_frame
                )
        except SessionHubError as exc:
            self.disconnect(close_code_for(exc), exc.detail[:120])
            return
        except Exception:
            log.exception("joining screen share %s failed", self.session_id)
            self.disconnect(CLOSE_BAD_REQUEST, "could not join")
            return
        if self.closed:
            self.relay.leave(room, participant)
            return
        self.room, self.participant = room, participant
        participant.on_close = self.disconnect
        self.send(orjson.dumps(room.describe(self.role)))
        self.flush()
        if isinstance(participant, Viewer):
            self.relay.welcome(room, participant)

    def _send_frame(self, frame: bytes) -> bool:
        if self.closed:
            return False
        self.sink.write_one(Out(frame, shared=False, binary=True))
        return self.sink.buffered() <= VIEWER_FULL

    def received(self, payload: bytes, binary: bool) -> None:
        if not binary or self.role != "sharer" or self.participant is None:
            return
        self._inbox.append(payload)
        if len(self._inbox) >= SHARER_BACKLOG and not self._paused:
            self._paused = True
            self.sink.pause_reading()
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._relay())

    async def _relay(self) -> None:
        """Relay the sharer's frames one at a time, in the order they arrived."""
        try:
            while self._inbox and not self.closed:
                assert self.room is not None and self.participant is not None
                await self.relay.frame(self.room, self.participant, self._inbox.popleft())
                if self._paused and len(self._inbox) < SHARER_BACKLOG // 2:
                    self._paused = False
                    self.sink.resume_reading()
        except Exception:
            log.exception("relaying a frame of %s failed", self.session_id)
        finally:
            self._pump = None

    def writable(self) -> None:
        if isinstance(self.participant, Viewer):
            self.participant.drained()

    def cleanup(self) -> None:
        if self._pump is not None and self._pump is not asyncio.current_task():
            self._pump.cancel()
        if self.room is not None and self.participant is not None:
            self.participant.closed = True
            self.relay.leave(self.room, self.participant)
