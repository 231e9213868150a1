"""The ``/ws/unified`` messages (seed 000), pre-encoded once and shared by every client.

Shapes, server to client (JSON text):

- ``{"type": "connection", "timestamp", "data": {"message", "rigs"}}`` first on every
  connection (the document reads ``message.data.message``);
- ``{"type": "unifiedSession", "timestamp", "data": <unified session>}`` with the current
  state right after, and again on every change;
- ``{"type": "sessionUpdate", "timestamp", "data": <the same object>}`` beside every
  ``unifiedSession``, as the upstream server sent it to its older widgets;
- ``{"type": "nina-event", "timestamp", "data": {"Type", "Timestamp", "Source": "NINA",
  "Rig", "Channel", "Data"}}`` for each new normalised rig event (upstream's own shape, plus
  the rig and ``Channel``: ``socket`` for a live event, ``history`` for one caught up from
  the event history after a cut or a restart);
- ``{"type": "heartbeat", "timestamp"}`` every 20 seconds.

The connector publishes ``unifiedSession``, ``sessionUpdate`` and ``nina-event`` on the
broker topic ``nina:<rig>``; the socket sends ``connection`` and ``heartbeat`` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import orjson

from ...core.model import JSON
from ...kinds.imaging import js_time
from .normalize import NinaEvent

CONNECTION = "connection"
UNIFIED = "unifiedSession"
SESSION_UPDATE = "sessionUpdate"
NINA_EVENT = "nina-event"
HEARTBEAT = "heartbeat"


def topic(rig: str) -> str:
    """The broker topic a rig's messages are published on."""
    return f"nina:{rig}"


def _encode(kind: str, now: datetime, data: JSON | None = None) -> bytes:
    message: JSON = {"type": kind, "timestamp": js_time(now)}
    if data is not None:
        message["data"] = data
    return orjson.dumps(message)


def connection_message(
    now: datetime,
    rigs: Sequence[str] = (),
    message: str = "Connected to unified session stream",
) -> bytes:
    """The first message of a ``/ws/unified`` connection."""
    return _encode(CONNECTION, now, {"message": message, "rigs": list(rigs)})


def heartbeat_message(now: datetime) -> bytes:
    """The keep-alive ``/ws/unified`` sends every 20 seconds."""
    return _encode(HEARTBEAT, now)


def unified_message(data: JSON, now: datetime) -> bytes:
    return _encode(UNIFIED, now, data)


def session_update_message(data: JSON, now: datetime) -> bytes:
    return _encode(SESSION_UPDATE, now, data)


def nina_event_message(rig: str, ev: NinaEvent, now: datetime) -> bytes:
    data: JSON = {
        "Type": ev.type,
        "Timestamp": js_time(ev.time),
        "Source": "NINA",
        "Rig": rig,
        "Channel": ev.source,
        "Data": ev.fields,
    }
    return _encode(NINA_EVENT, now, data)
