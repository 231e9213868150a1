"""``remote_access``: an agent's remote access to a user's machine (Grace, seed 004).

Lifecycle (forward only)::

    pending_approval --approve (admin)--> active --stop--> stopped
           |                                 \\--drop (system, no heartbeat)--> dropped
           |--deny (admin)--> denied
           |--expire (system, nobody approved within 15 minutes)--> denied
           \\--stop (owner/admin)--> stopped

``safety_mode`` decides the start: ``autonomous`` waits in ``pending_approval`` for an admin;
``supervised`` and ``read_only`` start ``active``. The mode also governs commands (see
``features/remote.py``): supervised holds each command for approval, read_only refuses
writes, autonomous runs them. ``commands_executed`` is a session counter.

This module also holds the small helpers both Grace kinds share (``naive_iso``, the
notification envelope), so ``screen_share`` imports them from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from ..core.kind import Attr, Kind
from ..core.lifecycle import Lifecycle, dropped_when_silent, transition
from ..core.model import CREATED, JSON, STATE_CHANGED, Event, Session

SAFETY_MODES = ("supervised", "autonomous", "read_only")

#: The document's badges. Its text shows them mis-decoded (UTF-8 read as cp1254, e.g. "ğŸ”“");
#: these are the emoji those bytes spell.
BADGE_STARTED = "\U0001f513"  # 🔓 open lock
BADGE_APPROVAL = "\U0001f510"  # 🔐 lock with key
BADGE_APPROVED = "\u2705"  # ✅
BADGE_STOPPED = "\U0001f512"  # 🔒 closed lock
BADGE_DENIED = "\U0001f6ab"  # 🚫 (ours: the document has no denied event)
BADGE_DROPPED = "\u26a0\ufe0f"  # ⚠️

#: Key of a notification dict telling the notifier to also address every admin.
NOTIFY_ADMINS = "notify_admins"

#: Reason text for an end without a free-text detail (``stop_reason`` and messages).
REASON_TEXT = {
    "stopped": "User requested",
    "denied": "Denied by an admin",
    "heartbeat_timeout": "Session dropped (inactive)",
    "approval_timeout": "Not approved in time",
}


def naive_iso(ts: datetime | None) -> str | None:
    """The document's timestamp style: UTC, no offset, whole seconds ("2025-11-18T12:00:00")."""
    if ts is None:
        return None
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return ts.replace(microsecond=0).isoformat()


def stop_reason(session: Session) -> str | None:
    """Why an ended session ended: the caller's text, else a readable form of the reason code."""
    if session.end_detail:
        return session.end_detail
    if session.end_reason is None:
        return None
    return REASON_TEXT.get(session.end_reason, session.end_reason)


def notification(event: Event, name: str, message: str, badge: str, **fields: Any) -> JSON:
    """``{"event", "data": {session_id, user_id, <fields>, message, badge, timestamp}}``."""
    data: JSON = {"session_id": event.session_id, "user_id": event.owner}
    data.update(fields)
    data.update({"message": message, "badge": badge, "timestamp": naive_iso(event.at)})
    return {"event": name, "data": data}


def snapshot(event: Event) -> JSON:
    """The session snapshot every event carries (``data.session``)."""
    value = event.data.get("session")
    return value if isinstance(value, dict) else {}


def dropped_notification(event: Event) -> JSON:
    """``<kind>_dropped``: the same shape for every Grace kind."""
    return notification(
        event,
        f"{event.kind}_dropped",
        f"{event.kind} session dropped (inactive)",
        BADGE_DROPPED,
    )


class RemoteAccess(Kind):
    """Policy of a remote access session. Pure: no I/O, time comes with the event."""

    name = "remote_access"
    id_prefix = "remote"
    # Commands live here (features/remote.py); the generic API may not touch them.
    reserved_metadata = frozenset({"_commands"})
    id_bytes = 4
    attributes: ClassVar[Mapping[str, Attr]] = {
        "safety_mode": Attr(str, choices=SAFETY_MODES, default="supervised", mutable=False),
    }
    lifecycle = Lifecycle(
        states=("pending_approval", "active", "stopped", "denied", "dropped"),
        initial=frozenset({"pending_approval", "active"}),
        ended=frozenset({"stopped", "denied", "dropped"}),
        transitions=(
            transition("approve", "pending_approval", "active", roles=("admin",)),
            transition("deny", "pending_approval", "denied", roles=("admin",), reason="denied"),
            transition("stop", ("pending_approval", "active"), "stopped", reason="stopped"),
            dropped_when_silent(),
            transition(
                "expire", "pending_approval", "denied", roles=("system",), reason="approval_timeout"
            ),
        ),
    )
    # Nobody approved it: the request is denied rather than left pending forever (the
    # requester may have gone away, and a late approval would surprise them).
    wait_timeout = timedelta(minutes=15)
    wait_states = frozenset({"pending_approval"})
    wait_action = "expire"
    wait_reason = "approval_timeout"
    # The document: heartbeat every 30 s, dropped after 5 minutes without one.
    heartbeat_timeout = timedelta(minutes=5)
    # A session waiting for an admin is not expected to heartbeat, so it is never dropped.
    heartbeat_states = frozenset({"active"})
    # Commands (text an agent runs on someone's machine) live in the metadata, which the
    # store encrypts at rest like every session's when SESSIONHUB_ENCRYPTION_KEYS is set.

    def initial_state(self, attributes: JSON) -> str:
        return "pending_approval" if attributes.get("safety_mode") == "autonomous" else "active"

    def view(self, session: Session) -> JSON:
        return {
            "safety_mode": session.attributes.get("safety_mode"),
            "commands_executed": session.counters.get("commands_executed", 0),
            "requires_approval": session.state == "pending_approval",
        }

    def notifications(self, event: Event, before: Session | None) -> list[JSON]:
        """The document's events; built from the event alone so a replay yields the same."""
        snap = snapshot(event)
        mode = (snap.get("attributes") or {}).get("safety_mode", "supervised")
        if event.type == CREATED:
            if event.data.get("state") == "pending_approval":
                note = notification(
                    event,
                    "remote_session_approval_needed",
                    f"Remote access session {event.session_id} needs approval ({mode} mode)",
                    BADGE_APPROVAL,
                    safety_mode=mode,
                )
                note[NOTIFY_ADMINS] = True
                return [note]
            return [
                notification(
                    event,
                    "remote_session_started",
                    f"Remote access session started ({mode} mode)",
                    BADGE_STARTED,
                )
            ]
        if event.type != STATE_CHANGED:
            return []
        to = event.data.get("to")
        detail = event.data.get("detail")
        if to == "active" and event.data.get("action") == "approve":
            return [
                notification(
                    event,
                    "remote_session_approved",
                    "Remote access session approved and activated",
                    BADGE_APPROVED,
                )
            ]
        if to == "stopped":
            reason = detail or REASON_TEXT["stopped"]
            return [
                notification(
                    event,
                    "remote_session_stopped",
                    f"Remote access session stopped: {reason}",
                    BADGE_STOPPED,
                )
            ]
        if to == "denied":
            if event.data.get("reason") == "approval_timeout":
                detail = detail or REASON_TEXT["approval_timeout"]
            suffix = f": {detail}" if detail else ""
            return [
                notification(
                    event,
                    "remote_session_denied",
                    f"Remote access session {event.session_id} was denied{suffix}",
                    BADGE_DENIED,
                )
            ]
        if to == "dropped":
            return [dropped_notification(event)]
        return []
