"""The room session of a slug (kind ``room``): found or created, kept alive while anyone
plays, its counts written in batches; a mixin of ``RoomService`` (``relay/rooms.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from ..core.errors import NotFound, SessionHubError
from ..core.model import STATE_CHANGED
from ..core.principal import SYSTEM_PRINCIPAL
from ..core.query import SessionQuery
from ..core.streams import ClientInfo, Publication
from ..hub import Hub
from ..kinds import room as kind
from ..tasks import every
from .room_config import RoomConfig
from .room_model import RoomState, handle_of

log = logging.getLogger("sessionhub.rooms")


class RoomSessions:
    """Room sessions of the rooms a node follows. Expects ``hub``, ``config``, ``rooms``,
    ``_tasks`` and ``players`` from the class it is mixed into."""

    hub: Hub
    config: RoomConfig
    rooms: dict[str, RoomState]
    _tasks: set[asyncio.Task[Any]]
    _by_session: dict[str, RoomState]
    _generations: dict[str, int]
    flushes: int

    async def players(self, topic: str) -> dict[str, ClientInfo]:
        raise NotImplementedError

    def _ensure_session(self, room: RoomState) -> None:
        if room.session_id is None and (room.acquiring is None or room.acquiring.done()):
            room.acquiring = asyncio.get_running_loop().create_task(self._acquire(room))
            self._tasks.add(room.acquiring)
            room.acquiring.add_done_callback(self._tasks.discard)

    async def _acquire(self, room: RoomState) -> None:
        for attempt in range(5):
            try:
                session_id = await self.live_session(room.slug)
            except Exception:
                log.warning(
                    "room %r: no session yet (attempt %d)", room.slug, attempt + 1, exc_info=True
                )
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            with contextlib.suppress(SessionHubError):  # the flush writes it in any case
                stored = await self.hub.get(SYSTEM_PRINCIPAL, session_id)
                room.peak = int(stored.attributes.get("peak_players") or 0)
            room.session_id = session_id
            self._by_session[session_id] = room
            return

    async def live_session(self, slug: str) -> str:
        """The id of ``slug``'s live room session, created if there is none.

        Generation ``n`` of a slug is created with the idempotency key ``room:<slug>:<n>``,
        so nodes racing to create it get the same session; an ended one moves on to
        ``n + 1``. A node that does not know the current generation looks it up first."""
        gen = self._generations.get(slug)
        if gen is None:
            gen = await self._find_generation(slug)
        for _ in range(64):
            s, _created = await self.hub.create(
                SYSTEM_PRINCIPAL,
                kind.NAME,
                owner=SYSTEM_PRINCIPAL.sub,
                attributes={"slug": slug, "generation": gen},
                idempotency_key=kind.idempotency_key(slug, gen),
            )
            if s.state == "active":
                self._generations[slug] = gen
                return s.id
            gen += 1
        raise RuntimeError(f"no live session for room {slug!r}")

    async def _find_generation(self, slug: str) -> int:
        best, cursor = -1, None
        for _page in range(20):
            page = await self.hub.list_sessions(
                SYSTEM_PRINCIPAL,
                SessionQuery(kinds=(kind.NAME,), text=slug, limit=200, cursor=cursor),
            )
            for s in page.items:
                if s.attributes.get("slug") != slug:
                    continue
                gen = int(s.attributes.get("generation") or 0)
                if s.state == "active":
                    return gen
                best = max(best, gen + 1)
            cursor = page.next_cursor
            if cursor is None:
                break
        return max(best, 0)

    def _on_event(self, pub: Publication) -> None:
        try:
            event = orjson.loads(pub.data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict) or event.get("type") != STATE_CHANGED:
            return
        room = self._by_session.pop(str(event.get("session_id")), None)
        if room is None or room.session_id != event.get("session_id"):
            return
        # The session ended (an admin, or the idle sweep racing a join): players still
        # here get the next generation; unflushed counts go to it.
        room.session_id = None
        self._generations[room.slug] = self._generations.get(room.slug, 0) + 1
        if room.players:
            self._ensure_session(room)

    async def flush(self) -> None:
        """Write every room's counts (one update per room with something to write)."""
        for room in list(self.rooms.values()):
            await self._flush_room(room)

    async def _flush_room(self, room: RoomState) -> None:
        sid = room.session_id
        if sid is None:
            return
        if room.players:
            # Keeps the session alive while people play, even if nobody says anything.
            with contextlib.suppress(SessionHubError):
                await self.hub.heartbeat(SYSTEM_PRINCIPAL, sid)
        if not (room.messages or room.joins or room.dropped or room.players_changed):
            return
        counts = {"messages": room.messages, "joins": room.joins, "dropped": room.dropped}
        room.messages = room.joins = room.dropped = 0
        changed, room.players_changed = room.players_changed, False
        attributes: dict[str, Any] | None = None
        try:
            if changed:
                present = await self.players(room.topic)
                handles = sorted({handle_of(i) for i in present.values()} - {""})
                attributes = {"players": len(present), "handles": handles[: kind.MAX_HANDLES]}
                if len(present) > room.peak:
                    attributes["peak_players"] = len(present)
            s = await self.hub.update(
                SYSTEM_PRINCIPAL, sid, attributes=attributes, counters=counts, internal=True
            )
            self.flushes += 1
            room.peak = max(room.peak, int(s.attributes.get("peak_players") or 0))
            if s.state != "active" and room.session_id == sid:
                room.session_id = None
                self._ensure_session(room)
        except NotFound:
            room.session_id = None
        except Exception as exc:
            # Keep the counts for the next flush (a concurrent change won, a store outage).
            log.debug("room %r: flush deferred: %s", room.slug, exc)
            room.messages += counts["messages"]
            room.joins += counts["joins"]
            room.dropped += counts["dropped"]
            room.players_changed = room.players_changed or changed

    async def _flush_loop(self) -> None:
        await every(self.config.flush_interval, self.flush, "flushing room counts")
