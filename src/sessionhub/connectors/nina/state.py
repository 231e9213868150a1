"""Folding normalised events into a rig's unified state, and the hub commands that follow.

Pure: ``apply(state, event, rules)`` returns the new state, the commands to run (``Start``,
``Update``, ``End``) and whether the event was worth telling anyone (``notable``). The
service runs the commands against the hub; nothing here does I/O.

Rules the fold keeps:

- **One night, one session.** A night starts on the first sign of work - ``TS-NEWTARGETSTART``,
  ``TS-TARGETSTART``, ``SEQUENCE-STARTING``, a LIGHT ``IMAGE-SAVE`` or ``GUIDER-START`` (a
  night may lack ``SEQUENCE-STARTING``) - later than the last night's end. It ends on
  ``SEQUENCE-FINISHED`` (``finish``) or, when the events themselves show a quiet gap longer
  than ``idle_timeout`` (a history seed spanning nights), at the end of that gap
  (``abandon``); the scheduler ends it the same way when the rig falls silent.
- **What an event does** to the night's attributes is ``effects.Effects``: registers are
  last-writer-wins by event time (replaying history is harmless), an event that asserts what
  is already known (``TS-TARGETSTART`` before every exposure, ``MOUNT-HOMED`` every 80 s, a
  filter change to the same filter) changes nothing and is not notable (no churn).
- **Notable events** go into ``recent_events`` (the last 20) and become ``nina-event``s.
- The rig's registers outside a night are kept too and carried into the next one.
- **Commands carry the book** (``_nina`` metadata: the dedupe's watermarks), so a restart
  knows what it applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from ...core.model import JSON, Session
from ...kinds.imaging import ACTIVE, FINISHED, RECENT_EVENTS, js_time, parse_time
from .effects import Effects
from .normalize import IMAGE_SAVE, NinaEvent

#: Attributes that describe the rig rather than the night, carried from night to night.
CARRY = (
    "is_safe",
    "safety_timestamp",
    "current_filter",
    "filter_timestamp",
    "is_guiding",
    "guiding_state",
    "guiding_rms",
    "guiding_timestamp",
    "camera_temperature",
    "mount_state",
    "mount_timestamp",
    "equipment",
)
START_EVENTS = frozenset(
    {"TS-NEWTARGETSTART", "TS-TARGETSTART", "SEQUENCE-STARTING", "GUIDER-START"}
)
#: Identities and image identities kept in the night's metadata for restarts.
BOOK_IDS = 32


@dataclass(frozen=True, slots=True)
class Rules:
    """The fold's parameters."""

    idle_timeout: timedelta | None = timedelta(hours=8)
    local: tzinfo = UTC
    rms_min_delta: float = 0.05
    recent_events: int = RECENT_EVENTS


@dataclass(frozen=True, slots=True)
class Book:
    """What the dedupe needs to survive a restart; stored as the night's ``_nina`` metadata."""

    through: datetime | None = None
    images_through: datetime | None = None
    ids: tuple[str, ...] = ()
    image_ids: tuple[str, ...] = ()

    def after(self, ev: NinaEvent) -> Book:
        through = ev.time if self.through is None else max(self.through, ev.time)
        ids = (*self.ids, ev.identity)[-BOOK_IDS:]
        if ev.type != IMAGE_SAVE:
            return replace(self, through=through, ids=ids)
        it = ev.image_time or ev.time
        images = it if self.images_through is None else max(self.images_through, it)
        image_ids = (*self.image_ids, ev.identity)[-BOOK_IDS:]
        return Book(through, images, ids, image_ids)

    def to_json(self) -> JSON:
        return {
            "through": self.through.isoformat() if self.through else None,
            "images_through": self.images_through.isoformat() if self.images_through else None,
            "ids": list(self.ids),
            "image_ids": list(self.image_ids),
        }

    @classmethod
    def from_json(cls, value: Any) -> Book:
        if not isinstance(value, dict):
            return cls()
        ids = value.get("ids")
        image_ids = value.get("image_ids")
        return cls(
            parse_time(value.get("through")),
            parse_time(value.get("images_through")),
            tuple(i for i in ids if isinstance(i, str)) if isinstance(ids, list) else (),
            tuple(i for i in image_ids if isinstance(i, str))
            if isinstance(image_ids, list)
            else (),
        )


@dataclass(frozen=True, slots=True)
class Night:
    """The fold's view of one imaging session. ``session_id`` is None until the hub made it."""

    session_id: str | None
    state: str
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    last_activity: datetime
    attrs: JSON
    version: int = 0

    @property
    def active(self) -> bool:
        return self.state == ACTIVE

    def moved(self, attrs: JSON, at: datetime) -> Night:
        """The same night with new attributes and last activity (the fold's hot path)."""
        return Night(
            self.session_id,
            self.state,
            self.started_at,
            self.ended_at,
            self.end_reason,
            at,
            attrs,
            self.version,
        )

    @classmethod
    def of(cls, s: Session) -> Night:
        return cls(
            s.id,
            s.state,
            s.started_at or s.created_at,
            s.ended_at,
            s.end_reason,
            s.last_activity_at,
            dict(s.attributes),
            s.version,
        )


@dataclass(frozen=True, slots=True)
class RigState:
    """Everything the fold knows about one rig: its current (or last) night, the registers
    it keeps between nights, and the dedupe book."""

    rig: str
    night: Night | None = None
    regs: JSON = field(default_factory=dict)
    book: Book = Book()

    @property
    def active(self) -> bool:
        return self.night is not None and self.night.active

    def carry(self) -> JSON:
        """The rig's registers now: an active night's (kept in its attributes), else ``regs``."""
        night = self.night
        if night is not None and night.active:
            return {k: night.attrs.get(k) for k in CARRY}
        return self.regs

    @classmethod
    def restore(cls, rig: str, session: Session | None) -> RigState:
        """The state after a restart, from the rig's newest stored night."""
        if session is None:
            return cls(rig)
        night = Night.of(session)
        regs = {k: night.attrs.get(k) for k in CARRY}
        return cls(rig, night, regs, Book.from_json(session.metadata.get("_nina")))


@dataclass(frozen=True, slots=True)
class Start:
    """Create the night's session (``at``: the first sign of work)."""

    at: datetime
    attributes: JSON
    metadata: JSON


@dataclass(frozen=True, slots=True)
class Update:
    """Change the current night's attributes (only those given) and book."""

    at: datetime
    attributes: JSON
    metadata: JSON


@dataclass(frozen=True, slots=True)
class End:
    """Apply ``action`` (``finish`` or ``abandon``) to the current night."""

    at: datetime
    action: str
    reason: str


Command = Start | Update | End


@dataclass(frozen=True, slots=True)
class Step:
    state: RigState
    commands: tuple[Command, ...]
    #: Worth a ``nina-event`` (and a line in ``recent_events``): not a repeat.
    notable: bool
    #: The night's stored state changes (attributes or lifecycle).
    changed: bool


# -- helpers ------------------------------------------------------------------------------------


def night_label(start: datetime, local: tzinfo) -> str:
    """The local date of the evening a night belongs to (before noon: the day before)."""
    t = start.astimezone(local)
    if t.hour < 12:
        t -= timedelta(days=1)
    return t.date().isoformat()


def new_night(rig: str, regs: Mapping[str, Any], at: datetime, local: tzinfo) -> JSON:
    """A night's attributes at its start: the rig's registers carried over, counts at zero."""
    attrs: JSON = {
        "rig": rig,
        "night": night_label(at, local),
        "total_images": 0,
        "total_exposure_time": 0,
        "images_per_filter": {},
        "images_by_type": {},
        "recent_events": [],
    }
    attrs.update({k: v for k, v in regs.items() if k in CARRY and v is not None})
    state = "paused_unsafe" if regs.get("is_safe") is False else "idle"
    attrs["activity"] = {
        "state": state,
        "since": js_time(at),
        "previous": None,
        "timeline": [{"state": state, "since": js_time(at)}],
    }
    return attrs


def is_start(ev: NinaEvent) -> bool:
    if ev.type in START_EVENTS:
        return True
    return ev.type == IMAGE_SAVE and str(ev.stats.get("ImageType") or "").upper() == "LIGHT"


# -- the fold -------------------------------------------------------------------------------------


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> JSON:
    return {k: v for k, v in new.items() if old.get(k) != v}


def apply(st: RigState, ev: NinaEvent, rules: Rules) -> Step:
    """Fold one new (not repeated) event into ``st``."""
    book = st.book.after(ev)
    if not ev.known:
        return Step(RigState(st.rig, st.night, st.regs, book), (), False, False)
    commands: list[Command] = []
    night = st.night
    # A gap longer than the idle timeout ends the night at the end of the gap, as the
    # scheduler would have (a history seed spanning nights, a rig silent for too long).
    if (
        night is not None
        and night.active
        and rules.idle_timeout is not None
        and ev.time - night.last_activity > rules.idle_timeout
    ):
        end_at = night.last_activity + rules.idle_timeout
        night = replace(night, state=FINISHED, ended_at=end_at, end_reason="idle_timeout")
        commands.append(End(end_at, "abandon", "idle_timeout"))
    starting = False
    idle = night is None or not night.active
    after_last = night is None or night.ended_at is None or ev.time > night.ended_at
    if idle and after_last and is_start(ev):
        attrs = new_night(st.rig, st.carry(), ev.time, rules.local)
        night = Night(None, ACTIVE, ev.time, None, None, ev.time, attrs)
        starting = True
    if night is None or not night.active:
        # Between nights only the rig's registers change.
        w = dict(st.carry())
        changed, notable = Effects(w, ev, False, rules.rms_min_delta).run()
        return Step(RigState(st.rig, night, w, book), tuple(commands), notable, bool(commands))
    w = dict(night.attrs)
    changed, notable = Effects(w, ev, True, rules.rms_min_delta).run()
    finishing = ev.type == "SEQUENCE-FINISHED" and ev.time >= night.started_at
    if finishing:
        Effects(w, ev, True, rules.rms_min_delta).activity("idle")
        notable = changed = True
    if notable:
        recent = [*(w.get("recent_events") or []), ev.summary()]
        w["recent_events"] = recent[-rules.recent_events :]
    at = max(night.last_activity, ev.time)
    if starting:
        commands.append(Start(night.started_at, w, {"_nina": book.to_json()}))
    elif changed or notable:
        diff = _diff(night.attrs, w)
        if diff:
            commands.append(Update(at, diff, {"_nina": book.to_json()}))
    night = night.moved(w, at)
    regs = st.regs  # stale while the night runs: ``carry`` reads its attributes instead
    if finishing:
        night = replace(night, state=FINISHED, ended_at=at, end_reason="upstream_finished")
        commands.append(End(at, "finish", "upstream_finished"))
        regs = {k: w.get(k) for k in CARRY}
    return Step(RigState(st.rig, night, regs, book), tuple(commands), notable, bool(commands))


def merge(commands: Iterable[Command]) -> list[Command]:
    """Adjacent updates of one night as one (the later ``at`` and book, the union of the
    attributes): under load many events make one commit."""
    out: list[Command] = []
    for c in commands:
        last = out[-1] if out else None
        if isinstance(c, Update) and isinstance(last, Update):
            out[-1] = Update(c.at, {**last.attributes, **c.attributes}, c.metadata)
        else:
            out.append(c)
    return out


def fold(st: RigState, events: Iterable[NinaEvent], rules: Rules) -> tuple[RigState, list[Command]]:
    """Fold many events (already deduplicated); for replays and tests."""
    commands: list[Command] = []
    for ev in events:
        step = apply(st, ev, rules)
        st = step.state
        commands.extend(step.commands)
    return st, merge(commands)
