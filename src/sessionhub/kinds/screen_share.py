"""``screen_share``: a user shares their screen; frames go through the relay at ``stream_url``.

Lifecycle: ``active`` --stop--> ``stopped``; ``active`` --drop (no heartbeat)--> ``dropped``.
``quality`` low | medium | high maps to 640x480@15, 1280x720@30, 1920x1080@60. ``viewers``
lists the users the owner admits to the stream besides the owner and admins.
``frames_captured`` is a counter the relay flushes (see ``features/relay.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import ClassVar

from ..core.kind import Attr, Kind
from ..core.lifecycle import ends_or_drops
from ..core.model import CREATED, JSON, STATE_CHANGED, Event, Session
from .remote_access import dropped_notification, notification, snapshot

BADGE_SCREEN = "\U0001f4fa"  # 📺

#: quality -> (width, height, frames per second), as the document configures them.
QUALITY: Mapping[str, tuple[int, int, int]] = {
    "low": (640, 480, 15),
    "medium": (1280, 720, 30),
    "high": (1920, 1080, 60),
}


def stream_url(session_id: str) -> str:
    """Where the relay serves this share (a path on this server)."""
    return f"/stream/{session_id}"


class ScreenShare(Kind):
    """Policy of a screen share session."""

    name = "screen_share"
    id_prefix = "screen"
    id_bytes = 4
    attributes: ClassVar[Mapping[str, Attr]] = {
        "quality": Attr(str, choices=tuple(QUALITY), default="medium", mutable=False),
        # Users admitted as viewers (None = nobody besides the owner and admins).
        "viewers": Attr(list),
    }
    lifecycle = ends_or_drops("stop", "stopped", reason="stopped")
    heartbeat_timeout = timedelta(minutes=5)
    heartbeat_states = frozenset({"active"})

    def view(self, session: Session) -> JSON:
        width, height, fps = QUALITY.get(session.attributes.get("quality") or "medium", (0, 0, 0))
        return {
            "quality": session.attributes.get("quality"),
            "stream_url": stream_url(session.id),
            "resolution": f"{width}x{height}",
            "fps": fps,
            "frames_captured": session.counters.get("frames_captured", 0),
        }

    def notifications(self, event: Event, before: Session | None) -> list[JSON]:
        if event.type == CREATED:
            quality = (snapshot(event).get("attributes") or {}).get("quality", "medium")
            return [
                notification(
                    event,
                    "screen_share_started",
                    f"Screen share session started ({quality} quality)",
                    BADGE_SCREEN,
                    quality=quality,
                )
            ]
        if event.type != STATE_CHANGED:
            return []
        to = event.data.get("to")
        if to == "stopped":
            return [
                notification(
                    event, "screen_share_stopped", "Screen share session ended", BADGE_SCREEN
                )
            ]
        if to == "dropped":
            return [dropped_notification(event)]
        return []
