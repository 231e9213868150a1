"""The session and event records. Immutable values: every change makes a new one."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

JSON = dict[str, Any]


def iso(ts: datetime | None) -> str | None:
    """UTC ISO-8601 with a ``Z`` suffix, or None."""
    if ts is None:
        return None
    if ts.tzinfo is not UTC:  # already UTC is the common case: no conversion then
        ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    # orjson writes the same text as ``isoformat()`` with ``Z`` (fraction only when there are
    # microseconds) in a third of the time; a session's answer and its event carry a dozen.
    try:
        return orjson.dumps(ts, option=orjson.OPT_UTC_Z)[1:-1].decode()
    except orjson.JSONEncodeError:  # a datetime subclass orjson does not take
        return ts.isoformat().replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """Parse an ISO-8601 timestamp; naive values are taken as UTC."""
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Session:
    """One session of some kind.

    ``version`` rises by exactly one on every change (create is version 1). Heartbeats are
    not changes: they only move ``last_activity_at`` and are coalesced by the hub.
    """

    id: str
    kind: str
    owner: str
    state: str
    version: int
    created_at: datetime
    updated_at: datetime
    last_activity_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    end_detail: str | None = None
    attributes: JSON = field(default_factory=dict)
    metadata: JSON = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def evolve(self, **changes: Any) -> Session:
        return replace(self, **changes)

    def duration_seconds(self, now: datetime) -> float:
        """Seconds from start (or creation) to end (or ``now``)."""
        start = self.started_at or self.created_at
        end = self.ended_at or now
        return round(max(0.0, (end - start).total_seconds()), 3)

    @classmethod
    def from_dict(cls, d: JSON) -> Session:
        """The inverse of :meth:`to_dict` (a snapshot as events carry it)."""

        def ts(name: str) -> datetime | None:
            value = d.get(name)
            return parse_iso(value) if isinstance(value, str) else None

        created = ts("created_at")
        if created is None:
            raise ValueError("a session snapshot needs created_at")
        return cls(
            id=str(d["id"]),
            kind=str(d["kind"]),
            owner=str(d["owner"]),
            state=str(d["state"]),
            version=int(d["version"]),
            created_at=created,
            updated_at=ts("updated_at") or created,
            last_activity_at=ts("last_activity_at") or created,
            started_at=ts("started_at"),
            ended_at=ts("ended_at"),
            end_reason=d.get("end_reason"),
            end_detail=d.get("end_detail"),
            attributes=dict(d.get("attributes") or {}),
            metadata=dict(d.get("metadata") or {}),
            counters=dict(d.get("counters") or {}),
        )

    def to_dict(self) -> JSON:
        return {
            "id": self.id,
            "kind": self.kind,
            "owner": self.owner,
            "state": self.state,
            "version": self.version,
            "attributes": self.attributes,
            "metadata": self.metadata,
            "counters": self.counters,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "started_at": iso(self.started_at),
            "last_activity_at": iso(self.last_activity_at),
            "ended_at": iso(self.ended_at),
            "end_reason": self.end_reason,
            "end_detail": self.end_detail,
        }


# Event types. Every change to a session produces exactly one of the first three.
CREATED = "session.created"
STATE_CHANGED = "session.state_changed"
UPDATED = "session.updated"
DELETED = "session.deleted"


@dataclass(frozen=True, slots=True)
class Event:
    """An immutable fact about one session, written in the same transaction as the change.

    ``data`` holds the event's details (``from``/``to``/``action``/``reason`` for a state
    change, ``changes`` for an update) and ``session``, the snapshot after the change, so
    a subscriber never needs a second read. ``seq`` is assigned by the store.
    """

    id: str
    type: str
    session_id: str
    kind: str
    owner: str
    actor: str
    at: datetime
    version: int
    data: JSON
    seq: int | None = None

    def to_dict(self) -> JSON:
        return {
            "id": self.id,
            "type": self.type,
            "session_id": self.session_id,
            "kind": self.kind,
            "owner": self.owner,
            "actor": self.actor,
            "at": iso(self.at),
            "version": self.version,
            "data": self.data,
        }
