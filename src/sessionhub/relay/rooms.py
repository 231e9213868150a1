"""Multiplayer rooms (seed 003): Aesthetic Computer's session-server semantics, per slug.

A **room** is everyone connected to one slug. Its state lives in two places:

* **Players** are presence on ``room:<slug>`` (``hub.presence``): cluster-wide, leases renewed
  by each player's node, visible to SDK subscribers. Counts (``playerCount``, ``left``'s
  ``count``) are read from it, so they are the same on every node.
* **Worlds** (``world:<piece>:*`` messages) are replicated: each node keeps, per room it has
  players in, every player's world entry (the ``join`` content, then ``pos``, ``showing``,
  ``ghost``). The node of a player is the authority for that player's entries; every change
  travels as an *op* beside the frame that causes it, so every node applies the same
  change. A node that starts following a room asks the others for their entries (``Q``)
  and waits for the nodes present (at most ``sync_wait``) before it answers a ``join``.

Traffic crosses nodes through ``hub.broker.broadcast`` on ``relay:room:<slug>`` (live media:
no offsets, no history). Every frame, also one for the sender's own node, reaches players
through that topic's listener, so there is one delivery path; each node frames a message
once (``encode``) and hands the same object to each of its players. Slugs never mix: each
room has its own topic, presence and replica.

Protocol (the upstream server's, ``whistlegraph/aesthetic-computer`` ``session.mjs``): frames
``{"type", "content", "id"}``; ``connected`` (to the joiner; ``content`` a JSON *string*
``{"ip", "playerCount", "id"}``), ``joined`` (to the others; ``{"text"}`` as a JSON string),
``left`` (to everyone; ``{"count"}``). ``world:<piece>:join`` stores the content and answers
``world:<piece>:list`` (everyone present, the joiner included); ``move`` keeps ``pos``,
``show``/``hide`` keep ``showing``; every world label goes to the others except ``write``
(everyone). A handle starting with ``@`` that drops while others are in the world becomes a
``ghost`` (``world:<piece>:ghost`` to everyone, no ``left``) and is kicked
(``world:<piece>:kick``) after ``ghost_seconds`` unless it joins again. ``login`` and
``location:broadcast`` attach identity (no outbound calls); ``scream`` goes to the room with
the id ``"screamer"``; any other type goes to everyone, the sender included, with its ``id``.

The room session (kind ``room``) is created on the first join and kept alive while anyone
plays; see ``kinds/room.py``. Counts are flushed every ``flush_interval``, never per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import orjson

from ..core.streams import ClientInfo, PresenceEvent, Publication
from ..hub import Hub
from ..kinds import room as kind
from .room_config import MAX_PIECES, SILENT, Bucket, RoomConfig
from .room_model import Entry, Player, RoomState, about_of, frame, node_of
from .room_sessions import RoomSessions

__all__ = ["Bucket", "Entry", "Player", "RoomConfig", "RoomService", "RoomState", "frame"]

log = logging.getLogger("sessionhub.rooms")


class RoomService(RoomSessions):
    """Every room this node has players in, and their sessions."""

    def __init__(
        self,
        hub: Hub,
        config: RoomConfig,
        *,
        encode: Callable[[bytes], object] = lambda b: b,
        lease_ttl: float = 75.0,
    ) -> None:
        self.hub, self.config, self.encode, self.lease_ttl = hub, config, encode, lease_ttl
        self.node = secrets.token_hex(6)
        # Player ids: numbers as upstream, unique across nodes by a random 20-bit prefix.
        self._next = (secrets.randbelow((1 << 20) - 1) + 1) << 32
        self.rooms: dict[str, RoomState] = {}
        self._addresses: dict[str, dict[str, int]] = {}
        self._by_session: dict[str, RoomState] = {}
        self._generations: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.messages_total = self.dropped_total = self.invalid_total = self.flushes = 0
        room_kind = hub.kinds.get(kind.NAME)
        if room_kind is not None and config.grace > 0:  # the grace is the kind's idle timeout
            setattr(room_kind, "idle_timeout", timedelta(seconds=config.grace))  # noqa: B010

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._unsubscribe = self.hub.broker.subscribe(f"sessions:{kind.NAME}", self._on_event)
        self._loop_task = asyncio.create_task(self._flush_loop(), name="sessionhub-rooms-flush")

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        for room in list(self.rooms.values()):
            for handle in room.ghosts.values():
                handle.cancel()
            room.ghosts.clear()
        with contextlib.suppress(Exception):
            await self.flush()
        for task in list(self._tasks):
            task.cancel()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def players(self, topic: str) -> dict[str, ClientInfo]:
        """The players present on a room's topic (SDK subscribers following it are present
        there too, and are not players)."""
        present = await self.hub.presence.presence(topic)
        return {c: i for c, i in present.items() if about_of(i).get("wire") == "room"}

    def pending(self) -> list[asyncio.Task[Any]]:
        """The relay's tasks still running (leaves, kicks, session work)."""
        return list(self._tasks)

    def stats(self) -> dict[str, int]:
        return {
            "rooms": len(self.rooms),
            "players": sum(len(r.players) for r in self.rooms.values()),
            "messages_total": self.messages_total,
            "dropped_total": self.dropped_total,
            "invalid_total": self.invalid_total,
        }

    # -- admission ----------------------------------------------------------------------

    def admit(self, address: str, slug: str) -> bool:
        """Count one more socket of ``address`` in ``slug``, unless that makes more distinct
        rooms than ``rooms_per_address`` (then False and nothing is counted)."""
        rooms = self._addresses.setdefault(address, {})
        if slug not in rooms and len(rooms) >= self.config.rooms_per_address:
            if not rooms:
                del self._addresses[address]
            return False
        rooms[slug] = rooms.get(slug, 0) + 1
        return True

    def release(self, address: str, slug: str) -> None:
        rooms = self._addresses.get(address)
        if rooms is None or slug not in rooms:
            return
        rooms[slug] -= 1
        if rooms[slug] <= 0:
            del rooms[slug]
        if not rooms:
            del self._addresses[address]

    def local_room_of(self, user: str | None, handle: str | None) -> str | None:
        """The room a player of this node with this identity is in (the newest), if any."""
        best: tuple[int, str] | None = None
        for room in self.rooms.values():
            for p in room.players.values():
                same = (user and p.user == user) or (handle and p.handle == handle)
                if same and (best is None or p.id > best[0]):
                    best = (p.id, room.slug)
        return best[1] if best else None

    # -- joining and leaving --------------------------------------------------------------

    def _room(self, slug: str) -> RoomState:
        room = self.rooms.get(slug)
        if room is None:
            room = self.rooms[slug] = RoomState(slug)
            room.unsubscribe = self.hub.broker.subscribe(room.traffic, self._on_traffic)
            room.unwatch = self.hub.presence.watch(room.topic, self._on_presence)
            self.spawn(self._sync(room))
        return room

    async def _sync(self, room: RoomState) -> None:
        """Ask the other nodes for their players' world entries; wait for those present."""
        try:
            present = await self.hub.presence.presence(room.topic)
            nodes = {node_of(info) for info in present.values()} - {self.node, ""}
            if nodes:
                room.awaiting = nodes
                await self._broadcast(room, b"Q %s - 0\n" % self.node.encode())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.sync_wait):
                        await room.answered.wait()
        except Exception:
            log.exception("syncing room %r failed; starting with what this node knows", room.slug)
        finally:
            room.awaiting = set()
            room.ready.set()

    async def join(
        self,
        slug: str,
        *,
        client: str,
        address: str,
        deliver: Callable[[object], None],
        direct: Callable[[bytes], None],
        close: Callable[[int, str], None],
        user: str | None = None,
    ) -> tuple[RoomState, Player]:
        """Add a player: presence, ``connected`` to it, ``joined`` to the others."""
        room = self._room(slug)
        room.joining += 1
        try:
            await room.ready.wait()
            self._next += 1
            player = Player(self._next, client, address, deliver, direct, close, user)
            await self.hub.presence.join(room.topic, player.info(self.node), ttl=self.lease_ttl)
            count = len(await self.players(room.topic))
        except BaseException:
            room.joining -= 1
            self._forget_if_idle(room)
            raise
        room.joining -= 1
        hello = {"ip": address, "playerCount": count, "id": player.id}
        player.direct(frame("connected", orjson.dumps(hello).decode(), player.id))
        room.players[player.id] = player
        room.joins += 1
        room.players_changed = True
        text = {"text": f"{player.id} has joined. Connections open: {count}"}
        await self._send(room, frame("joined", orjson.dumps(text).decode(), player.id), player.id)
        self._ensure_session(room)
        return room, player

    async def renew(self, room: RoomState, player: Player) -> None:
        """Renew the player's presence lease (every liveness tick of its node)."""
        if room.players.get(player.id) is player:
            await self.hub.presence.join(room.topic, player.info(self.node), ttl=self.lease_ttl)

    async def leave(self, room: RoomState, player: Player) -> None:
        """The player's socket closed: ghost or drop its world entries, tell the others."""
        if room.players.pop(player.id, None) is None:
            return
        room.players_changed = True
        self.release(player.address, room.slug)
        try:
            await self.hub.presence.leave(room.topic, player.client)
            ghosted, dropped = False, []
            for piece in sorted(player.pieces):
                world = room.worlds.get(piece, {})
                entry = world.get(player.id)
                if entry is None:
                    continue
                if entry.handle.startswith("@") and len(world) > 1:
                    ghosted = True
                    op: list[Any] = ["ghost", piece, player.id]
                    self._apply(room, op)
                    await self._send(room, frame(f"world:{piece}:ghost", {}, player.id), None, op)
                    room.ghosts[(piece, player.id)] = asyncio.get_running_loop().call_later(
                        self.config.ghost_seconds, self._kick_later, room, piece, player.id
                    )
                else:
                    dropped.append(piece)
            drop: list[Any] | None = ["drop", player.id, dropped] if dropped else None
            if drop is not None:
                self._apply(room, drop)
            if ghosted:
                if drop is not None:
                    await self._send(room, b"", None, drop)
            else:
                count = len(await self.players(room.topic))
                await self._send(room, frame("left", {"count": count}, player.id), None, drop)
        finally:
            if not room.players:
                await self._flush_room(room)
            self._forget_if_idle(room)

    def _kick_later(self, room: RoomState, piece: str, pid: int) -> None:
        self.spawn(self._kick(room, piece, pid))

    async def _kick(self, room: RoomState, piece: str, pid: int) -> None:
        if room.ghosts.pop((piece, pid), None) is None:
            return  # came back meanwhile
        entry = room.worlds.get(piece, {}).get(pid)
        if entry is not None and entry.state.get("ghost"):
            op: list[Any] = ["drop", pid, [piece]]
            self._apply(room, op)
            await self._send(room, frame(f"world:{piece}:kick", {}, pid), None, op)
        self._forget_if_idle(room)

    def _forget_if_idle(self, room: RoomState) -> None:
        if room.busy() or self.rooms.get(room.slug) is not room:
            return
        del self.rooms[room.slug]
        if room.unsubscribe is not None:
            room.unsubscribe()
        if room.unwatch is not None:
            room.unwatch()
        if room.session_id is not None:
            self._by_session.pop(room.session_id, None)

    # -- messages -----------------------------------------------------------------------

    async def receive(self, room: RoomState, player: Player, payload: bytes) -> None:
        """One message from a player, relayed as the upstream server does."""
        try:
            msg = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.invalid_total += 1
            return
        mtype = msg.get("type") if isinstance(msg, dict) else None
        if not isinstance(mtype, str):
            self.invalid_total += 1
            return
        content = msg.get("content")
        msg["id"] = player.id
        if isinstance(content, dict):
            await self._identify(room, player, mtype, content)
        if mtype in ("login", "location:broadcast") or mtype in SILENT:
            return
        room.messages += 1
        self.messages_total += 1
        if mtype == "scream":
            await self._send(room, frame("scream", content, "screamer"), None)
        elif mtype.startswith("world:") and mtype.count(":") >= 2:
            await self._world(room, player, mtype, msg, content)
        else:
            await self._send(room, orjson.dumps(msg), None)

    async def _identify(
        self, room: RoomState, player: Player, mtype: str, content: dict[str, Any]
    ) -> None:
        user = content.get("user")
        sub = user.get("sub") if isinstance(user, dict) else None
        handle = content.get("handle")
        before = (player.user, player.handle)
        if isinstance(sub, str) and sub:
            player.user = sub[:200]
        if isinstance(handle, str) and handle and (sub or mtype == "location:broadcast"):
            player.handle = handle[:100]
        slug = content.get("slug")
        if mtype == "location:broadcast" and isinstance(slug, str) and slug != "*keep-alive*":
            player.location = slug[:200]
        if (player.user, player.handle) != before and room.players.get(player.id) is player:
            room.players_changed = True
            await self.hub.presence.join(room.topic, player.info(self.node), ttl=self.lease_ttl)

    async def _world(
        self, room: RoomState, player: Player, mtype: str, msg: dict[str, Any], content: Any
    ) -> None:
        parts = mtype.split(":")
        piece, label = parts[1], parts[-1]
        entry = room.worlds.get(piece, {}).get(player.id)
        op: list[Any] | None = None
        if label == "join":
            if piece not in player.pieces and len(player.pieces) >= MAX_PIECES:
                return
            op = ["join", piece, player.id, dict(content) if isinstance(content, dict) else {}]
            self._apply(room, op)
            player.pieces.add(piece)
            listing = {str(i): e.state for i, e in room.worlds.get(piece, {}).items()}
            player.direct(frame(f"world:{piece}:list", listing, player.id))
        elif label == "move" and entry is not None:
            op = [
                "move",
                piece,
                player.id,
                content.get("pos") if isinstance(content, dict) else None,
            ]
        elif label in ("show", "hide") and entry is not None:
            op = ["show", piece, player.id, content if label == "show" else None]
        if op is not None and label != "join":
            self._apply(room, op)
        # Every world message goes to the others, but ``write`` (a chat line) to everyone.
        exclude = None if label == "write" else player.id
        await self._send(room, orjson.dumps(msg), exclude, op)

    def _apply(self, room: RoomState, op: list[Any]) -> None:
        """Apply one world change (the same function on every node)."""
        what = op[0]
        if what == "join":
            piece, pid, state = op[1], int(op[2]), op[3]
            world = room.worlds.setdefault(piece, {})
            handle = state.get("handle") if isinstance(state, dict) else None
            if isinstance(handle, str) and handle.startswith("@"):
                for other, e in list(world.items()):
                    if other != pid and e.state.get("ghost") and e.handle == handle:
                        del world[other]  # the same handle is back: the ghost is gone
                        timer = room.ghosts.pop((piece, other), None)
                        if timer is not None:
                            timer.cancel()
            node = str(op[4]) if len(op) > 4 else self.node
            world[pid] = Entry(state if isinstance(state, dict) else {}, node)
        elif what in ("move", "show", "ghost"):
            entry = room.worlds.get(op[1], {}).get(int(op[2]))
            if entry is not None:
                if what == "move":
                    entry.state["pos"] = op[3]
                elif what == "show":
                    entry.state["showing"] = op[3]
                else:
                    entry.state["ghost"] = True
        elif what == "drop":
            pid = int(op[1])
            for piece in op[2]:
                entries = room.worlds.get(piece)
                if entries is not None:
                    entries.pop(pid, None)
                    if not entries:
                        del room.worlds[piece]

    # -- the wire between nodes ---------------------------------------------------------

    async def _send(
        self, room: RoomState, data: bytes, exclude: int | None, op: list[Any] | None = None
    ) -> None:
        """Send ``data`` to the room's players on every node (but ``exclude``), with ``op``
        for the other nodes' replicas. Envelope: ``F <node> <exclude|-> <0|1>\\n[op\\n]frame``."""
        if op is not None and op[0] == "join":
            op = [*op, self.node]
        head = b"F %s %s %d\n" % (
            self.node.encode(),
            b"-" if exclude is None else str(exclude).encode(),
            0 if op is None else 1,
        )
        body = head + (orjson.dumps(op) + b"\n" if op is not None else b"") + data
        await self._broadcast(room, body)

    async def _broadcast(self, room: RoomState, body: bytes) -> None:
        try:
            await self.hub.broker.broadcast(room.traffic, body)
        except Exception:
            log.warning("room %r: broadcast failed", room.slug, exc_info=True)

    def _on_traffic(self, pub: Publication) -> None:
        room = self.rooms.get(pub.topic.removeprefix("relay:room:"))
        if room is None:
            return
        try:
            head, _, rest = pub.data.partition(b"\n")
            what, origin, target, has_op = head.split(b" ")
            mine = origin.decode() == self.node
            if what == b"F":
                data = rest
                if has_op == b"1":
                    raw, _, data = rest.partition(b"\n")
                    if not mine:
                        self._apply(room, orjson.loads(raw))
                if data:
                    self._deliver(room, data, None if target == b"-" else int(target))
            elif what == b"Q" and not mine and room.busy():
                own = {
                    piece: {str(i): e.state for i, e in world.items() if e.node == self.node}
                    for piece, world in room.worlds.items()
                }
                body = b"S %s %s 1\n" % (self.node.encode(), origin) + orjson.dumps(own)
                self.spawn(self._broadcast(room, body))
            elif what == b"S" and not mine:
                for piece, entries in orjson.loads(rest).items():
                    world = room.worlds.setdefault(piece, {})
                    for pid, state in entries.items():
                        world.setdefault(int(pid), Entry(state, origin.decode()))
                room.awaiting.discard(origin.decode())
                if not room.awaiting:
                    room.answered.set()
        except Exception:
            log.warning("room %r: bad relay message", room.slug, exc_info=True)

    def _deliver(self, room: RoomState, data: bytes, exclude: int | None) -> None:
        item = self.encode(data)  # framed once, the same object for every player here
        for pid, player in room.players.items():  # deliver() only queues: no change here
            if pid != exclude:
                player.deliver(item)

    def _on_presence(self, event: PresenceEvent) -> None:
        # A player's node died (its lease lapsed): nobody else will say ``left`` for it.
        if event.joined or event.reason != "lost" or node_of(event.info) == self.node:
            return
        room = self.rooms.get(event.topic.removeprefix("room:"))
        if room is not None:
            self.spawn(self._lost(room, event.info))

    async def _lost(self, room: RoomState, info: ClientInfo) -> None:
        try:
            pid = int(orjson.loads(info.conn_info or b"{}").get("id"))
        except (TypeError, ValueError, orjson.JSONDecodeError):
            return
        self._apply(room, ["drop", pid, list(room.worlds)])
        count = len(await self.players(room.topic))
        self._deliver(room, frame("left", {"count": count}, pid), None)
