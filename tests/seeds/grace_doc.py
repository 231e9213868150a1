"""The Grace document's (seed 004) examples, verbatim, and a field-by-field comparison.

The badges are kept exactly as the document prints them: its emoji were saved as UTF-8 and
read back as cp1254 (so "🔓" shows as "ğŸ”“"; bytes cp1254 cannot show are gone).
``as_document_prints`` applies the same damage to our emoji so the two can be compared.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

#: The document's examples start at this time; tests set their clock to it.
DOC_START = datetime(2025, 11, 18, 12, 0, 0, tzinfo=UTC)

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$")
IDS = {
    "remote_": re.compile(r"^remote_[0-9a-f]{8}$"),
    "screen_": re.compile(r"^screen_[0-9a-f]{8}$"),
}

REMOTE_ID = "remote_a1b2c3d4"
SCREEN_ID = "screen_5f6g7h8i"

START_REMOTE_REQUEST = {"user_id": "user", "safety_mode": "supervised", "metadata": {}}
START_REMOTE = {
    "success": True,
    "session_id": "remote_a1b2c3d4",
    "status": "active",
    "requires_approval": False,
    "message": "Session created successfully",
}
STOP_REMOTE_REQUEST = {"reason": "User requested"}
STOP_REMOTE = {
    "success": True,
    "session_id": "remote_a1b2c3d4",
    "status": "stopped",
    "commands_executed": 42,
    "duration_seconds": 1234.5,
}
STATUS_ACTIVE = {
    "session_id": "remote_a1b2c3d4",
    "status": "active",
    "type": "remote_access",
    "user_id": "user",
    "safety_mode": "supervised",
    "started_at": "2025-11-18T12:00:00",
    "duration_seconds": 345.6,
    "commands_executed": 12,
    "last_activity": "2025-11-18T12:05:45",
}
STATUS_STOPPED = {
    "session_id": "remote_a1b2c3d4",
    "status": "stopped",
    "stopped_at": "2025-11-18T12:10:00",
    "stop_reason": "User requested",
    "duration_seconds": 600.0,
}
APPROVE = {"success": True, "session_id": "remote_a1b2c3d4", "status": "active"}
START_SCREEN_REQUEST = {"user_id": "user", "quality": "medium", "metadata": {}}
START_SCREEN = {
    "success": True,
    "session_id": "screen_5f6g7h8i",
    "status": "active",
    "stream_url": "/stream/screen_5f6g7h8i",
    "quality": "medium",
}
STOP_SCREEN = {
    "success": True,
    "session_id": "screen_5f6g7h8i",
    "status": "stopped",
    "frames_captured": 5432,
    "duration_seconds": 789.1,
}
STATUS_SCREEN = {
    "session_id": "screen_5f6g7h8i",
    "status": "active",
    "type": "screen_share",
    "user_id": "user",
    "quality": "medium",
    "stream_url": "/stream/screen_5f6g7h8i",
    "started_at": "2025-11-18T12:15:00",
    "duration_seconds": 234.5,
    "frames_captured": 1234,
}
HEARTBEAT = {"success": True}
CHECK_DROPPED = {"dropped_sessions": ["remote_a1b2c3d4", "screen_5f6g7h8i"], "count": 2}
HISTORY_ITEM = {
    "session_id": "remote_a1b2c3d4",
    "type": "remote_access",
    "status": "stopped",
    "started_at": "2025-11-18T12:00:00",
    "stopped_at": "2025-11-18T12:10:00",
    "stop_reason": "User requested",
    "duration_seconds": 600.0,
    "commands_executed": 42,
}

NOTIFICATIONS: dict[str, dict[str, Any]] = {
    "remote_session_started": {
        "event": "remote_session_started",
        "data": {
            "session_id": "remote_a1b2c3d4",
            "user_id": "user",
            "message": "Remote access session started (supervised mode)",
            "badge": "ğŸ”“",
            "timestamp": "2025-11-18T12:00:00",
        },
    },
    "remote_session_approval_needed": {
        "event": "remote_session_approval_needed",
        "data": {
            "session_id": "remote_a1b2c3d4",
            "user_id": "user",
            "safety_mode": "autonomous",
            "message": "Remote access session remote_a1b2c3d4 needs approval (autonomous mode)",
            "badge": "ğŸ”",
            "timestamp": "2025-11-18T12:00:00",
        },
    },
    "remote_session_approved": {
        "event": "remote_session_approved",
        "data": {
            "session_id": "remote_a1b2c3d4",
            "user_id": "user",
            "message": "Remote access session approved and activated",
            "badge": "âœ…",
            "timestamp": "2025-11-18T12:01:00",
        },
    },
    "remote_session_stopped": {
        "event": "remote_session_stopped",
        "data": {
            "session_id": "remote_a1b2c3d4",
            "user_id": "user",
            "message": "Remote access session stopped: User requested",
            "badge": "ğŸ”’",
            "timestamp": "2025-11-18T12:10:00",
        },
    },
    "screen_share_started": {
        "event": "screen_share_started",
        "data": {
            "session_id": "screen_5f6g7h8i",
            "user_id": "user",
            "quality": "medium",
            "message": "Screen share session started (medium quality)",
            "badge": "ğŸ“º",
            "timestamp": "2025-11-18T12:15:00",
        },
    },
    "screen_share_stopped": {
        "event": "screen_share_stopped",
        "data": {
            "session_id": "screen_5f6g7h8i",
            "user_id": "user",
            "message": "Screen share session ended",
            "badge": "ğŸ“º",
            "timestamp": "2025-11-18T12:25:00",
        },
    },
    "remote_access_dropped": {
        "event": "remote_access_dropped",
        "data": {
            "session_id": "remote_a1b2c3d4",
            "user_id": "user",
            "message": "remote_access session dropped (inactive)",
            "badge": "âš\xa0ï¸",
            "timestamp": "2025-11-18T12:30:00",
        },
    },
}


def as_document_prints(text: str) -> str:
    """Our text as the document shows it: UTF-8 bytes read as cp1254, unknown bytes lost."""
    return text.encode("utf-8").decode("cp1254", errors="ignore")


def _same_type(doc: Any, ours: Any) -> bool:
    if isinstance(doc, bool) or isinstance(ours, bool):
        return isinstance(doc, bool) and isinstance(ours, bool)
    if isinstance(doc, float):
        return isinstance(ours, float)
    if isinstance(doc, int):
        return isinstance(ours, int)
    return isinstance(ours, type(doc))


def like(ours: dict[str, Any], doc: dict[str, Any], *, same: tuple[str, ...] = ()) -> None:
    """Assert ``ours`` has exactly the document's fields, each of the same JSON type;
    timestamps in the document's format, ids in its pattern, and ``same`` fields equal."""
    assert set(ours) == set(doc), f"fields differ: ours {sorted(ours)} vs document {sorted(doc)}"
    for key, expected in doc.items():
        value = ours[key]
        assert _same_type(expected, value), f"{key}: {value!r} is not like {expected!r}"
        if isinstance(expected, str) and TIMESTAMP.match(expected):
            assert TIMESTAMP.match(value), f"{key}: {value!r} is not a naive ISO timestamp"
        if isinstance(expected, str):
            for prefix, pattern in IDS.items():
                if expected.startswith(prefix) and len(expected) == len(prefix) + 8:
                    assert pattern.match(value), f"{key}: {value!r} is not a {prefix} id"
        if isinstance(expected, dict):
            like(value, expected)
    for key in same:
        assert ours[key] == doc[key], f"{key}: {ours[key]!r} != document's {doc[key]!r}"
