"""Topics of an event and who may subscribe to a topic."""

from __future__ import annotations

import orjson

from .model import DELETED, Event
from .principal import Principal

ALL = "sessions"
_DELETED = DELETED.encode()


def session_topics(session_id: str, kind: str, owner: str) -> tuple[str, ...]:
    """Every topic an event about this session is published on."""
    return (ALL, f"sessions:{kind}", f"session:{session_id}", f"user:{owner}")


def event_topics(event: Event) -> tuple[str, ...]:
    return session_topics(event.session_id, event.kind, event.owner)


def parse(topic: str) -> tuple[str, str | None]:
    """``"session:abc"`` -> ``("session", "abc")``; ``"sessions"`` -> ``("sessions", None)``."""
    prefix, sep, rest = topic.partition(":")
    return prefix, (rest if sep else None)


def static_permission(principal: Principal, topic: str) -> bool | None:
    """True/False where the topic alone decides, None where the session's owner must be looked up.

    Admins read everything. ``sessions`` and ``sessions:<kind>`` carry every user's sessions,
    so they are for admins only; ``user:<id>`` is for that user; ``session:<id>`` for its owner;
    ``room:<slug>`` (who is playing in a room) for anyone signed in: rooms are open spaces.
    """
    if principal.is_admin:
        return True
    prefix, rest = parse(topic)
    if prefix == "user":
        return rest == principal.sub
    if prefix == "session" and rest:
        return None
    if prefix == "notifications":
        return rest in (None, principal.sub)
    return prefix == "room" and bool(rest)


def ends_topic(topic: str, data: bytes) -> bool:
    """Whether publication ``data`` on ``topic`` is the last that topic will carry: the
    ``session.deleted`` event on its ``session:<id>`` topic (its subscriptions end after it)."""
    if not topic.startswith("session:") or _DELETED not in data:
        return False
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(event, dict) and event.get("type") == DELETED
