"""Session and event records: timestamps, serialisation, durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from sessionhub.core.model import Event, Session, iso, parse_iso

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_iso_is_utc_with_z_and_parse_round_trips() -> None:
    assert iso(None) is None
    assert iso(T0) == "2026-01-01T12:00:00Z"
    assert iso(datetime(2026, 1, 1, 12, 0)) == "2026-01-01T12:00:00Z"  # naive is UTC
    cet = timezone(timedelta(hours=1))
    assert iso(datetime(2026, 1, 1, 13, 0, tzinfo=cet)) == "2026-01-01T12:00:00Z"
    assert parse_iso("2026-01-01T12:00:00Z") == T0
    assert parse_iso("2026-01-01T12:00:00") == T0
    assert parse_iso(iso(T0 + timedelta(microseconds=5)) or "") == T0 + timedelta(microseconds=5)


_ZONES = [UTC, timezone(timedelta(hours=-7)), timezone(timedelta(hours=5, minutes=30))]


@given(st.datetimes(timezones=st.sampled_from(_ZONES)))
def test_iso_writes_what_isoformat_writes(ts: datetime) -> None:
    # iso() takes orjson's shortcut; its text must stay isoformat's (a fraction only when
    # there are microseconds, years below 1000 zero-padded), whatever the time.
    expected = ts.astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert iso(ts) == expected
    assert parse_iso(expected) == ts


class _Stamp(datetime):
    """A datetime subclass (orjson refuses them)."""


def test_iso_of_a_datetime_subclass() -> None:
    assert iso(_Stamp(2026, 1, 1, 12, 0, 0, 5, tzinfo=UTC)) == "2026-01-01T12:00:00.000005Z"


def test_session_to_dict_and_duration() -> None:
    s = Session(
        id="s",
        kind="k",
        owner="o",
        state="a",
        version=1,
        created_at=T0,
        updated_at=T0,
        last_activity_at=T0,
    )
    d = s.to_dict()
    assert d["created_at"] == "2026-01-01T12:00:00Z" and d["ended_at"] is None
    assert s.duration_seconds(T0 + timedelta(seconds=90)) == 90.0
    assert s.duration_seconds(T0 - timedelta(seconds=5)) == 0.0  # never negative
    ended = s.evolve(ended_at=T0 + timedelta(seconds=10), started_at=T0 + timedelta(seconds=2))
    assert ended.duration_seconds(T0 + timedelta(days=1)) == 8.0
    assert s.version == 1 and ended is not s


def test_event_to_dict_leaves_out_the_store_sequence() -> None:
    e = Event("e", "t", "s", "k", "o", "a", T0, 3, {"x": 1}, seq=42)
    assert e.to_dict() == {
        "id": "e",
        "type": "t",
        "session_id": "s",
        "kind": "k",
        "owner": "o",
        "actor": "a",
        "at": "2026-01-01T12:00:00Z",
        "version": 3,
        "data": {"x": 1},
    }
