"""``room``: one live multiplayer room per slug (Aesthetic Computer's session server, seed 003).

A room session exists while its slug has anyone in it: the room relay
(``relay/rooms.py``) creates it on the first join, keeps it alive while players remain and
lets it end ``idle_timeout`` (the grace period, 60 s by default) after the last player left:
the relay's writes and heartbeats move ``last_activity_at`` while anyone plays, so the
scheduler's ordinary idle sweep ends a room nobody is in (reason ``idle_timeout``), also when
the node holding its players died. One slug has at most one live session cluster-wide: each
"generation" of a slug is created with the idempotency key ``room:<slug>:<generation>``,
so nodes racing to create it get the same session.

Lifecycle: ``active`` --end--> ``ended`` (an admin, or the idle sweep). Attributes: ``slug``
and ``generation`` (fixed at creation), ``players`` (players present, as presence on
``room:<slug>`` last said) and ``handles`` (who they are, at most ``MAX_HANDLES``), with
``peak_players``; counters ``messages`` (relayed), ``joins`` and ``dropped`` (over a
connection's rate limit). The relay writes them in batches, never once per message.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import ClassVar
from urllib.parse import quote

from ..core.kind import Attr, Kind
from ..core.lifecycle import Lifecycle, transition
from ..core.model import JSON, Session

NAME = "room"
#: The room everyone shares who connects to the upstream path (old clients); also
#: reachable as ``/room/*``.
SHARED = "*"
#: Longest slug accepted (the idempotency key must stay within 200 characters).
MAX_SLUG = 150
#: Handles kept in the ``handles`` attribute (the count is always exact).
MAX_HANDLES = 50
#: How long an empty room lives on before it ends, unless configured otherwise.
DEFAULT_GRACE = timedelta(seconds=60)


def topic(slug: str) -> str:
    """The presence topic of a room: its players, visible to SDK subscribers."""
    return f"room:{slug}"


def socket_path(slug: str) -> str:
    """The WebSocket path of a room on this server."""
    return f"/room/{quote(slug, safe='')}"


def idempotency_key(slug: str, generation: int) -> str:
    """The key that makes one generation of a slug's room unique across nodes."""
    return f"room:{slug}:{generation}"


def valid_slug(slug: str) -> bool:
    """A slug is 1 to ``MAX_SLUG`` printable characters without a slash."""
    return 0 < len(slug) <= MAX_SLUG and slug.isprintable() and "/" not in slug


class Room(Kind):
    """Policy of a room session."""

    name = NAME
    id_prefix = "room"
    attributes: ClassVar[Mapping[str, Attr]] = {
        "slug": Attr(str, required=True, max_length=MAX_SLUG, mutable=False),
        "generation": Attr(int, default=0, mutable=False),
        "players": Attr(int, default=0),
        "peak_players": Attr(int, default=0),
        "handles": Attr(list, default=None),
    }
    lifecycle = Lifecycle(
        states=("active", "ended"),
        initial=frozenset({"active"}),
        ended=frozenset({"ended"}),
        transitions=(
            transition("end", "active", "ended", roles=("admin", "system"), reason="ended"),
        ),
    )
    #: The grace period: a room nobody writes to or heartbeats for this long has been empty
    #: that long (the relay heartbeats every room with players), so the sweep ends it.
    idle_timeout = DEFAULT_GRACE
    idle_action = "end"
    heartbeat_states = frozenset({"active"})
    archive_after = None
    #: Ended rooms are deleted a day later (their counts live on in the event log until then).
    delete_after = timedelta(days=1)
    delete_from = frozenset({"ended"})

    def view(self, session: Session) -> JSON:
        slug = str(session.attributes.get("slug") or "")
        return {
            "slug": slug,
            "socket_path": socket_path(slug),
            "presence_topic": topic(slug),
            "players": session.attributes.get("players", 0),
            "messages": session.counters.get("messages", 0),
        }
