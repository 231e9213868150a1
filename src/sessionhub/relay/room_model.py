"""What one node knows of a room: its players here, the replicated worlds, the framing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson

from ..core.streams import ClientInfo
from ..kinds import room as kind


class Player:
    """One room socket. The transport gives it ``deliver`` (a frame shared by every player
    of this node: the object ``encode`` made), ``direct`` (bytes for this player alone) and
    ``close``; the relay fills in identity from what the client says."""

    __slots__ = (
        "address",
        "client",
        "close",
        "deliver",
        "direct",
        "handle",
        "id",
        "location",
        "pieces",
        "user",
    )

    def __init__(
        self,
        pid: int,
        client: str,
        address: str,
        deliver: Callable[[object], None],
        direct: Callable[[bytes], None],
        close: Callable[[int, str], None],
        user: str | None = None,
    ) -> None:
        self.id, self.client, self.address = pid, client, address
        self.deliver, self.direct, self.close = deliver, direct, close
        self.user: str | None = user
        self.handle: str | None = None
        self.location: str | None = None
        self.pieces: set[str] = set()

    def info(self, node: str) -> ClientInfo:
        about = {"id": self.id, "handle": self.handle, "node": node, "wire": "room"}
        who = self.user or self.handle or "anonymous"
        return ClientInfo(self.client, who, orjson.dumps(about))


class Entry:
    """A player's entry in one world: the join content and what later messages changed."""

    __slots__ = ("node", "state")

    def __init__(self, state: dict[str, Any], node: str) -> None:
        self.state, self.node = state, node

    @property
    def handle(self) -> str:
        h = self.state.get("handle")
        return h if isinstance(h, str) else ""


class RoomState:
    """One room as this node follows it."""

    def __init__(self, slug: str) -> None:
        self.slug = slug
        self.topic = kind.topic(slug)
        self.traffic = f"relay:room:{slug}"
        self.players: dict[int, Player] = {}
        self.worlds: dict[str, dict[int, Entry]] = {}
        #: (piece, id) -> the kick timer of a ghost this node owns.
        self.ghosts: dict[tuple[str, int], asyncio.TimerHandle] = {}
        self.ready = asyncio.Event()
        #: Nodes whose world entries are awaited; ``answered`` is set once none is left.
        self.awaiting: set[str] = set()
        self.answered = asyncio.Event()
        self.joining = 0
        self.session_id: str | None = None
        self.acquiring: asyncio.Task[None] | None = None
        self.messages = self.joins = self.dropped = 0
        self.players_changed = False
        #: The most players seen at once in the live session (its ``peak_players``).
        self.peak = 0
        self.unsubscribe: Callable[[], None] | None = None
        self.unwatch: Callable[[], None] | None = None

    def busy(self) -> bool:
        return bool(self.players or self.ghosts or self.joining)


def frame(type_: str, content: Any, pid: int | str) -> bytes:
    """One message in the upstream shape ``{"type", "content", "id"}``."""
    return orjson.dumps({"type": type_, "content": content, "id": pid})


def about_of(info: ClientInfo) -> dict[str, Any]:
    try:
        about = orjson.loads(info.conn_info or b"{}")
    except orjson.JSONDecodeError:
        return {}
    return about if isinstance(about, dict) else {}


def node_of(info: ClientInfo) -> str:
    return str(about_of(info).get("node") or "")


def handle_of(info: ClientInfo) -> str:
    about = about_of(info)
    return str(about.get("handle") or about.get("id") or "")
