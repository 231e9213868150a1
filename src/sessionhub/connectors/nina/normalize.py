"""Raw NINA input -> normalised events. Pure: the receipt time and the rig's zone come in.

What the real rig sends (``UPSTREAM.md``), and what this module does about it:

- Two shapes. A socket envelope ``{"Response": {"Event": ...}, "Type": "Socket", ...}`` has no
  time: it is stamped with its receipt time. A history item ``{"Event": ..., "Time": ...}``
  carries the rig's own time. ``Response`` may be a bare string (a user's message): not an
  event. Key order is random, so nothing here depends on it.
- Mixed time zones: a time with an offset is taken as it is; a naive time is UTC for ``TS-*``
  events (and their ``TargetEndTime``/``WaitEndTime``) and local time of the rig's zone for
  every other event (the log-scraped ``ERROR-*``, ``MOUNT-CENTER``, ``DOME-STOPPED``).
- ``[]`` leaves (history's lost nested values) become null; ``"NaN"`` (and non-finite numbers)
  become null; ``IsSafe: "True"`` becomes a boolean; numeric strings in numeric fields become
  numbers. A value of the wrong type becomes null and is counted (``bad_values``).
- ``IMAGE-SAVED`` (the document's spelling) is ``IMAGE-SAVE``. History ``IMAGE-SAVE`` items
  carry no statistics: ``parse_history`` joins them to the image history (same order, ``Date``
  within a second of ``Time``).

Every event gets an ``identity``: a hash of (type, normalised time, payload) - for an
``IMAGE-SAVE`` with statistics, of the image's own ``Date`` and file, which the socket and the
image history report identically, so a frame seen live and again in history is one image.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import orjson

from ...core.model import JSON
from ...kinds.imaging import js_time

SOCKET = "socket"
HISTORY = "history"
POLL = "poll"

IMAGE_SAVE = "IMAGE-SAVE"
GUIDER_INFO = "GUIDER-INFO"  # not a NINA event: a guider poll's answer, fed through the fold
ALIASES = {"IMAGE-SAVED": IMAGE_SAVE}

DEVICES = (
    "CAMERA",
    "FILTERWHEEL",
    "FOCUSER",
    "GUIDER",
    "MOUNT",
    "DOME",
    "FLAT",
    "ROTATOR",
    "SAFETY",
    "SWITCH",
    "WEATHER",
)
KNOWN = frozenset(
    {
        IMAGE_SAVE,
        GUIDER_INFO,
        "FILTERWHEEL-CHANGED",
        "SAFETY-CHANGED",
        "GUIDER-START",
        "GUIDER-STOP",
        "GUIDER-DITHER",
        "AUTOFOCUS-STARTING",
        "AUTOFOCUS-FINISHED",
        "AUTOFOCUS-POINT-ADDED",
        "TS-NEWTARGETSTART",
        "TS-TARGETSTART",
        "TS-WAITSTART",
        "SEQUENCE-STARTING",
        "SEQUENCE-FINISHED",
        "SEQUENCE-ENTITY-FAILED",
        "STACK-STATUS",
        "STACK-UPDATED",
        "MOUNT-BEFORE-FLIP",
        "MOUNT-AFTER-FLIP",
        "MOUNT-HOMED",
        "MOUNT-PARKED",
        "MOUNT-UNPARKED",
        "MOUNT-CENTER",
        "DOME-SLEWED",
        "DOME-STOPPED",
        "ROTATOR-MOVED",
        "ROTATOR-SYNCED",
        "FLAT-BRIGHTNESS-CHANGED",
        "FLAT-LIGHT-TOGGLED",
        "FLAT-COVER-OPENED",
        "FLAT-COVER-CLOSED",
        *(f"{d}-{s}" for d in DEVICES for s in ("CONNECTED", "DISCONNECTED")),
    }
)

_TYPE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,63}$")
_BOOL_FIELDS = frozenset({"IsSafe", "IsMonochrome", "IsBayered", "Connected"})
_NUM_FIELDS = frozenset(
    {
        "ExposureTime",
        "Temperature",
        "Gain",
        "Offset",
        "FocalLength",
        "StDev",
        "Mean",
        "Median",
        "Min",
        "Max",
        "Stars",
        "HFR",
        "HFRStDev",
        "Rotation",
        "Position",
        "RA",
        "Dec",
        "RADegrees",
        "StackCount",
        "RedStackCount",
        "GreenStackCount",
        "BlueStackCount",
        "Arcseconds",
        "Pixel",
        "Id",
    }
)
_STR_FIELDS = frozenset(
    {
        "Name",
        "Filter",
        "ImageType",
        "TargetName",
        "ProjectName",
        "Target",
        "Filename",
        "Status",
        "Entity",
        "Error",
        "RAString",
        "DecString",
        "RmsText",
        "CameraName",
        "TelescopeName",
        "State",
    }
)
_TIME_FIELDS = frozenset({"Date", "TargetEndTime", "WaitEndTime"})
_SCALAR_FIELDS = _BOOL_FIELDS | _NUM_FIELDS | _STR_FIELDS | _TIME_FIELDS
_NOT_FINITE = frozenset({"nan", "infinity", "-infinity", "+infinity", "inf", "-inf"})
_MAX_DEPTH = 5
_MAX_KEYS = 64
_MAX_STR = 512
#: History IMAGE-SAVE times and image-history Dates agree within this (UPSTREAM.md).
JOIN_TOLERANCE = timedelta(seconds=1)


class BadInput(ValueError):
    """Input that is not a usable event. ``reason`` is the counter it is filed under:
    ``bad_json``, ``bad_shape``, ``bad_time``, ``error_frame`` or ``message`` (a bare-string
    ``Response``: not an error, just not an event)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class NinaEvent:
    """One normalised event: UTC ``time``, upper-case ``type``, cleaned ``fields``."""

    type: str
    time: datetime
    fields: JSON
    source: str
    identity: str
    #: IMAGE-SAVE only: the image's own time (statistics ``Date``, else ``time``).
    image_time: datetime | None = None
    #: Values of the wrong type that were dropped while cleaning.
    bad_values: int = 0

    @property
    def known(self) -> bool:
        return self.type in KNOWN or self.type.startswith("ERROR-")

    @property
    def stats(self) -> JSON:
        """An IMAGE-SAVE's statistics (empty if none: an unjoined history item)."""
        value = self.fields.get("ImageStatistics")
        return value if isinstance(value, dict) else {}

    def summary(self) -> JSON:
        """A flat record for ``recent_events``: the document's ``{eventType, timestamp, ...}``."""
        out: JSON = {"eventType": self.type, "timestamp": js_time(self.time)}
        f = self.fields
        if self.type == IMAGE_SAVE:
            s = self.stats
            out.update(
                {
                    "ImageType": s.get("ImageType"),
                    "FilterName": s.get("Filter") or None,
                    "ExposureTime": s.get("ExposureTime"),
                    "Temperature": s.get("Temperature"),
                    "TargetName": s.get("TargetName"),
                    "ImagePath": s.get("Filename"),
                    "HFR": s.get("HFR"),
                    "Stars": s.get("Stars"),
                }
            )
        elif self.type == "FILTERWHEEL-CHANGED":
            out["PreviousFilterName"] = name_of(f.get("Previous"))
            out["FilterName"] = name_of(f.get("New"))
        else:
            for key, value in f.items():
                if len(out) >= 10:
                    break
                if isinstance(value, str | int | float | bool) or value is None:
                    out[key] = value
        return {k: v for k, v in out.items() if v is not None or k in ("eventType", "timestamp")}


def name_of(value: Any) -> str | None:
    """``{"Name": "Ha", "Id": 1}`` -> ``"Ha"``; a lost (``[]``) or empty name -> None."""
    if isinstance(value, dict):
        value = value.get("Name")
    return value if isinstance(value, str) and value.strip() else None


# -- times ----------------------------------------------------------------------------------

_FRACTION = re.compile(r"(\.\d{6})\d+")


def naive_zone(event_type: str, local: tzinfo) -> tzinfo:
    """The zone of a naive time in a history item of ``event_type`` (see module doc)."""
    return UTC if event_type.startswith("TS-") else local


def parse_time(text: Any, naive: tzinfo) -> datetime | None:
    """A NINA time string as an aware UTC datetime; naive values are in ``naive``."""
    if not isinstance(text, str) or not 10 <= len(text) <= 40:
        return None
    value = _FRACTION.sub(r"\1", text.strip()).replace("Z", "+00:00")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=naive)
    return ts.astimezone(UTC)


# -- cleaning ---------------------------------------------------------------------------------


class _Cleaner:
    """Cleans one payload and counts what it had to drop."""

    def __init__(self, naive: tzinfo) -> None:
        self.naive = naive
        self.bad = 0

    def value(self, key: str, value: Any, depth: int) -> Any:
        if isinstance(value, list) and not value:
            return None  # a lost nested value in history
        if isinstance(value, list | dict) and key in _SCALAR_FIELDS:
            self.bad += 1  # a structure where a plain value belongs
            return None
        if isinstance(value, list):
            if depth >= _MAX_DEPTH:
                self.bad += 1
                return None
            return [self.value(key, v, depth + 1) for v in value[:_MAX_KEYS]]
        if isinstance(value, dict):
            if depth >= _MAX_DEPTH:
                self.bad += 1
                return None
            return self.mapping(value, depth + 1)
        if isinstance(value, str) and value.strip().lower() in _NOT_FINITE:
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**53) < value < 2**53:
            self.bad += 1
            return None
        return self.typed(key, value)

    def typed(self, key: str, value: Any) -> Any:
        if value is None:
            return None
        if key in _BOOL_FIELDS:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1"):
                return True
            if text in ("false", "0"):
                return False
        elif key in _NUM_FIELDS:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return value
            if isinstance(value, str):
                try:
                    number = float(value)
                except ValueError:
                    pass
                else:
                    if math.isfinite(number):
                        return number
        elif key in _TIME_FIELDS:
            ts = parse_time(value, self.naive)
            if ts is not None:
                return ts.isoformat()
        elif key in _STR_FIELDS:
            if isinstance(value, str):
                return value[:_MAX_STR]
        elif isinstance(value, str):
            return value[:_MAX_STR]
        elif isinstance(value, bool | int | float):
            return value
        self.bad += 1
        return None

    def mapping(self, value: Mapping[Any, Any], depth: int) -> JSON:
        out: JSON = {}
        for k, v in value.items():
            if len(out) >= _MAX_KEYS:
                self.bad += 1
                break
            if not isinstance(k, str) or len(k) > 64:
                self.bad += 1
                continue
            out[k] = self.value(k, v, depth)
        return out


def _canon(value: Any) -> Any:
    """Numbers as floats (image history says 600 where the socket says 600.0)."""
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canon(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def identity(event_type: str, time: datetime, fields: Mapping[str, Any]) -> str:
    """A stable hash of (type, time, payload), independent of key order."""
    blob = orjson.dumps(
        [event_type, time.astimezone(UTC).isoformat(), _canon(dict(fields))],
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.blake2b(blob, digest_size=12).hexdigest()


def _event_type(value: Any) -> str:
    if not isinstance(value, str):
        raise BadInput("bad_shape", f"Event is {type(value).__name__}, not a string")
    name = value.strip().upper()
    name = ALIASES.get(name, name)
    if not _TYPE.match(name):
        raise BadInput("bad_shape", f"Event {value[:80]!r} is not an event name")
    return name


def _build(
    event_type: str, time: datetime, payload: Mapping[str, Any], source: str, local: tzinfo
) -> NinaEvent:
    cleaner = _Cleaner(naive_zone(event_type, local))
    fields = cleaner.mapping(payload, 1)
    image_time = None
    ident_type, ident_time, ident_fields = event_type, time, fields
    if event_type == IMAGE_SAVE:
        stats = fields.get("ImageStatistics")
        date = parse_time(stats.get("Date"), UTC) if isinstance(stats, dict) else None
        image_time = date or time
        if date is not None and isinstance(stats, dict):
            ident_time = date
            ident_fields = {"Filename": stats.get("Filename"), "ImageType": stats.get("ImageType")}
    return NinaEvent(
        type=event_type,
        time=time,
        fields=fields,
        source=source,
        identity=identity(ident_type, ident_time, ident_fields),
        image_time=image_time,
        bad_values=cleaner.bad,
    )


# -- the two shapes ---------------------------------------------------------------------------


def from_envelope(obj: Any, received_at: datetime, local: tzinfo) -> NinaEvent:
    """A socket envelope, stamped with ``received_at`` (live events carry no time)."""
    if not isinstance(obj, dict):
        raise BadInput("bad_shape", f"frame is a JSON {type(obj).__name__}, not an object")
    response = obj.get("Response")
    if obj.get("Success") is False or (isinstance(obj.get("Error"), str) and obj["Error"]):
        raise BadInput("error_frame", f"error frame: {str(obj.get('Error'))[:120]!r}")
    if isinstance(response, str):
        raise BadInput("message", f"a message, not an event: {response[:80]!r}")
    if not isinstance(response, dict) or "Event" not in response:
        raise BadInput("bad_shape", "frame has no Response.Event")
    event_type = _event_type(response["Event"])
    payload = {k: v for k, v in response.items() if k not in ("Event", "Time")}
    return _build(event_type, received_at.astimezone(UTC), payload, SOCKET, local)


def parse_frame(text: str | bytes, received_at: datetime, local: tzinfo) -> NinaEvent:
    """One socket frame (JSON text) as an event; raises ``BadInput``."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadInput("bad_json", f"frame is not JSON: {exc}") from None
    return from_envelope(obj, received_at, local)


def from_history_item(
    item: Any, local: tzinfo, image: Mapping[str, Any] | None = None
) -> NinaEvent:
    """A history item at its own time; ``image`` is its joined image-history entry. An item
    may carry the entry itself under ``_image`` (as the raw-event log keeps it)."""
    if not isinstance(item, dict):
        raise BadInput("bad_shape", f"history item is a {type(item).__name__}, not an object")
    if "Event" not in item:
        raise BadInput("bad_shape", "history item has no Event")
    event_type = _event_type(item["Event"])
    time = parse_time(item.get("Time"), naive_zone(event_type, local))
    if time is None:
        raise BadInput("bad_time", f"history item {event_type} has no usable Time")
    payload = {k: v for k, v in item.items() if k not in ("Event", "Time", "_image")}
    joined = image if image is not None else item.get("_image")
    if event_type == IMAGE_SAVE and isinstance(joined, dict):
        payload["ImageStatistics"] = joined
    return _build(event_type, time, payload, HISTORY, local)


def guider_event(body: Any, received_at: datetime) -> NinaEvent:
    """``GET /v2/api/equipment/guider/info`` as a ``GUIDER-INFO`` event (state and RMS)."""
    response = body.get("Response") if isinstance(body, dict) else None
    if not isinstance(response, dict):
        raise BadInput("bad_shape", "guider info has no Response object")
    rms_error = response.get("RMSError")
    total = rms_error.get("Total") if isinstance(rms_error, dict) else None
    payload = {
        "Connected": response.get("Connected"),
        "State": response.get("State"),
        "RMS": total.get("Arcseconds") if isinstance(total, dict) else None,
    }
    cleaner = _Cleaner(UTC)
    fields = cleaner.mapping(payload, 1)
    rms = fields.get("RMS")
    if isinstance(rms, str):
        try:
            fields["RMS"] = float(rms)
        except ValueError:
            fields["RMS"] = None
    if isinstance(fields.get("RMS"), float) and not math.isfinite(fields["RMS"]):
        fields["RMS"] = None
    ts = received_at.astimezone(UTC)
    return NinaEvent(GUIDER_INFO, ts, fields, POLL, identity(GUIDER_INFO, ts, fields), None)


# -- history ----------------------------------------------------------------------------------


def history_items(body: Any) -> list[Any]:
    """The items of an event-history answer (``{"Response": [...]}``, or a bare list)."""
    if isinstance(body, dict):
        body = body.get("Response")
    if not isinstance(body, list):
        raise BadInput("bad_shape", "event history has no Response list")
    return body


def image_items(status: int, body: Any) -> list[JSON]:
    """The entries of an image-history answer. An empty image history answers 400 "Index out
    of range" with ``Success: false``: that is an empty list, not an error."""
    if isinstance(body, dict):
        error = body.get("Error")
        if status == 400 and isinstance(error, str) and "index out of range" in error.lower():
            return []
        body = body.get("Response")
    if status >= 400 or not isinstance(body, list):
        raise BadInput("bad_shape", f"image history answered {status} without a Response list")
    return [b for b in body if isinstance(b, dict)]


def join_images(
    pairs: list[tuple[NinaEvent, JSON]], images: Iterable[Mapping[str, Any]], local: tzinfo
) -> list[tuple[NinaEvent, JSON]]:
    """Attach image-history statistics to history IMAGE-SAVE events (both oldest first).

    ``pairs`` are (event, raw item). The two lists are in the same order; an event takes the
    next image whose ``Date`` is within ``JOIN_TOLERANCE`` of its time. Images older than that
    have no event (history was cut) and are skipped; an event with no image nearby stays
    without statistics. A joined item's raw form carries its image under ``_image``."""
    dated = []
    for img in images:
        ts = parse_time(img.get("Date"), local)
        if ts is not None:
            dated.append((ts, img))
    dated.sort(key=lambda d: d[0])
    out: list[tuple[NinaEvent, JSON]] = []
    j = 0
    for ev, item in pairs:
        if ev.type != IMAGE_SAVE or ev.stats:
            out.append((ev, item))
            continue
        while j < len(dated) and dated[j][0] < ev.time - JOIN_TOLERANCE:
            j += 1
        if j < len(dated) and abs(dated[j][0] - ev.time) <= JOIN_TOLERANCE:
            raw = {**item, "_image": dated[j][1]}
            out.append((from_history_item(raw, local), raw))
            j += 1
        else:
            out.append((ev, item))
    return out


def parse_history(
    body: Any, images: Iterable[Mapping[str, Any]], local: tzinfo
) -> tuple[list[tuple[NinaEvent, JSON]], list[BadInput]]:
    """An event-history answer as (event, raw item) ordered by normalised time (stable for
    ties), IMAGE-SAVE joined to ``images``; bad items are returned apart, not raised."""
    pairs: list[tuple[NinaEvent, JSON]] = []
    bad: list[BadInput] = []
    for item in history_items(body):
        try:
            pairs.append((from_history_item(item, local), item))
        except BadInput as exc:
            bad.append(exc)
    pairs.sort(key=lambda p: p[0].time)  # stable: equal times keep NINA's order
    return join_images(pairs, images, local), bad
