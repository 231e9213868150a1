"""What one event does to a night's attributes (or the rig's registers between nights).

``Effects(w, event, in_night, rms_min_delta).run()`` changes the working dict ``w`` in place
and says whether anything changed and whether the event is worth recording. The rules:
registers (safety, filter, guiding, target, mount, equipment) are last-writer-wins by event
time; an assertion of what is already known changes nothing (no churn); occurrences (a frame,
a dither, an autofocus point, an error) are always notable; counts, the target, autofocus and
``activity`` exist only in a night.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...core.model import JSON
from ...kinds.imaging import TIMELINE, js_time, parse_time
from .normalize import GUIDER_INFO, IMAGE_SAVE, NinaEvent, name_of

_MOUNT = {
    "MOUNT-PARKED": "parked",
    "MOUNT-UNPARKED": "unparked",
    "MOUNT-HOMED": "homed",
    "MOUNT-BEFORE-FLIP": "flipping",
    "MOUNT-AFTER-FLIP": "tracking",
}
_ACTIVITY_OF_TYPE = {"LIGHT": "imaging", "FLAT": "flats", "DARK": "darks", "BIAS": "darks"}


def format_ra(hours: Any) -> str | None:
    """RA in hours as the document writes it: ``18h 02m 45s``."""
    if not isinstance(hours, int | float) or isinstance(hours, bool):
        return None
    total = round((hours % 24) * 3600)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h % 24:02d}h {m:02d}m {s:02d}s"


def format_dec(degrees: Any) -> str | None:
    """Declination as the document writes it: ``+07° 08' 30"``."""
    if not isinstance(degrees, int | float) or isinstance(degrees, bool):
        return None
    sign = "-" if degrees < 0 else "+"
    total = round(abs(degrees) * 3600)
    d, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{sign}{d:02d}° {m:02d}' {s:02d}\""


def coordinates(value: Any) -> JSON | None:
    """TS-* ``Coordinates`` as ``{ra, dec}`` strings; None when history lost them."""
    if not isinstance(value, dict):
        return None
    ra = format_ra(value.get("RA"))
    dec = format_dec(value.get("Dec"))
    if ra is None and isinstance(value.get("RAString"), str):
        ra = value["RAString"]
    if dec is None and isinstance(value.get("DecString"), str):
        dec = value["DecString"]
    if ra is None and dec is None:
        return None
    return {"ra": ra, "dec": dec}


class Effects:
    """Applies one event to ``w`` (the night's attributes, or the registers between nights)."""

    def __init__(self, w: JSON, ev: NinaEvent, in_night: bool, rms_min_delta: float) -> None:
        self.w = w
        self.ev = ev
        self.at = js_time(ev.time)
        self.in_night = in_night
        self.rms_min_delta = rms_min_delta

    def newer(self, ts_key: str) -> bool:
        """The event is not older than what set ``ts_key`` (last writer wins)."""
        current = parse_time(self.w.get(ts_key))
        return current is None or self.ev.time >= current

    def register(self, values: Mapping[str, Any], ts_key: str) -> bool:
        if not self.newer(ts_key) or all(self.w.get(k) == v for k, v in values.items()):
            return False
        self.w.update(values)
        self.w[ts_key] = self.at
        return True

    def activity(self, state: str, *, only_from: tuple[str, ...] | None = None) -> bool:
        if not self.in_night:
            return False
        current = self.w.get("activity") or {}
        now = current.get("state")
        if now == state or (only_from is not None and now not in only_from):
            return False
        since = parse_time(current.get("since"))
        if since is not None and self.ev.time < since:
            return False
        timeline = [*(current.get("timeline") or []), {"state": state, "since": self.at}]
        self.w["activity"] = {
            "state": state,
            "since": self.at,
            "previous": now,
            "timeline": timeline[-TIMELINE:],
        }
        return True

    def run(self) -> tuple[bool, bool]:
        """(changed, notable) for this event."""
        t = self.ev.type
        if t == IMAGE_SAVE:
            return self.image()
        if t == GUIDER_INFO:
            return self.guider_info(), False
        if t == "SAFETY-CHANGED":
            return self.both(self.safety())
        if t == "FILTERWHEEL-CHANGED":
            new = name_of(self.ev.fields.get("New"))
            if new is None or new == name_of(self.ev.fields.get("Previous")):
                return False, False  # a no-op change, or history lost the names
            return self.both(self.register({"current_filter": new}, "filter_timestamp"))
        if t in ("TS-NEWTARGETSTART", "TS-TARGETSTART"):
            return self.target(t == "TS-NEWTARGETSTART")
        if t == "TS-WAITSTART":
            wait = self.activity("waiting", only_from=("idle", "imaging", "flats", "darks"))
            return self.both(wait)
        if t == "GUIDER-START":
            changed = self.register(
                {"is_guiding": True, "guiding_state": "Guiding"}, "guiding_timestamp"
            )
            if changed:
                self.activity("imaging", only_from=("idle", "waiting"))
            return self.both(changed)
        if t == "GUIDER-STOP":
            values = {"is_guiding": False, "guiding_state": "Stopped", "guiding_rms": None}
            return self.both(self.register(values, "guiding_timestamp"))
        if t in _MOUNT:
            return self.both(self.register({"mount_state": _MOUNT[t]}, "mount_timestamp"))
        device, _, what = t.rpartition("-")
        if what in ("CONNECTED", "DISCONNECTED") and device:
            return self.both(self.equipment(device, what == "CONNECTED"))
        if t.startswith("AUTOFOCUS-") or t == "ERROR-AF":
            self.autofocus()
        elif t in ("FLAT-LIGHT-TOGGLED", "FLAT-BRIGHTNESS-CHANGED"):
            self.activity("flats", only_from=("idle", "imaging", "waiting", "darks"))
        # Everything else is an occurrence: always worth recording.
        return self.in_night, True

    def both(self, changed: bool) -> tuple[bool, bool]:
        return changed, changed

    def safety(self) -> bool:
        safe = self.ev.fields.get("IsSafe")
        if not isinstance(safe, bool):
            return False
        changed = self.register({"is_safe": safe}, "safety_timestamp")
        if changed:
            if not safe:
                self.activity("paused_unsafe")
            else:
                self.activity("idle", only_from=("paused_unsafe",))
        return changed

    def equipment(self, device: str, connected: bool) -> bool:
        equipment = dict(self.w.get("equipment") or {})
        current = equipment.get(device) or {}
        since = parse_time(current.get("since"))
        if current.get("connected") == connected or (since and self.ev.time < since):
            return False
        equipment[device] = {"connected": connected, "since": self.at}
        self.w["equipment"] = equipment
        return True

    def target(self, new_target: bool) -> tuple[bool, bool]:
        if not self.in_night:
            return False, False
        f = self.ev.fields
        name = f.get("TargetName") if isinstance(f.get("TargetName"), str) else None
        project = f.get("ProjectName") if isinstance(f.get("ProjectName"), str) else None
        coords = coordinates(f.get("Coordinates"))
        if not self.newer("target_timestamp"):
            return False, False
        same = name == self.w.get("target_name") and project == self.w.get("project_name")
        changed = False
        if not same:
            self.w.update(
                {
                    "target_name": name,
                    "project_name": project,
                    "target_coordinates": coords or {"ra": None, "dec": None},
                    "target_end_time": f.get("TargetEndTime"),
                    "rotation": f.get("Rotation")
                    if isinstance(f.get("Rotation"), int | float)
                    else None,
                    "target_timestamp": self.at,
                }
            )
            changed = True
        elif coords and coords != self.w.get("target_coordinates"):
            self.w["target_coordinates"] = coords  # the socket knows what history lost
            changed = True
        if changed or new_target:
            changed = self.activity("imaging", only_from=("idle", "waiting")) or changed
        # A new-target start is an edge worth recording even for the same target; a
        # TS-TARGETSTART repeats before every exposure and is one only when it changes things.
        return changed or new_target, changed or new_target

    def image(self) -> tuple[bool, bool]:
        s = self.ev.stats
        kind = str(s.get("ImageType") or "UNKNOWN").upper()[:16]
        filt = s.get("Filter") if isinstance(s.get("Filter"), str) and s.get("Filter") else None
        exposure = s.get("ExposureTime") if isinstance(s.get("ExposureTime"), int | float) else None
        temp = s.get("Temperature") if isinstance(s.get("Temperature"), int | float) else None
        changed = False
        if temp is not None and self.w.get("camera_temperature") != temp:
            self.w["camera_temperature"] = temp
            changed = True
        if filt is not None:
            changed = self.register({"current_filter": filt}, "filter_timestamp") or changed
        if not self.in_night:
            return changed, True
        w = self.w
        by_type = dict(w.get("images_by_type") or {})
        by_type[kind] = by_type.get(kind, 0) + 1
        w["images_by_type"] = by_type
        if kind == "LIGHT":
            per_filter = dict(w.get("images_per_filter") or {})
            key = filt or "none"
            per_filter[key] = per_filter.get(key, 0) + 1
            w["images_per_filter"] = per_filter
            w["total_images"] = (w.get("total_images") or 0) + 1
            total = (w.get("total_exposure_time") or 0) + (exposure or 0)
            w["total_exposure_time"] = round(total, 3)
        w["exposure_time"] = exposure
        w["last_image"] = {
            "type": kind,
            "filter": filt,
            "exposure": exposure,
            "at": self.at,
            "filename": s.get("Filename") if isinstance(s.get("Filename"), str) else None,
            "hfr": s.get("HFR") if isinstance(s.get("HFR"), int | float) else None,
            "stars": s.get("Stars") if isinstance(s.get("Stars"), int | float) else None,
        }
        if kind in _ACTIVITY_OF_TYPE:
            self.activity(_ACTIVITY_OF_TYPE[kind])
        return True, True

    def guider_info(self) -> bool:
        f = self.ev.fields
        state = f.get("State") if isinstance(f.get("State"), str) else None
        rms = f.get("RMS") if isinstance(f.get("RMS"), int | float) else None
        current = parse_time(self.w.get("guiding_timestamp"))
        # Strictly newer: a reading taken no later than a guider event loses to it.
        if state is None or (current is not None and self.ev.time <= current):
            return False
        values: JSON = {"guiding_state": state, "is_guiding": state == "Guiding"}
        old = self.w.get("guiding_rms")
        if state != "Guiding":
            values["guiding_rms"] = None  # no RMS while not guiding
        elif rms is not None:
            rms = round(float(rms), 2)
            if old is None or abs(rms - old) >= self.rms_min_delta:
                values["guiding_rms"] = rms
        return self.register(values, "guiding_timestamp")

    def autofocus(self) -> None:
        if not self.in_night:
            return
        t = self.ev.type
        af = dict(self.w.get("autofocus") or {})
        if t == "AUTOFOCUS-STARTING":
            af = {"state": "running", "since": self.at, "points": 0, "last_hfr": None}
        elif t == "AUTOFOCUS-POINT-ADDED":
            hfr = self.ev.fields.get("HFR")
            af["points"] = int(af.get("points") or 0) + 1
            af["last_hfr"] = hfr if isinstance(hfr, int | float) else af.get("last_hfr")
            af.setdefault("state", "running")
        elif t == "AUTOFOCUS-FINISHED":
            af.update({"state": "finished", "since": self.at})
        else:  # ERROR-AF: a failed autofocus never sends FINISHED
            af.update({"state": "failed", "since": self.at})
        self.w["autofocus"] = af
