"""Every payload recorded from live rigs (``../shared/fixtures/nina/recorded_events.json``)
through the normaliser, the fold and the connector. The file is third-party data kept outside
the repository: without it these tests are skipped, so a user's clone still passes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sessionhub.connectors.nina.dedupe import NEW, Deduper
from sessionhub.connectors.nina.normalize import (
    NinaEvent,
    from_envelope,
    from_history_item,
    parse_history,
)
from sessionhub.connectors.nina.state import RigState, Rules, apply

from .harness import FIXTURE, Harness

pytestmark = pytest.mark.skipif(
    not FIXTURE.exists(), reason=f"recorded NINA payloads not found at {FIXTURE}"
)
#: The recording rig's zone (its offsets are -05:00 in September: CDT).
ZONE = ZoneInfo("America/Chicago")
RECEIVED = datetime(2026, 9, 4, 18, 49, 5, tzinfo=UTC)


def entries() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(FIXTURE.read_text())
    return data


def by_channel(kind: str) -> list[dict[str, Any]]:
    return [e["payload"] for e in entries() if e["_channel"].startswith(kind)]


def normalised() -> list[NinaEvent]:
    out = [from_envelope(p, RECEIVED, ZONE) for p in by_channel("ws:")]
    out += [from_history_item(p, ZONE) for p in by_channel("rest:/v2/api/event-history")]
    return out


def test_the_recording_has_every_channel() -> None:
    assert len(entries()) == 72
    assert len(by_channel("ws:")) == 1
    assert len(by_channel("rest:/v2/api/image-history")) == 1
    assert len(by_channel("rest:/v2/api/event-history")) == 70


def test_every_recorded_event_normalises_cleanly() -> None:
    events = normalised()
    assert len(events) == 71
    for ev in events:
        assert ev.known, ev.type
        assert ev.bad_values == 0, (ev.type, ev.fields)
        assert ev.time.tzinfo is not None and ev.time.utcoffset() == timedelta(0)
    assert len({ev.identity for ev in events}) == len(events)  # none collapsed
    # The lost leaves of history are nulls, never empty lists.
    assert "[]" not in json.dumps([ev.fields for ev in events])


def test_recorded_time_zones_order_as_they_happened() -> None:
    pairs, bad = parse_history({"Response": by_channel("rest:/v2/api/event-history")}, [], ZONE)
    assert bad == []
    order = [ev.type for ev, _ in pairs]
    # TS-NEWTARGETSTART carries naive UTC (02:15:32), recorded after local 21:15:48 events.
    i = order.index("TS-NEWTARGETSTART")
    assert order[i - 1] == "AUTOFOCUS-FINISHED" and order[i + 2] == "ROTATOR-SYNCED"
    # ERROR-PLATESOLVE carries naive local time, between its neighbours.
    j = order.index("ERROR-PLATESOLVE")
    assert order[j - 1] == "GUIDER-START" and order[j + 1] == "IMAGE-SAVE"
    # TS-WAITSTART (naive UTC 01:33:37) lands right before MOUNT-HOMED (20:33:37.49 local).
    k = order.index("TS-WAITSTART")
    assert order[k + 1] == "MOUNT-HOMED"


def test_the_recorded_image_history_entry_joins_and_matches_the_socket_statistics() -> None:
    entry = by_channel("rest:/v2/api/image-history")[0]
    socket_stats = by_channel("ws:")[0]["Response"]["ImageStatistics"]
    assert set(entry) == set(socket_stats)  # "identical field set to socket ImageStatistics"
    item = {"Event": "IMAGE-SAVE", "Time": "2026-09-05T01:41:28.1-05:00"}
    pairs, _ = parse_history({"Response": [item]}, [entry], ZONE)
    joined = pairs[0][0]
    assert joined.stats["ImageType"] == "LIGHT" and joined.stats["Filter"] == "H"
    live = from_envelope(
        {"Response": {"Event": "IMAGE-SAVE", "ImageStatistics": entry}}, RECEIVED, ZONE
    )
    assert joined.identity == live.identity


def test_the_recording_folds_into_nights() -> None:
    events = sorted(normalised(), key=lambda e: e.time)
    st = RigState("rig")
    dedupe = Deduper(timedelta(seconds=2))
    rules = Rules(local=ZONE)
    starts: list[tuple[str, datetime]] = []
    ends: list[str] = []
    noops: list[str] = []
    for ev in events:
        assert dedupe.verdict(ev, st.book) == NEW
        step = apply(st, ev, rules)
        dedupe.record(ev)
        for c in step.commands:
            name = type(c).__name__
            if name == "Start":
                starts.append((ev.type, ev.time))
            elif name == "End":
                ends.append(c.reason)  # type: ignore[union-attr]
        if not step.notable and not step.changed:
            noops.append(ev.type)
        st = step.state
    # The 2025 flat session has no sign of work (flats only): no night.
    # The dawn night starts at its first new-target start, not at the equipment connects.
    assert starts[0] == ("TS-NEWTARGETSTART", datetime(2026, 9, 4, 2, 15, 32, 784847, tzinfo=UTC))
    # A quiet gap of more than 8 hours ends it; the scheduler tail's SEQUENCE-STARTING
    # (after its SEQUENCE-FINISHED) starts the next.
    assert ends == ["idle_timeout"]
    assert starts[-1][0] == "SEQUENCE-STARTING"
    # Both recorded filter changes are no-ops: [] leaves, and Ha -> Ha.
    assert noops.count("FILTERWHEEL-CHANGED") == 2
    assert "TS-TARGETSTART" in noops  # "still on target"
    assert noops.count("MOUNT-HOMED") == 1  # the second report of a homed mount


async def test_the_recording_through_the_connector(idle: Harness) -> None:
    idle.clock.now = datetime(2026, 9, 16, 2, 0, tzinfo=UTC)  # just after the last recorded
    idle.sim.history[:] = by_channel("rest:/v2/api/event-history")
    idle.sim.images[:] = by_channel("rest:/v2/api/image-history")
    await idle.start()
    await idle.sim.inject(json.dumps(by_channel("ws:")[0]))
    await idle.barrier()
    health = idle.runner.status.to_json()
    assert health["bad_input"] == 0
    c = health["counts"]
    assert c["events"] == 71 and c["applied"] == 71
    state = await idle.state()
    assert state["session_state"] == "active"
    # The live DARK frame of the recording: counted in the night by type, and what the rig
    # is doing now.
    assert state["activity"]["state"] == "darks"
    assert state["images_by_type"] == {"DARK": 1}
