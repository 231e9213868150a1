"""The fold and the dedupe as pure functions of events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sessionhub.connectors.nina.dedupe import DUPLICATE, NEW, STALE, TWIN, Deduper
from sessionhub.connectors.nina.effects import coordinates
from sessionhub.connectors.nina.normalize import NinaEvent, from_envelope, from_history_item
from sessionhub.connectors.nina.state import (
    End,
    RigState,
    Rules,
    Start,
    Update,
    apply,
    fold,
    merge,
)

CHICAGO = ZoneInfo("America/Chicago")
T0 = datetime(2026, 9, 4, 2, 0, tzinfo=UTC)
RULES = Rules(idle_timeout=timedelta(hours=8), local=CHICAGO)


def live(event: str, minutes: float, **fields: Any) -> NinaEvent:
    at = T0 + timedelta(minutes=minutes)
    return from_envelope({"Response": {"Event": event, **fields}, "Type": "Socket"}, at, CHICAGO)


def history(event: str, minutes: float, **fields: Any) -> NinaEvent:
    at = (T0 + timedelta(minutes=minutes)).isoformat()
    return from_history_item({"Event": event, "Time": at, **fields}, CHICAGO)


def image(minutes: float, kind: str = "LIGHT", filt: str = "L", name: str = "") -> NinaEvent:
    date = (T0 + timedelta(minutes=minutes)).astimezone(CHICAGO).isoformat()
    stats = {"ImageType": kind, "Filter": filt, "ExposureTime": 300, "Temperature": -10.1,
             "Date": date, "Filename": name or f"{kind}_{minutes}.fits"}  # fmt: skip
    return live("IMAGE-SAVE", minutes, ImageStatistics=stats)


def run(events: list[NinaEvent], st: RigState | None = None) -> tuple[RigState, list[Any]]:
    return fold(st or RigState("rig"), events, RULES)


TARGET = {"TargetName": "M 31", "ProjectName": "Andromeda",
          "Coordinates": {"RA": 0.7123, "Dec": 41.269, "RAString": [], "DecString": []}}  # fmt: skip


@pytest.mark.parametrize(
    "first",
    [
        live("TS-NEWTARGETSTART", 0, **TARGET),
        live("TS-TARGETSTART", 0, **TARGET),
        live("SEQUENCE-STARTING", 0),
        live("GUIDER-START", 0),
        image(0),
    ],
    ids=lambda e: e.type + ("-" + e.stats.get("ImageType", "") if e.stats else ""),
)
def test_every_sign_of_work_starts_a_night(first: NinaEvent) -> None:
    st, commands = run([live("CAMERA-CONNECTED", -5), first])
    assert [type(c) for c in commands] == [Start]
    assert st.active and st.night is not None and st.night.started_at == first.time


def test_no_work_no_night() -> None:
    events = [live("SAFETY-CHANGED", 0, IsSafe=True), image(1, "FLAT"), image(2, "DARK"),
              live("MOUNT-HOMED", 3), live("AUTOFOCUS-STARTING", 4)]  # fmt: skip
    st, commands = run(events)
    assert commands == [] and st.night is None
    assert st.regs["is_safe"] is True and st.regs["camera_temperature"] == -10.1


def test_sequence_finished_ends_the_night_and_old_events_do_not_start_a_new_one() -> None:
    st, commands = run([live("SEQUENCE-STARTING", 0), image(5), live("SEQUENCE-FINISHED", 10)])
    assert [type(c) for c in commands] == [Start, Update, End]
    end = commands[-1]
    assert isinstance(end, End) and (end.action, end.reason) == ("finish", "upstream_finished")
    assert st.night is not None and st.night.end_reason == "upstream_finished"
    assert st.night.attrs["activity"]["state"] == "idle"
    # A start signal from before the end (a replayed history item) starts nothing.
    again, commands = run([live("TS-TARGETSTART", 8, **TARGET)], st)
    assert commands == [] and not again.active
    after, commands = run([live("TS-TARGETSTART", 11, **TARGET)], st)
    assert [type(c) for c in commands] == [Start] and after.active


def test_repeats_are_no_ops() -> None:
    st, _ = run([live("TS-NEWTARGETSTART", 0, **TARGET), live("MOUNT-HOMED", 1),
                 live("FILTERWHEEL-CHANGED", 2, Previous={"Name": "L"}, New={"Name": "R"}),
                 live("GUIDER-START", 3)])  # fmt: skip
    repeats = [
        live("TS-TARGETSTART", 4, **TARGET),
        live("MOUNT-HOMED", 5),
        live("FILTERWHEEL-CHANGED", 6, Previous={"Name": "R"}, New={"Name": "R"}),
        history(
            "FILTERWHEEL-CHANGED", 7, Previous={"Name": [], "Id": []}, New={"Name": [], "Id": []}
        ),
        live("FILTERWHEEL-CHANGED", 8, Previous={"Name": "L"}, New={"Name": "R"}),  # already R
        live("GUIDER-START", 9),
        live("SAFETY-CHANGED", 10, IsSafe="maybe"),  # a junk string is no bool
    ]
    for ev in repeats:
        step = apply(st, ev, RULES)
        assert step.commands == () and not step.notable and not step.changed, ev.type
        st = step.state


def test_older_events_never_overwrite_newer_values() -> None:
    st, _ = run([live("SEQUENCE-STARTING", 0), live("SAFETY-CHANGED", 10, IsSafe=False)])
    step = apply(st, history("SAFETY-CHANGED", 5, IsSafe=True), RULES)
    assert step.state.night is not None and step.state.night.attrs["is_safe"] is False
    assert not step.changed


def test_frames_are_counted_by_type_and_lights_by_filter() -> None:
    st, _ = run([live("SEQUENCE-STARTING", 0), image(1, filt="L"), image(2, filt="L"),
                 image(3, filt="R"), image(4, "FLAT", "L"), image(5, "DARK", ""),
                 image(6, "BIAS", "")])  # fmt: skip
    assert st.night is not None
    a = st.night.attrs
    assert a["images_by_type"] == {"LIGHT": 3, "FLAT": 1, "DARK": 1, "BIAS": 1}
    assert a["images_per_filter"] == {"L": 2, "R": 1}
    assert a["total_images"] == 3 and a["total_exposure_time"] == 900
    assert a["current_filter"] == "L"  # frames tell the filter (the flats'); darks have none
    assert [t["state"] for t in a["activity"]["timeline"]] == ["idle", "imaging", "flats", "darks"]


def test_unsafe_pauses_and_safe_resumes() -> None:
    st, _ = run([live("SEQUENCE-STARTING", 0), image(5), live("SAFETY-CHANGED", 6, IsSafe=False)])
    assert st.night is not None
    activity = st.night.attrs["activity"]
    assert activity["state"] == "paused_unsafe" and activity["previous"] == "imaging"
    assert activity["since"] == "2026-09-04T02:06:00.000Z"
    st, _ = run([live("SAFETY-CHANGED", 200, IsSafe=True), live("GUIDER-START", 210)], st)
    assert st.night is not None and st.night.active
    assert [t["state"] for t in st.night.attrs["activity"]["timeline"]][-3:] == [
        "paused_unsafe",
        "idle",
        "imaging",
    ]


def test_a_quiet_gap_longer_than_the_idle_timeout_ends_the_night_at_its_end() -> None:
    _, commands = run([live("SEQUENCE-STARTING", 0), image(5), image(9 * 60)])
    kinds = [type(c) for c in commands]
    assert kinds == [Start, Update, End, Start]
    end = commands[2]
    assert isinstance(end, End) and end.reason == "idle_timeout"
    assert end.at == T0 + timedelta(minutes=5) + timedelta(hours=8)


def test_the_rigs_registers_carry_into_the_next_night() -> None:
    _, commands = run([live("SAFETY-CHANGED", 0, IsSafe=True),
                        live("FILTERWHEEL-CHANGED", 1, Previous={"Name": "L"}, New={"Name": "Ha"}),
                        live("TS-NEWTARGETSTART", 2, **TARGET)])  # fmt: skip
    start = commands[0]
    assert isinstance(start, Start)
    assert start.attributes["is_safe"] is True and start.attributes["current_filter"] == "Ha"
    assert start.attributes["target_coordinates"] == {"ra": "00h 42m 44s", "dec": "+41° 16' 08\""}
    assert start.attributes["night"] == "2026-09-03"  # the evening the night began


def test_adjacent_updates_merge() -> None:
    at = T0
    merged = merge([Start(at, {"a": 1}, {}), Update(at, {"a": 2}, {"m": 1}),
                    Update(at + timedelta(1), {"b": 3}, {"m": 2}), End(at, "finish", "x")])  # fmt: skip
    assert [type(c) for c in merged] == [Start, Update, End]
    update = merged[1]
    assert isinstance(update, Update)
    assert update.attributes == {"a": 2, "b": 3} and update.metadata == {"m": 2}


def test_coordinates_from_numbers_or_strings() -> None:
    assert coordinates({"RA": 18.0458, "Dec": 7.1417}) == {
        "ra": "18h 02m 45s",
        "dec": "+07° 08' 30\"",
    }
    assert coordinates(
        {"RA": None, "Dec": None, "RAString": "05:34:32", "DecString": "-05:23"}
    ) == {
        "ra": "05:34:32",
        "dec": "-05:23",
    }
    assert coordinates({"RA": None, "Dec": None}) is None
    assert coordinates(None) is None


# -- dedupe -------------------------------------------------------------------------------


def applied(events: list[NinaEvent]) -> tuple[RigState, Deduper]:
    d = Deduper(timedelta(seconds=2))
    st = RigState("rig")
    for ev in events:
        assert d.verdict(ev, st.book) == NEW
        st = apply(st, ev, RULES).state
        d.record(ev)
    return st, d


def test_a_history_reseed_repeats_what_was_applied() -> None:
    items = [
        history("SEQUENCE-STARTING", 0),
        history("GUIDER-DITHER", 1),
        history("GUIDER-DITHER", 1.001),
    ]
    items += [history("AUTOFOCUS-POINT-ADDED", 2 + n, Position=n) for n in range(40)]
    st, d = applied(items)
    assert {d.verdict(ev, st.book) for ev in items} == {DUPLICATE}
    # After a restart (memory gone) the night's book alone still judges: the newest
    # identities are in it, and everything older than what was applied is stale.
    fresh = Deduper(timedelta(seconds=2))
    assert [fresh.verdict(ev, st.book) for ev in items[:3]] == [STALE] * 3
    assert fresh.verdict(items[-1], st.book) == DUPLICATE
    assert fresh.verdict(history("GUIDER-DITHER", 50), st.book) == NEW


def test_a_live_event_and_its_history_twin_are_one_event() -> None:
    got = live("FILTERWHEEL-CHANGED", 10, Previous={"Name": "L"}, New={"Name": "R"})
    st, d = applied([live("SEQUENCE-STARTING", 0), got])
    # History has the rig's time (a little earlier than the receipt) and lost the names.
    twin = from_history_item({"Event": "FILTERWHEEL-CHANGED", "Time": (got.time - timedelta(milliseconds=40)).isoformat(),
                              "Previous": {"Name": []}, "New": {"Name": []}}, CHICAGO)  # fmt: skip
    assert d.verdict(twin, st.book) == TWIN
    assert d.verdict(twin, st.book) in (TWIN, STALE, DUPLICATE)


def test_two_events_of_one_type_in_one_second_both_count() -> None:
    a, b = image(1, "FLAT", name="f1.fits"), image(1.004, "FLAT", name="f2.fits")
    st, d = applied([live("SEQUENCE-STARTING", 0), a, b])
    assert st.night is not None and st.night.attrs["images_by_type"] == {"FLAT": 2}
    # Both again from a re-seed (joined to the image history): exact identities, repeats.
    for ev in (a, b):
        again = from_history_item(
            {"Event": "IMAGE-SAVE", "Time": ev.time.isoformat(), "_image": ev.stats}, CHICAGO
        )
        assert again.identity == ev.identity
        assert d.verdict(again, st.book) == DUPLICATE
        assert Deduper(timedelta(seconds=2)).verdict(again, st.book) in (DUPLICATE, STALE)


def test_registers_set_during_a_night_carry_into_the_next() -> None:
    st, _ = run([live("SEQUENCE-STARTING", 0),
                 live("FILTERWHEEL-CHANGED", 1, Previous={"Name": "L"}, New={"Name": "Ha"}),
                 live("SAFETY-CHANGED", 2, IsSafe=False), live("SEQUENCE-FINISHED", 3),
                 live("MOUNT-PARKED", 4)])  # fmt: skip
    assert st.regs["current_filter"] == "Ha" and st.regs["mount_state"] == "parked"
    _, commands = run([live("TS-NEWTARGETSTART", 600, **TARGET)], st)
    start = commands[0]
    assert isinstance(start, Start)
    assert start.attributes["current_filter"] == "Ha" and start.attributes["is_safe"] is False
    # Still unsafe: the night starts paused, and a target selected does not change that.
    assert start.attributes["activity"]["state"] == "paused_unsafe"
