"""A realistic NINA night, generated from the documented Advanced API facts (UPSTREAM.md).

``generate_night(plan)`` returns the script the simulator plays: each step is a gap (seconds
after the previous event), the event with the fields the socket would carry, and for an
``IMAGE-SAVE`` its image statistics. The night: equipment connects at dusk, the rig reports
safe (as the string ``"True"``, as real rigs sometimes do), an optional
``SEQUENCE-STARTING``, autofocus (one point's HFR ``"NaN"``), then per target a new-target
start, centering, filter changes (one of them a no-op), guiding, and light frames each
preceded by the scheduler's repeated ``TS-TARGETSTART``, with dithers. After the first target
the weather turns: unsafe, guiding stops, the mount parks and reports ``MOUNT-HOMED`` every 80
seconds, until it is safe again and imaging resumes (with a plate-solve error logged in local
time). A meridian flip, then flats (two in the same second) and darks, and
``SEQUENCE-FINISHED``. Seeded: the same plan gives the same night.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ...core.model import JSON

EQUIPMENT = (
    "SAFETY",
    "SWITCH",
    "CAMERA",
    "FILTERWHEEL",
    "FLAT",
    "FOCUSER",
    "ROTATOR",
    "WEATHER",
    "GUIDER",
    "MOUNT",
)


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    project: str
    ra_hours: float
    dec_degrees: float


DEFAULT_TARGETS = (
    Target("Barnard 160", "Dark nebulae", 18.0458, 7.1417),
    Target("Wizard Nebula", "Narrowband", 22.7900, 58.0700),
    Target("Lobster & Bubble", "Wide field", 23.3450, 61.2000),
)


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One step: ``gap`` seconds after the previous one, ``event`` with its socket fields."""

    gap: float
    event: str
    fields: JSON = field(default_factory=dict)
    #: IMAGE-SAVE: the statistics, without ``Date`` (the simulator stamps it on emission).
    image: JSON | None = None


@dataclass(frozen=True, slots=True)
class NightPlan:
    """What the night holds. The defaults play about ten hours; tests take small ones."""

    seed: int = 0
    targets: tuple[Target, ...] = DEFAULT_TARGETS
    filters: tuple[str, ...] = ("L", "R", "G", "B")
    subs_per_filter: int = 3
    exposure: float = 300.0
    sequence_start: bool = True
    unsafe_pause: bool = True
    #: ``MOUNT-HOMED`` reports while parked unsafe (every 80 s).
    homed_repeats: int = 40
    meridian_flip: bool = True
    flats_per_filter: int = 5
    flat_exposure: float = 1.5
    darks: int = 5
    dark_exposure: float = 300.0


class _Builder:
    def __init__(self, plan: NightPlan) -> None:
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.steps: list[SimEvent] = []
        self.filter = plan.filters[0] if plan.filters else ""
        self.frame = 0
        self.guiding = False

    def add(self, gap: float, event: str, image: JSON | None = None, **fields: object) -> None:
        self.steps.append(SimEvent(round(gap, 3), event, dict(fields), image))

    def stats(self, kind: str, exposure: float, target: str) -> JSON:
        rng = self.rng
        self.frame += 1
        hfr: object = round(rng.uniform(1.4, 2.6), 4) if kind == "LIGHT" else 0.0
        if kind == "LIGHT" and self.frame == 3:
            hfr = "NaN"  # a frame where star detection failed
        temp: object = round(-10 + rng.uniform(-0.3, 0.3), 1)
        if self.frame == 5:
            temp = "NaN"
        return {
            "ExposureTime": exposure,
            "ImageType": kind,
            "Filter": self.filter,
            "RmsText": f'Tot: {rng.uniform(0.2, 0.5):.2f} ({rng.uniform(0.3, 0.8):.2f}")',
            "Temperature": temp,
            "CameraName": "ZWO ASI2600MM Pro",
            "TargetName": target,
            "Gain": 100,
            "Offset": 50,
            "TelescopeName": "Esprit 100",
            "FocalLength": 550.0,
            "StDev": round(rng.uniform(20, 300), 3),
            "Mean": round(rng.uniform(400, 900), 3),
            "Median": float(rng.randint(400, 900)),
            "Min": float(rng.randint(300, 400)),
            "Max": 65535.0,
            "Stars": rng.randint(800, 4000) if kind == "LIGHT" else 0,
            "HFR": hfr,
            "HFRStDev": round(rng.uniform(0.1, 0.3), 4) if kind == "LIGHT" else 0.0,
            "IsBayered": False,
            "Filename": f"{kind.lower()}_{self.filter or 'none'}_{self.frame:04d}.fits",
        }

    def change_filter(self, new: str, gap: float = 8.0) -> None:
        if new != self.filter:
            self.add(gap, "FILTERWHEEL-CHANGED", Previous=_slot(self.filter), New=_slot(new))
            self.filter = new

    def guide(self) -> None:
        if not self.guiding:
            self.add(12.0, "GUIDER-START")
            self.guiding = True

    def light(self, target: Target) -> None:
        self.add(4.0, "TS-TARGETSTART", **_target_fields(target))
        exposure = self.plan.exposure
        self.add(exposure + 3.0, "IMAGE-SAVE", self.stats("LIGHT", exposure, target.name))
        self.add(1.2, "STACK-UPDATED", Filter=self.filter, Target=target.name, IsMonochrome=True,
                 StackCount=self.frame)  # fmt: skip
        self.add(1.0, "GUIDER-DITHER")
        self.add(0.01, "GUIDER-START")

    def build(self) -> list[SimEvent]:
        p, rng = self.plan, self.rng
        for device in EQUIPMENT:
            self.add(rng.uniform(0.5, 2.0), f"{device}-CONNECTED")
        self.add(60.0, "SAFETY-CHANGED", IsSafe="True")
        if p.sequence_start:
            self.add(30.0, "SEQUENCE-STARTING")
        self.add(5.0, "MOUNT-UNPARKED")
        self.add(5.0, "FLAT-COVER-OPENED")
        self.add(0.5, "STACK-STATUS", Status="Running")
        self.add(2.0, "AUTOFOCUS-STARTING")
        for i, position in enumerate(range(2300, 2580, 40)):
            hfr: object = "NaN" if i == 2 else round(abs(i - 3) * 1.1 + 1.5, 3)
            self.add(22.0, "AUTOFOCUS-POINT-ADDED", HFR=hfr, Position=position)
        self.add(20.0, "AUTOFOCUS-FINISHED")
        for index, target in enumerate(p.targets):
            self.add(15.0, "TS-NEWTARGETSTART", **_target_fields(target))
            self.add(0.007, "TS-TARGETSTART", **_target_fields(target))
            self.add(40.0, "MOUNT-CENTER")
            self.add(8.0, "ROTATOR-MOVED", From=round(rng.uniform(0, 180), 2),
                     To=round(rng.uniform(0, 180), 2))  # fmt: skip
            for n, filt in enumerate(p.filters):
                if index == 0 and n == 1:
                    # A no-op change (Previous == New): must create nothing.
                    self.add(2.0, "FILTERWHEEL-CHANGED", Previous=_slot(self.filter),
                             New=_slot(self.filter))  # fmt: skip
                self.change_filter(filt)
                self.guide()
                for _ in range(p.subs_per_filter):
                    self.light(target)
            if index == 0 and p.unsafe_pause:
                self.pause()
                self.add(30.0, "ERROR-PLATESOLVE")  # log-scraped: naive local time in history
            if index == 1 and p.meridian_flip:
                self.add(20.0, "MOUNT-BEFORE-FLIP")
                self.add(90.0, "MOUNT-AFTER-FLIP")
        if self.guiding:
            self.add(10.0, "GUIDER-STOP")
            self.guiding = False
        self.add(30.0, "MOUNT-PARKED")
        self.calibration()
        self.add(5.0, "SEQUENCE-FINISHED")
        return self.steps

    def pause(self) -> None:
        self.add(20.0, "SAFETY-CHANGED", IsSafe=False)
        self.add(1.0, "GUIDER-STOP")
        self.guiding = False
        self.add(15.0, "MOUNT-PARKED")
        self.add(60.0, "MOUNT-HOMED")
        for _ in range(self.plan.homed_repeats):
            self.add(80.0, "MOUNT-HOMED")
        self.add(80.0, "SAFETY-CHANGED", IsSafe="True")
        self.add(10.0, "MOUNT-UNPARKED")

    def calibration(self) -> None:
        p = self.plan
        if p.flats_per_filter:
            self.add(10.0, "FLAT-COVER-CLOSED")
            self.add(3.0, "FLAT-LIGHT-TOGGLED")
            brightness = 80
            for filt in p.filters:
                self.change_filter(filt, gap=4.0)
                new = self.rng.choice((512, 1024, 2048, 4096))
                self.add(2.0, "FLAT-BRIGHTNESS-CHANGED", Previous=brightness, New=new)
                brightness = new
                for i in range(p.flats_per_filter):
                    # The second flat of each filter lands in the same second as the first:
                    # both must count (no "same type in the same second" collapsing).
                    gap = 0.35 if i == 1 else p.flat_exposure + 1.5
                    self.add(gap, "IMAGE-SAVE", self.stats("FLAT", p.flat_exposure, "FlatWizard"))
            self.add(3.0, "FLAT-LIGHT-TOGGLED")
        self.filter = ""
        for _ in range(p.darks):
            self.add(
                p.dark_exposure + 4.0, "IMAGE-SAVE", self.stats("DARK", p.dark_exposure, "Dark")
            )


def _slot(name: str) -> JSON:
    return {"Name": name, "Id": sum(map(ord, name)) % 7}


def _target_fields(t: Target) -> JSON:
    return {
        "TargetName": t.name,
        "ProjectName": t.project,
        "Coordinates": {
            "RA": t.ra_hours,
            "Dec": t.dec_degrees,
            "RAString": _sexagesimal(t.ra_hours, ":"),
            "DecString": _sexagesimal(t.dec_degrees, ":"),
            "Epoch": "J2000",
            "RADegrees": round(t.ra_hours * 15, 4),
        },
        "Rotation": 90.0,
    }


def _sexagesimal(value: float, sep: str) -> str:
    sign = "-" if value < 0 else ""
    total = round(abs(value) * 3600)
    a, rest = divmod(total, 3600)
    b, c = divmod(rest, 60)
    return f"{sign}{a:02d}{sep}{b:02d}{sep}{c:02d}"


def generate_night(plan: NightPlan | None = None) -> list[SimEvent]:
    """The script of one night for ``plan`` (default: a full ten-hour night)."""
    return _Builder(plan or NightPlan()).build()
