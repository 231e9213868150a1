"""The normaliser as a pure function: shapes, time zones, lost values, identities."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from sessionhub.connectors.nina.normalize import (
    HISTORY,
    SOCKET,
    BadInput,
    from_envelope,
    from_history_item,
    guider_event,
    image_items,
    parse_frame,
    parse_history,
    parse_time,
)

CHICAGO = ZoneInfo("America/Chicago")
NOW = datetime(2026, 9, 4, 3, 0, tzinfo=UTC)


def envelope(response: object, **top: object) -> dict[str, object]:
    return {
        "Response": response,
        "Error": "",
        "StatusCode": 200,
        "Success": True,
        "Type": "Socket",
        **top,
    }


def shuffled(value: object, rng: random.Random) -> object:
    if isinstance(value, dict):
        items = [(k, shuffled(v, rng)) for k, v in value.items()]
        rng.shuffle(items)
        return dict(items)
    return value


STATS = {
    "ExposureTime": 600,
    "ImageType": "LIGHT",
    "Filter": "H",
    "Temperature": -5,
    "Date": "2026-09-05T01:41:27.6528392-05:00",
    "Filename": "frame_aa733dce.fits",
    "HFR": 1.44,
    "Stars": 4026,
}


def test_a_socket_event_is_stamped_on_receipt_and_key_order_does_not_matter() -> None:
    raw = envelope({"Event": "SAFETY-CHANGED", "IsSafe": True})
    ev = from_envelope(raw, NOW, CHICAGO)
    assert (ev.type, ev.time, ev.source, ev.fields) == (
        "SAFETY-CHANGED",
        NOW,
        SOCKET,
        {"IsSafe": True},
    )
    rng = random.Random(1)
    for _ in range(5):
        again = parse_frame(json.dumps(shuffled(raw, rng)), NOW, CHICAGO)
        assert again.identity == ev.identity
    later = from_envelope(raw, NOW.replace(second=1), CHICAGO)
    assert later.identity != ev.identity  # a second event of the same kind is another event


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_shape"),
        (json.dumps(envelope({"NoEvent": 1})), "bad_shape"),
        (json.dumps(envelope({"Event": 7})), "bad_shape"),
        (json.dumps(envelope({"Event": "not an event!"})), "bad_shape"),
        (json.dumps(envelope("Hello from the user")), "message"),
        (json.dumps(envelope("", Error="Oops", Success=False)), "error_frame"),
    ],
)
def test_unusable_frames_say_why(frame: str, reason: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_frame(frame, NOW, CHICAGO)
    assert info.value.reason == reason


def test_history_times_offset_naive_utc_and_naive_local() -> None:
    offset = from_history_item(
        {"Event": "SAFETY-CHANGED", "Time": "2026-09-03T21:06:04.415476-05:00"}, CHICAGO
    )
    assert offset.time == datetime(2026, 9, 4, 2, 6, 4, 415476, tzinfo=UTC)
    assert offset.source == HISTORY
    # TS-* events are naive UTC, with seven fractional digits (.NET).
    ts = from_history_item({"Event": "TS-NEWTARGETSTART", "Time": "2026-09-04T02:15:32.7848473",
                            "TargetEndTime": "2026-09-04T06:21:20.4046076"}, CHICAGO)  # fmt: skip
    assert ts.time == datetime(2026, 9, 4, 2, 15, 32, 784847, tzinfo=UTC)
    assert ts.fields["TargetEndTime"] == "2026-09-04T06:21:20.404607+00:00"
    # Log-scraped events are naive local: CDT (-5) in September, CST (-6) in January.
    summer = from_history_item(
        {"Event": "ERROR-PLATESOLVE", "Time": "2026-09-03T21:54:26.9349"}, CHICAGO
    )
    assert summer.time == datetime(2026, 9, 4, 2, 54, 26, 934900, tzinfo=UTC)
    winter = from_history_item({"Event": "MOUNT-CENTER", "Time": "2026-01-10T21:00:00"}, CHICAGO)
    assert winter.time == datetime(2026, 1, 11, 3, 0, tzinfo=UTC)
    dome = from_history_item(
        {"Event": "DOME-STOPPED", "Time": "2026-01-10T21:00:00"}, ZoneInfo("Europe/Berlin")
    )
    assert dome.time == datetime(2026, 1, 10, 20, 0, tzinfo=UTC)
    with pytest.raises(BadInput) as info:
        from_history_item({"Event": "SAFETY-CHANGED", "Time": "yesterday"}, CHICAGO)
    assert info.value.reason == "bad_time"


def test_lost_leaves_nan_and_string_booleans() -> None:
    ev = from_history_item(
        {"Event": "FILTERWHEEL-CHANGED", "Time": "2026-09-03T21:16:29.26289-05:00",
         "Previous": {"Name": [], "Id": []}, "New": {"Name": [], "Id": []}},
        CHICAGO,
    )  # fmt: skip
    assert ev.fields == {"Previous": {"Name": None, "Id": None}, "New": {"Name": None, "Id": None}}
    assert ev.bad_values == 0
    safe = from_envelope(envelope({"Event": "SAFETY-CHANGED", "IsSafe": "True"}), NOW, CHICAGO)
    assert safe.fields["IsSafe"] is True
    af = from_envelope(
        envelope({"Event": "AUTOFOCUS-POINT-ADDED", "HFR": "NaN", "Position": "2440"}), NOW, CHICAGO
    )
    assert af.fields == {"HFR": None, "Position": 2440.0}
    wrong = from_envelope(
        envelope({"Event": "SAFETY-CHANGED", "IsSafe": {"deep": 1}}), NOW, CHICAGO
    )
    assert wrong.fields["IsSafe"] is None and wrong.bad_values == 1
    wrong = from_envelope(
        envelope({"Event": "IMAGE-SAVE", "ImageStatistics": {"HFR": "fast"}}), NOW, CHICAGO
    )
    assert wrong.stats["HFR"] is None and wrong.bad_values == 1


def test_image_saved_is_image_save_and_one_image_is_one_identity_on_both_channels() -> None:
    live = from_envelope(
        envelope({"Event": "IMAGE-SAVED", "ImageStatistics": {**STATS, "ExposureTime": 600.0}}),
        NOW,
        CHICAGO,
    )
    assert live.type == "IMAGE-SAVE"
    assert live.image_time == datetime(2026, 9, 5, 6, 41, 27, 652839, tzinfo=UTC)
    item = {"Event": "IMAGE-SAVE", "Time": "2026-09-05T01:41:27.9-05:00"}
    pairs, bad = parse_history({"Response": [item]}, [STATS], CHICAGO)
    assert bad == [] and len(pairs) == 1
    joined, raw = pairs[0]
    assert joined.stats["ImageType"] == "LIGHT" and raw["_image"] == STATS
    assert joined.identity == live.identity  # 600 in image history, 600.0 on the socket
    # The raw form the log keeps parses back to the same event.
    assert from_history_item(raw, CHICAGO).identity == live.identity


def test_history_is_ordered_by_normalised_time_and_joined_to_images() -> None:
    history = [
        {"Event": "AUTOFOCUS-FINISHED", "Time": "2026-09-03T21:10:35.3236411-05:00"},
        {"Event": "ROTATOR-SYNCED", "Time": "2026-09-03T21:15:48.9769097-05:00"},
        # Naive UTC, appended late: 21:15:32 local, before the rotator.
        {"Event": "TS-NEWTARGETSTART", "Time": "2026-09-04T02:15:32.7848473"},
        {"Event": "IMAGE-SAVE", "Time": "2026-09-03T21:26:56.6584856-05:00"},
        {"Event": "ERROR-PLATESOLVE", "Time": "2026-09-03T21:20:00.5"},  # naive local
        {"Event": "IMAGE-SAVE", "Time": "2026-09-03T21:40:00-05:00"},  # no image near
    ]
    images = [
        {**STATS, "Date": "2026-09-03T21:00:00-05:00", "Filename": "orphan.fits"},
        {**STATS, "Date": "2026-09-03T21:26:57.1-05:00", "Filename": "a.fits"},
    ]
    pairs, _ = parse_history({"Response": history}, images, CHICAGO)
    kinds = [ev.type for ev, _ in pairs]
    assert kinds == ["AUTOFOCUS-FINISHED", "TS-NEWTARGETSTART", "ROTATOR-SYNCED",
                     "ERROR-PLATESOLVE", "IMAGE-SAVE", "IMAGE-SAVE"]  # fmt: skip
    assert pairs[4][0].stats["Filename"] == "a.fits"
    assert pairs[5][0].stats == {}  # unjoined: the image history has nothing within a second
    times = [ev.time for ev, _ in pairs]
    assert times == sorted(times)


def test_empty_image_history_is_not_an_error() -> None:
    body = {
        "Response": "",
        "Error": "Index out of range",
        "StatusCode": 400,
        "Success": False,
        "Type": "API",
    }
    assert image_items(400, body) == []
    assert image_items(200, {"Response": [STATS, "junk"]}) == [STATS]
    with pytest.raises(BadInput):
        image_items(500, {"Response": "", "Error": "Internal"})


def test_guider_info() -> None:
    body = {"Response": {"Connected": True, "State": "Guiding",
                         "RMSError": {"Total": {"Arcseconds": "0.62", "Pixel": 0.4}}}}  # fmt: skip
    ev = guider_event(body, NOW)
    assert ev.type == "GUIDER-INFO" and ev.fields == {
        "Connected": True,
        "State": "Guiding",
        "RMS": 0.62,
    }
    assert (
        guider_event({"Response": {"State": "Stopped", "RMSError": []}}, NOW).fields["RMS"] is None
    )
    with pytest.raises(BadInput):
        guider_event({"Response": "nope"}, NOW)


def test_parse_time_rejects_nonsense() -> None:
    assert parse_time("2026-09-03", UTC) == datetime(2026, 9, 3, tzinfo=UTC)
    for junk in (None, 17, "", "x" * 60, "2026-13-40T00:00:00"):
        assert parse_time(junk, UTC) is None
