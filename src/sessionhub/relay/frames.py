"""The screen-share frame relay: one sharer, many viewers, newest frame wins.

Per ``screen_share`` session there is one room. The sharer (the session's owner) sends
binary frames; each admitted viewer has a **one-frame slot**, not a queue: a new frame
replaces whatever the viewer has not been sent yet, so a slow viewer is always sent the
newest frame and skips the rest, and never holds memory or slows the sharer or the other
viewers. A viewer that joins is sent the newest frame at once.

Who may view: the owner, admins, and the users listed in the session's ``viewers``
attribute (the owner admits them when starting the share or later, see
``POST /api/screen_share/{id}/viewers``). Removing a user from ``viewers`` disconnects them.

``frames_captured`` counts frames received from the sharer. Frames are counted in memory
and flushed to the session's counter every ``flush_interval`` seconds, when the share stops
(``flush`` before the stop) and at shutdown: one database write per interval, not per frame.
Frames also keep the session alive (a heartbeat at most once per ``heartbeat_interval``).

Frames cross nodes: the sharer's node counts a frame and broadcasts it on the broker topic
``frames:<session id>`` (``Broker.broadcast``: no offset, no history); every node with viewers
of that share follows the topic and offers the frame to its own viewers. A share's end and
its admission list come from the broker topic ``sessions:screen_share``, so a viewer on
another node is closed or dismissed just as a local one. The node that holds a share's sharer
(or counts it has not flushed yet) also follows ``relay:<session id>``, where other nodes ask
it for what only it knows: the newest frame, for a viewer that joins on another node before
the next frame, and its unflushed count, flushed first, for a stop or status answered by
another node (``count_everywhere``, bounded by ``ask_timeout``).

The relay is transport-free: the ``/stream/{id}`` wire (``server/realtime/frames.py``) gives
each participant a ``send`` and a ``close`` and tells a viewer when its socket has drained.
Close codes it asks the transport to use are in ``CLOSE_CODES``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..core.errors import (
    Forbidden,
    IllegalTransition,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    SessionHubError,
    Unavailable,
    VersionConflict,
)
from ..core.model import JSON, STATE_CHANGED, UPDATED, Session
from ..core.principal import SYSTEM_PRINCIPAL, Principal
from ..core.streams import Publication
from ..hub import Hub
from ..ids import random_hex
from ..kinds.screen_share import QUALITY
from ..tasks import every, stop

log = logging.getLogger("sessionhub.relay")

KIND = "screen_share"

#: Close codes of ``/stream/{id}``: whether a client should reconnect is in the comment.
CLOSE_ENDED = 1000  # the share stopped or was dropped: final
CLOSE_REPLACED = 4000  # a newer sharer connection took over: final for this connection
CLOSE_BAD_REQUEST = 4400  # bad role or parameters: final
CLOSE_UNAUTHENTICATED = 4401  # no or invalid token: final until a new token
CLOSE_FORBIDDEN = 4403  # not the owner (sharer) / not admitted (viewer): final
CLOSE_NOT_FOUND = 4404  # no such screen share: final
CLOSE_NOT_ACTIVE = 4409  # the share is not active (ended): final
CLOSE_CODES = {
    CLOSE_ENDED: "session ended",
    CLOSE_REPLACED: "replaced by a newer sharer connection",
    CLOSE_BAD_REQUEST: "bad request",
    CLOSE_UNAUTHENTICATED: "unauthenticated",
    CLOSE_FORBIDDEN: "forbidden",
    CLOSE_NOT_FOUND: "not found",
    CLOSE_NOT_ACTIVE: "session not active",
}


class Replaced(SessionHubError):
    """A newer sharer connection of the same share joined first."""

    status = 409
    title = "Replaced"


def close_code_for(exc: SessionHubError) -> int:
    """The close code for an error raised while joining."""
    if isinstance(exc, Replaced):
        return CLOSE_REPLACED
    if isinstance(exc, NotFound):
        return CLOSE_NOT_FOUND
    if isinstance(exc, Forbidden):
        return CLOSE_FORBIDDEN
    if isinstance(exc, IllegalTransition):
        return CLOSE_NOT_ACTIVE
    if exc.status == 401:
        return CLOSE_UNAUTHENTICATED
    return CLOSE_BAD_REQUEST


class Participant:
    """One connection in a room. The transport sets ``on_close``; the relay calls ``close``."""

    def __init__(self, principal: Principal, role: str, ticket: int = 0) -> None:
        self.principal = principal
        self.role = role
        #: Arrival order of the connection: among sharers, the newest wins.
        self.ticket = ticket
        self.closed = False
        self.close_code = CLOSE_ENDED
        self.close_reason = ""
        #: What the transport does when the relay ends this participant.
        self.on_close: Callable[[int, str], None] | None = None

    def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.close_code = code
            self.close_reason = reason
            if self.on_close is not None:
                self.on_close(code, reason)


class Viewer(Participant):
    """A viewer with a one-frame slot. ``offer`` sends a frame at once while the viewer's
    socket takes it, else keeps it in the slot (replacing an older one, which is skipped);
    ``drained`` (the socket took everything) sends what the slot holds."""

    def __init__(self, principal: Principal, send: Callable[[bytes], bool] | None = None) -> None:
        super().__init__(principal, "viewer")
        #: Writes a frame; returns whether the socket can take another one right away.
        self.send = send
        self._slot: bytes | None = None
        self._ready = send is not None
        self.offered = 0
        self.skipped = 0
        self.taken = 0

    def offer(self, frame: bytes) -> None:
        if self.closed:
            return
        self.offered += 1
        if self._ready and self._slot is None:
            self._write(frame)
            return
        if self._slot is not None:
            self.skipped += 1  # the previous frame was never sent: the viewer is behind
        self._slot = frame

    def drained(self) -> None:
        """The socket has room again: send the newest frame kept meanwhile."""
        if self.closed or self.send is None:
            return
        self._ready = True
        frame, self._slot = self._slot, None
        if frame is not None:
            self._write(frame)

    def take(self) -> bytes | None:
        """The newest frame not yet sent (for a transport that pulls), or None."""
        frame, self._slot = self._slot, None
        if frame is not None:
            self.taken += 1
        return frame

    def _write(self, frame: bytes) -> None:
        assert self.send is not None
        self.taken += 1
        self._ready = self.send(frame)


@dataclass
class Room:
    session_id: str
    owner: str
    admitted: frozenset[str]
    sharer: Participant | None = None
    viewers: set[Viewer] = field(default_factory=set)
    last_frame: bytes | None = None
    last_heartbeat: float = 0.0
    quality: str = "medium"

    def describe(self, role: str) -> JSON:
        """The text message a connection receives once it has joined."""
        width, height, fps = QUALITY.get(self.quality, QUALITY["medium"])
        return {
            "type": "ready",
            "role": role,
            "session_id": self.session_id,
            "quality": self.quality,
            "width": width,
            "height": height,
            "fps": fps,
        }

    def may_view(self, principal: Principal) -> bool:
        return principal.is_admin or principal.sub == self.owner or principal.sub in self.admitted

    def close_all(self, code: int, reason: str) -> None:
        if self.sharer is not None:
            self.sharer.close(code, reason)
        for v in list(self.viewers):
            v.close(code, reason)


def _admitted(session: Session) -> frozenset[str]:
    value = session.attributes.get("viewers")
    return (
        frozenset(v for v in value if isinstance(v, str))
        if isinstance(value, list)
        else frozenset()
    )


class FrameRelay:
    """Rooms of screen shares on this node, and the ``frames_captured`` counting."""

    def __init__(
        self,
        hub: Hub,
        *,
        flush_interval: float = 2.0,
        heartbeat_interval: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = hub
        self.flush_interval = flush_interval
        self.heartbeat_interval = heartbeat_interval
        self._monotonic = monotonic
        self.rooms: dict[str, Room] = {}
        self._tickets = 0
        self._unflushed: dict[str, int] = {}
        self.frames_received = 0
        #: Frames the broker could not take (it was down): not relayed to other nodes.
        self.frames_lost = 0
        self.flushes = 0
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        #: session id -> unsubscriber of its ``frames:<id>`` topic (while it has viewers here).
        self._frames: dict[str, Callable[[], None]] = {}
        #: session id -> unsubscriber of ``relay:<id>`` (while this node holds its sharer or
        #: counts not flushed yet), where other nodes ask for what only this node knows.
        self._control: dict[str, Callable[[], None]] = {}
        #: Request id -> the future of its answer (``count_everywhere``).
        self._asked: dict[str, asyncio.Future[int]] = {}
        #: Seconds ``count_everywhere`` waits for the sharer's node to answer.
        self.ask_timeout = 1.0
        self._jobs: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._unsubscribe = self.hub.broker.subscribe(f"sessions:{KIND}", self._on_event)
        self._task = asyncio.create_task(self._flush_loop(), name="sessionhub-relay-flush")

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for undo in (*self._frames.values(), *self._control.values()):
            undo()
        self._frames.clear()
        self._control.clear()
        await stop([self._task, *self._jobs])
        self._task = None
        for room in list(self.rooms.values()):
            room.close_all(CLOSE_ENDED, "server shutting down")
        await self.flush()

    # -- joining ------------------------------------------------------------------------

    async def _load(self, session_id: str) -> Session:
        # Read as the system: admitted viewers may not read the session itself, and the
        # callers check who may send or view.
        s = await self.hub.get(SYSTEM_PRINCIPAL, session_id)
        if s.kind != KIND:
            raise NotFound(f"no screen share {session_id!r}")
        if s.state != "active":
            raise IllegalTransition(f"screen share {session_id!r} is {s.state!r}, not active")
        return s

    def _room(self, s: Session) -> Room:
        room = self.rooms.get(s.id)
        if room is None:
            quality = str(s.attributes.get("quality") or "medium")
            room = self.rooms[s.id] = Room(s.id, s.owner, _admitted(s), quality=quality)
        return room

    def ticket(self) -> int:
        """A number giving a connection's arrival order; take it before any await."""
        self._tickets += 1
        return self._tickets

    async def join_sharer(
        self, principal: Principal, session_id: str, *, ticket: int | None = None
    ) -> tuple[Room, Participant]:
        """The owner starts sending; an earlier sharer connection is replaced.

        "Earlier" is by ``ticket`` (arrival), not by who finishes loading the session first,
        so two connections racing through the load cannot leave the older one in charge."""
        ticket = self.ticket() if ticket is None else ticket
        s = await self._load(session_id)
        if principal.sub != s.owner:
            raise Forbidden("only the owner of a screen share may send its frames")
        room = self._room(s)
        old = room.sharer
        if old is not None and old.ticket > ticket:
            raise Replaced("a newer sharer connection of this share is already sending")
        sharer = room.sharer = Participant(principal, "sharer", ticket)
        self._answer_for(session_id)
        if old is not None:
            # After the new one is in place: closing the old one makes it leave the room,
            # which must not find the room empty and drop it.
            old.close(CLOSE_REPLACED, CLOSE_CODES[CLOSE_REPLACED])
        return room, sharer

    async def join_viewer(
        self, principal: Principal, session_id: str, send: Callable[[bytes], bool] | None = None
    ) -> tuple[Room, Viewer]:
        """Admit a viewer; ``send`` writes a frame to it (see ``Viewer``). Joining does not
        send anything yet: call ``welcome`` once the transport is ready for frames."""
        s = await self._load(session_id)
        room = self._room(s)
        room.admitted = _admitted(s)
        if not room.may_view(principal):
            raise Forbidden("you are not admitted to this screen share; ask its owner")
        viewer = Viewer(principal, send)
        room.viewers.add(viewer)
        if session_id not in self._frames:
            self._frames[session_id] = self.hub.broker.subscribe(
                f"frames:{session_id}", self._on_frame
            )
        if room.last_frame is None and room.sharer is None:
            # The sharer is on another node: ask it to send its newest frame again.
            await self._tell(session_id, {"op": "newest"})
        return room, viewer

    @staticmethod
    def welcome(room: Room, viewer: Viewer) -> None:
        """Send a viewer that just joined the newest frame at once."""
        if room.last_frame is not None:
            viewer.offer(room.last_frame)

    def leave(self, room: Room, participant: Participant) -> None:
        if room.sharer is participant:
            room.sharer = None
        if isinstance(participant, Viewer):
            room.viewers.discard(participant)
        if not room.viewers:
            undo = self._frames.pop(room.session_id, None)
            if undo is not None:
                undo()
        if room.sharer is None and not room.viewers and self.rooms.get(room.session_id) is room:
            del self.rooms[room.session_id]
        if room.sharer is None and not self._unflushed.get(room.session_id):
            self._stop_answering(room.session_id)

    # -- frames -------------------------------------------------------------------------

    async def frame(self, room: Room, sharer: Participant, data: bytes) -> None:
        """One frame from the sharer: count it and offer it to every viewer, on every node."""
        if room.sharer is not sharer or sharer.closed:
            return  # a replaced or closed sharer's late frames are not relayed
        self.frames_received += 1
        self._unflushed[room.session_id] = self._unflushed.get(room.session_id, 0) + 1
        self._answer_for(room.session_id)
        room.last_frame = data
        topic = f"frames:{room.session_id}"
        try:
            await self.hub.broker.broadcast(topic, data)
        except Unavailable:
            # Live media: other nodes miss this frame; this node's viewers still get it.
            self.frames_lost += 1
            self._on_frame(Publication(topic, 0, "", data))

        now = self._monotonic()
        if now - room.last_heartbeat >= self.heartbeat_interval:
            room.last_heartbeat = now
            # Ended meanwhile: the listener closes the room.
            with contextlib.suppress(SessionHubError):
                await self.hub.heartbeat(sharer.principal, room.session_id)

    def unflushed(self, session_id: str) -> int:
        """Frames received but not yet added to the session's counter."""
        return self._unflushed.get(session_id, 0)

    async def flush(self, session_id: str | None = None) -> int:
        """Add the counted frames to ``frames_captured`` (one update per session)."""
        ids = [session_id] if session_id is not None else list(self._unflushed)
        written = 0
        for sid in ids:
            n = self._unflushed.pop(sid, 0)
            if n <= 0:
                continue
            try:
                await self.hub.update(SYSTEM_PRINCIPAL, sid, counters={"frames_captured": n})
                written += n
                self.flushes += 1
                room = self.rooms.get(sid)
                if (room is None or room.sharer is None) and not self._unflushed.get(sid):
                    self._stop_answering(sid)
            except NotFound:
                self._stop_answering(sid)
                continue  # the session is gone: nothing to count into
            except SessionHubError:
                # A concurrent change won the compare-and-set: count them next time.
                self._unflushed[sid] = self._unflushed.get(sid, 0) + n
        return written

    async def _flush_loop(self) -> None:
        await every(self.flush_interval, self.flush, "flushing frame counts")

    # -- asking the sharer's node -------------------------------------------------------

    async def count_everywhere(self, session_id: str) -> int:
        """Flush ``session_id``'s frame count wherever it is counted (here, or the node with
        its sharer), so that the session's ``frames_captured`` holds every frame received so
        far. Returns the frames this call flushed, here and elsewhere (another node counts
        as 0 when it did not answer within ``ask_timeout``: then nobody counts frames of it
        any more)."""
        here = await self.flush(session_id)
        room = self.rooms.get(session_id)
        if not self.hub.broker.shared or (room is not None and room.sharer is not None):
            return here  # one node, or the sharer is here: everything was counted here
        ask = random_hex(8)
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._asked[ask] = answer
        undo = self.hub.broker.subscribe(f"relay:{session_id}", self._on_control)
        try:
            await self._tell(session_id, {"op": "flush", "ask": ask})
            async with asyncio.timeout(self.ask_timeout):
                return here + await answer
        except TimeoutError:
            return here
        finally:
            undo()
            self._asked.pop(ask, None)

    async def _tell(self, session_id: str, message: JSON) -> None:
        with contextlib.suppress(Unavailable):  # best effort: live media, bounded waits
            await self.hub.broker.broadcast(f"relay:{session_id}", orjson.dumps(message))

    def _answer_for(self, session_id: str) -> None:
        if session_id not in self._control:
            self._control[session_id] = self.hub.broker.subscribe(
                f"relay:{session_id}", self._on_control
            )

    def _stop_answering(self, session_id: str) -> None:
        undo = self._control.pop(session_id, None)
        if undo is not None:
            undo()

    def _on_control(self, pub: Publication) -> None:
        try:
            message = orjson.loads(pub.data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(message, dict):
            return
        session_id = pub.topic.removeprefix("relay:")
        op = message.get("op")
        if op == "flushed":
            answer = self._asked.get(str(message.get("ask")))
            if answer is not None and not answer.done():
                answer.set_result(int(message.get("n") or 0))
        elif session_id not in self._control:
            return  # a node asking (following the topic for its answer), not answering
        elif op == "newest":
            room = self.rooms.get(session_id)
            if room is not None and room.last_frame is not None:
                frame = room.last_frame
                asyncio.get_running_loop().create_task(self._resend(f"frames:{session_id}", frame))
        elif op == "flush":
            self._spawn(self._flush_for(session_id, str(message.get("ask"))))

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _resend(self, topic: str, frame: bytes) -> None:
        with contextlib.suppress(Unavailable):
            await self.hub.broker.broadcast(topic, frame)

    async def _flush_for(self, session_id: str, ask: str) -> None:
        try:
            n = await self.flush(session_id)
        except Exception:
            log.exception("flushing frame counts of %s for another node failed", session_id)
            return
        await self._tell(session_id, {"op": "flushed", "ask": ask, "n": n})

    # -- session changes ----------------------------------------------------------------

    def _on_frame(self, pub: Publication) -> None:
        room = self.rooms.get(pub.topic.removeprefix("frames:"))
        if room is None:
            return
        room.last_frame = pub.data
        for viewer in list(room.viewers):
            viewer.offer(pub.data)

    def _on_event(self, pub: Publication) -> None:
        try:
            event = orjson.loads(pub.data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict):
            return
        room = self.rooms.get(str(event.get("session_id")))
        if room is None:
            return
        raw = event.get("data")
        data: JSON = raw if isinstance(raw, dict) else {}
        snap = data.get("session")
        kind = event.get("type")
        if kind == STATE_CHANGED and data.get("to") != "active":
            room.close_all(CLOSE_ENDED, f"session {data.get('to')}")
        elif kind == UPDATED and isinstance(snap, dict):
            viewers = (snap.get("attributes") or {}).get("viewers")
            room.admitted = (
                frozenset(v for v in viewers if isinstance(v, str))
                if isinstance(viewers, list)
                else frozenset()
            )
            for v in list(room.viewers):
                if not room.may_view(v.principal):
                    v.close(CLOSE_FORBIDDEN, "no longer admitted by the owner")


MAX_VIEWERS = 100


async def set_admitted(
    hub: Hub, principal: Principal, session_id: str, user: str, *, admitted: bool
) -> list[str]:
    """Admit ``user`` to (or remove them from) a screen share's viewers; owner or admin.

    A compare-and-set on the session version, retried, so concurrent changes keep each other.
    Returns the new list. Removing a user disconnects their viewer connections.
    """
    if not user or len(user) > 200:
        raise InvalidInput("user_id must be 1 to 200 characters")
    for _ in range(8):
        s = await hub.get(principal, session_id)
        if s.kind != KIND:
            raise NotFound(f"no screen share {session_id!r}")
        if not (principal.is_admin or principal.sub == s.owner):
            raise Forbidden("only the owner or an admin may admit viewers")
        current = sorted(_admitted(s))
        new = sorted(set(current) | {user}) if admitted else [u for u in current if u != user]
        if new == current:
            return current
        if len(new) > MAX_VIEWERS:
            raise InvalidInput(f"a screen share admits at most {MAX_VIEWERS} viewers")
        try:
            await hub.update(
                principal, session_id, attributes={"viewers": new}, expected_version=s.version
            )
        except (PreconditionFailed, VersionConflict):
            continue
        return new
    raise VersionConflict("the session changed concurrently too often; retry the request")
