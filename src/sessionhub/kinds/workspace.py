"""``workspace``: a user's persistent JamBot workspace (seed 002).

``active`` until the user completes it (or starts another one), ``abandoned`` after 24 h
without activity, ``archived`` 7 days after being abandoned (or when the user archives it),
deleted 90 days after archiving. Every age is a kind timeout, so ``SESSIONHUB_KIND_TIMEOUTS``
changes it. The status values are JamBot's ``UserSessionStatus`` enum values, lowercase.

The chat lives in its own table (``features/workspaces.py``); ``session_metadata`` is the
session's metadata, which the store encrypts at rest when a key is configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import ClassVar

from ..core.kind import Attr, Kind
from ..core.lifecycle import Lifecycle, transition
from ..core.model import JSON, Session

ACTIVE = "active"
COMPLETED = "completed"
ABANDONED = "abandoned"
ARCHIVED = "archived"
STATUSES = (ACTIVE, COMPLETED, ABANDONED, ARCHIVED)


def chat_id_for(session_id: str) -> str:
    """The id of a workspace's chat. A workspace has exactly one chat, so it is derived."""
    return "chat_" + session_id.removeprefix("ws_")


def user_id_for(owner: str) -> int | str:
    """JamBot's ``user_id`` is an integer; numeric token subjects are returned as one."""
    return int(owner) if owner.isdigit() and len(owner) < 19 else owner


class Workspace(Kind):
    name = "workspace"
    id_prefix = "ws"
    attributes: ClassVar[Mapping[str, Attr]] = {
        "name": Attr(str, max_length=255),
        "mission_id": Attr(str, max_length=64),
        "assets": Attr(list),
    }
    lifecycle = Lifecycle(
        states=STATUSES,
        initial=frozenset({ACTIVE}),
        ended=frozenset({COMPLETED, ABANDONED, ARCHIVED}),
        transitions=(
            transition("complete", ACTIVE, COMPLETED, reason="completed"),
            transition("abandon", ACTIVE, ABANDONED, reason="abandoned"),
            # 002: "ARCHIVED (user action or 7+ days abandoned)".
            transition("archive", (ACTIVE, COMPLETED, ABANDONED), ARCHIVED, reason="archived"),
        ),
    )
    idle_timeout = timedelta(hours=24)
    idle_action = "abandon"
    archive_after = timedelta(days=7)
    archive_from = frozenset({ABANDONED})
    delete_after = timedelta(days=90)
    delete_from = frozenset({ARCHIVED})
    heartbeat_states = frozenset({ACTIVE})

    def view(self, session: Session) -> JSON:
        """JamBot's ``UserSession`` record fields (``id``, ``created_at``, ``updated_at`` and
        ``last_activity_at`` are already in the generic record, with the same meaning)."""
        attrs = session.attributes
        return {
            "user_id": user_id_for(session.owner),
            "name": attrs.get("name") or "Session",
            "status": session.state,
            "chat_id": chat_id_for(session.id),
            "mission_id": attrs.get("mission_id"),
            "session_metadata": session.metadata,
            "assets": attrs.get("assets") or [],
        }
