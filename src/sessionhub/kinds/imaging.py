"""``imaging``: one night of work of a telescope rig run by NINA (seed 000).

The owner is the rig's name; the NINA connector (``connectors/nina``) creates and changes
these sessions from the rig's events. Lifecycle (forward only)::

    active --finish (system, admin: SEQUENCE-FINISHED)--> finished   end_reason upstream_finished
    active --abandon (system: no rig event for idle_timeout)--> finished   end_reason idle_timeout
    active --stop (admin)--> finished   end_reason stopped

What the rig is doing (imaging, flats, darks, paused because unsafe, waiting, idle) is the
``activity`` attribute with its own timestamps, never a lifecycle state: a night paused for
hours by bad weather is still one active night. ``idle_timeout`` defaults to 8 hours and,
like every kind timeout, is set by ``SESSIONHUB_KIND_TIMEOUTS``.

The attributes hold the seed's unified session state; ``unified_session`` renders it in the
document's ``unifiedSession`` shape (used by the connector and by ``view``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from ..core.errors import InvalidInput
from ..core.kind import Attr, Kind
from ..core.lifecycle import Lifecycle, transition
from ..core.model import JSON, Session

ACTIVE = "active"
FINISHED = "finished"

#: What a rig can be doing; ``activity.state`` is one of these.
ACTIVITIES = ("imaging", "flats", "darks", "paused_unsafe", "waiting", "idle")

#: Most recent events kept on a night (the document: "rolling 20 most recent events").
RECENT_EVENTS = 20
#: Activity changes kept in ``activity.timeline``.
TIMELINE = 48

_NUM = (int, float)
#: Attributes whose value is an ISO-8601 time (or null).
_TIMES = (
    "safety_timestamp",
    "filter_timestamp",
    "guiding_timestamp",
    "target_timestamp",
    "target_end_time",
    "mount_timestamp",
)
#: Attributes that map names to non-negative counts.
_COUNTS = ("images_per_filter", "images_by_type")


def js_time(ts: datetime | None) -> str | None:
    """The document's timestamp style: UTC, milliseconds, ``Z`` ("2025-09-04T12:34:56.789Z")."""
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def parse_time(text: Any) -> datetime | None:
    """An ISO-8601 string (naive taken as UTC) as an aware datetime; None if not one."""
    if not isinstance(text, str) or not text:
        return None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _flag(value: Any) -> int | None:
    """The document's SQLite-style booleans: 1, 0 or null."""
    if value is None:
        return None
    return 1 if value else 0


def _number(value: Any) -> float | int | None:
    return value if isinstance(value, _NUM) and not isinstance(value, bool) else None


class Imaging(Kind):
    """Policy of one imaging night. Pure: the connector decides, the kind validates."""

    name = "imaging"
    id_prefix = "img"
    attributes: ClassVar[Mapping[str, Attr]] = {
        "rig": Attr(str, required=True, max_length=64, mutable=False),
        # Local date of the evening the night began (labels and filters, e.g. "2026-09-03").
        "night": Attr(str, max_length=10, mutable=False),
        "target_name": Attr(str, max_length=200),
        "project_name": Attr(str, max_length=200),
        "target_coordinates": Attr(dict),
        "target_end_time": Attr(str, max_length=40),
        "target_timestamp": Attr(str, max_length=40),
        "rotation": Attr(_NUM),
        "is_safe": Attr(bool),
        "safety_timestamp": Attr(str, max_length=40),
        "is_guiding": Attr(bool),
        "guiding_state": Attr(str, max_length=32),
        "guiding_rms": Attr(_NUM),
        "guiding_timestamp": Attr(str, max_length=40),
        "current_filter": Attr(str, max_length=64),
        "filter_timestamp": Attr(str, max_length=40),
        "mount_state": Attr(str, max_length=32),
        "mount_timestamp": Attr(str, max_length=40),
        # LIGHT frames: the night's science output (the document's totals are of these).
        "total_images": Attr(int, default=0),
        "total_exposure_time": Attr(_NUM, default=0),
        "images_per_filter": Attr(dict),
        # Every saved frame by NINA image type: {"LIGHT": n, "FLAT": n, "DARK": n, ...}.
        "images_by_type": Attr(dict),
        "exposure_time": Attr(_NUM),
        "camera_temperature": Attr(_NUM),
        "last_image": Attr(dict),
        # {"state": one of ACTIVITIES, "since", "previous", "timeline": [{"state", "since"}]}
        "activity": Attr(dict),
        # {"state": "running"|"finished"|"failed", "since", "points", "last_hfr"}
        "autofocus": Attr(dict),
        # device -> {"connected": bool, "since"}
        "equipment": Attr(dict),
        # oldest first: [{"eventType", "timestamp", ...fields}]
        "recent_events": Attr(list),
    }
    lifecycle = Lifecycle(
        states=(ACTIVE, FINISHED),
        initial=frozenset({ACTIVE}),
        ended=frozenset({FINISHED}),
        transitions=(
            transition(
                "finish", ACTIVE, FINISHED, roles=("system", "admin"), reason="upstream_finished"
            ),
            transition("abandon", ACTIVE, FINISHED, roles=("system",), reason="idle_timeout"),
            transition("stop", ACTIVE, FINISHED, roles=("admin",), reason="stopped"),
        ),
    )
    # A night paused for hours by weather is still one night; the rig's own events (and the
    # connector's coalesced heartbeats for repeats) keep it alive.
    idle_timeout = timedelta(hours=8)
    idle_action = "abandon"
    heartbeat_states = frozenset({ACTIVE})

    def validate_attributes(self, given: Mapping[str, Any], *, base: JSON | None = None) -> JSON:
        """The flat schema, then the shapes of the nested values."""
        out = super().validate_attributes(given, base=base)
        for name in _TIMES:
            value = out.get(name)
            if value is not None and parse_time(value) is None:
                raise InvalidInput(f"attribute {name!r} must be an ISO-8601 time")
        for name in _COUNTS:
            _check_counts(name, out.get(name))
        _check_activity(out.get("activity"))
        coords = out.get("target_coordinates")
        if coords is not None and not all(
            k in ("ra", "dec") and (v is None or isinstance(v, str)) for k, v in coords.items()
        ):
            raise InvalidInput("attribute 'target_coordinates' must be {ra, dec} strings")
        events = out.get("recent_events")
        if events is not None and (
            len(events) > 2 * RECENT_EVENTS
            or not all(
                isinstance(e, dict)
                and isinstance(e.get("eventType"), str)
                and isinstance(e.get("timestamp"), str)
                for e in events
            )
        ):
            raise InvalidInput(
                "attribute 'recent_events' must be a short list of {eventType, timestamp, ...}"
            )
        equipment = out.get("equipment")
        if equipment is not None and (
            len(equipment) > 32
            or not all(
                isinstance(v, dict) and isinstance(v.get("connected"), bool)
                for v in equipment.values()
            )
        ):
            raise InvalidInput("attribute 'equipment' must map devices to {connected, since}")
        return out

    def view(self, session: Session) -> JSON:
        """What a reader of the generic session API wants at a glance."""
        a = session.attributes
        activity = a.get("activity") or {}
        return {
            "rig": a.get("rig"),
            "night": a.get("night"),
            "target_name": a.get("target_name"),
            "activity_state": activity.get("state"),
            "total_images": a.get("total_images") or 0,
            "images_by_type": a.get("images_by_type") or {},
        }


def _check_counts(name: str, value: Any) -> None:
    if value is None:
        return
    if len(value) > 64 or not all(
        isinstance(k, str)
        and len(k) <= 64
        and isinstance(n, int)
        and not isinstance(n, bool)
        and n >= 0
        for k, n in value.items()
    ):
        raise InvalidInput(f"attribute {name!r} must map names to counts")


def _check_activity(value: Any) -> None:
    if value is None:
        return
    timeline = value.get("timeline", [])
    ok = (
        value.get("state") in ACTIVITIES
        and value.get("previous") in (None, *ACTIVITIES)
        and (value.get("since") is None or parse_time(value.get("since")) is not None)
        and isinstance(timeline, list)
        and len(timeline) <= TIMELINE
        and all(isinstance(t, dict) and t.get("state") in ACTIVITIES for t in timeline)
    )
    if not ok:
        raise InvalidInput(
            f"attribute 'activity' must be {{state, since, previous, timeline}} with states "
            f"in {list(ACTIVITIES)}"
        )


def unified_session(session: Session, now: datetime) -> JSON:
    """The document's ``unifiedSession`` data object for one night, plus ``images_by_type``,
    ``end_reason`` and ``activity``. ``recent_events`` is newest first; times are UTC."""
    a = session.attributes
    coords = a.get("target_coordinates") or {}
    activity = a.get("activity") or {"state": "idle", "since": None}
    return {
        "session_id": session.id,
        "target_name": a.get("target_name"),
        "target_coordinates": {"ra": coords.get("ra"), "dec": coords.get("dec")},
        "session_state": session.state,
        "start_time": js_time(session.started_at),
        "end_time": js_time(session.ended_at),
        "duration": int(session.duration_seconds(now)),
        "is_safe": _flag(a.get("is_safe")),
        "safety_timestamp": a.get("safety_timestamp"),
        "is_guiding": _flag(a.get("is_guiding")),
        "guiding_state": a.get("guiding_state"),
        "guiding_rms": _number(a.get("guiding_rms")),
        "current_filter": a.get("current_filter"),
        "filter_timestamp": a.get("filter_timestamp"),
        "total_images": a.get("total_images") or 0,
        "exposure_time": _number(a.get("exposure_time")),
        "camera_temperature": _number(a.get("camera_temperature")),
        "recent_events": list(reversed(a.get("recent_events") or [])),
        "session_stats": {
            "total_exposure_time": _number(a.get("total_exposure_time")) or 0,
            "images_per_filter": dict(a.get("images_per_filter") or {}),
        },
        "images_by_type": dict(a.get("images_by_type") or {}),
        "end_reason": session.end_reason,
        "activity": activity,
    }


def empty_unified_session() -> JSON:
    """The same object when a rig has had no night yet: every value null or zero."""
    return {
        "session_id": None,
        "target_name": None,
        "target_coordinates": {"ra": None, "dec": None},
        "session_state": None,
        "start_time": None,
        "end_time": None,
        "duration": 0,
        "is_safe": None,
        "safety_timestamp": None,
        "is_guiding": None,
        "guiding_state": None,
        "guiding_rms": None,
        "current_filter": None,
        "filter_timestamp": None,
        "total_images": 0,
        "exposure_time": None,
        "camera_temperature": None,
        "recent_events": [],
        "session_stats": {"total_exposure_time": 0, "images_per_filter": {}},
        "images_by_type": {},
        "end_reason": None,
        "activity": {"state": "idle", "since": None, "previous": None, "timeline": []},
    }
