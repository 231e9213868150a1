"""The pre-encoded ``/ws/unified`` messages: the document's shapes."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from sessionhub.connectors.nina.messages import (
    connection_message,
    heartbeat_message,
    nina_event_message,
    session_update_message,
    topic,
    unified_message,
)
from sessionhub.connectors.nina.normalize import from_envelope

NOW = datetime(2025, 9, 4, 12, 34, 56, 789000, tzinfo=UTC)


def test_connection_and_heartbeat() -> None:
    hello = orjson.loads(connection_message(NOW, ["nightsky"]))
    assert hello == {
        "type": "connection",
        "timestamp": "2025-09-04T12:34:56.789Z",
        "data": {"message": "Connected to unified session stream", "rigs": ["nightsky"]},
    }
    assert orjson.loads(heartbeat_message(NOW)) == {
        "type": "heartbeat",
        "timestamp": "2025-09-04T12:34:56.789Z",
    }


def test_state_and_event_messages() -> None:
    data = {"session_id": "img_1", "total_images": 45}
    assert orjson.loads(unified_message(data, NOW)) == {
        "type": "unifiedSession",
        "timestamp": "2025-09-04T12:34:56.789Z",
        "data": data,
    }
    assert orjson.loads(session_update_message(data, NOW))["type"] == "sessionUpdate"
    ev = from_envelope({"Response": {"Event": "GUIDER-DITHER"}, "Type": "Socket"}, NOW, UTC)
    message = orjson.loads(nina_event_message("nightsky", ev, NOW))
    assert message["type"] == "nina-event"
    assert message["data"] == {
        "Type": "GUIDER-DITHER",
        "Timestamp": "2025-09-04T12:34:56.789Z",
        "Source": "NINA",
        "Rig": "nightsky",
        "Channel": "socket",
        "Data": {},
    }
    assert topic("nightsky") == "nina:nightsky"
