"""A night against the simulated rig: seeding, live events, pauses, calibration, the end."""

from __future__ import annotations

from sessionhub.kinds.imaging import parse_time

from .harness import RIG, TOPIC, Harness, truth

#: The keys of the document's ``unifiedSession`` data object, and the four the issue adds.
DOCUMENT_KEYS = {
    "session_id",
    "target_name",
    "target_coordinates",
    "session_state",
    "start_time",
    "end_time",
    "duration",
    "is_safe",
    "safety_timestamp",
    "is_guiding",
    "guiding_state",
    "guiding_rms",
    "current_filter",
    "filter_timestamp",
    "total_images",
    "exposure_time",
    "camera_temperature",
    "recent_events",
    "session_stats",
}
EXTRA_KEYS = {"images_by_type", "end_reason", "activity", "stream"}


async def test_a_whole_night_is_one_session_with_every_frame_counted_by_type(
    nina: Harness,
) -> None:
    await nina.play()
    state = await nina.state()
    assert set(state) == DOCUMENT_KEYS | EXTRA_KEYS
    expected = truth(nina.sim.script)
    assert expected["images_by_type"] == {"LIGHT": 8, "FLAT": 6, "DARK": 2}
    assert state["images_by_type"] == expected["images_by_type"]
    assert state["total_images"] == expected["total_images"]
    assert state["session_stats"] == {
        "total_exposure_time": expected["total_exposure_time"],
        "images_per_filter": expected["images_per_filter"],
    }
    # SEQUENCE-FINISHED ended it, at the rig's time.
    assert state["session_state"] == "finished"
    assert state["end_reason"] == "upstream_finished"
    assert state["end_time"] is not None and state["duration"] > 3600
    assert state["activity"]["state"] == "idle"
    assert state["target_coordinates"]["ra"] == "22h 47m 24s"  # the second target's RA
    assert state["exposure_time"] == 300.0 and state["camera_temperature"] is not None
    # Newest first, at most 20, each in the document's shape.
    recent = state["recent_events"]
    assert len(recent) == 20 and recent[0]["eventType"] == "SEQUENCE-FINISHED"
    stamps = [parse_time(e["timestamp"]) for e in recent]
    assert stamps == sorted(stamps, reverse=True)  # type: ignore[type-var]
    # It is an ordinary session: listed, and its events readable through the generic API.
    r = await nina.http.get("/api/sessions", params={"kind": "imaging"}, headers=nina.admin)
    assert r.status_code == 200
    items = r.json()["items"]
    assert [s["id"] for s in items] == [state["session_id"]]
    assert items[0]["owner"] == RIG and items[0]["state"] == "finished"
    events = await nina.session_events(state["session_id"])
    assert events[0]["type"] == "session.created"
    assert events[-1]["type"] == "session.state_changed"
    assert events[-1]["data"]["reason"] == "upstream_finished"


async def test_the_night_starts_at_the_first_sign_of_work_even_without_sequence_starting(
    nina: Harness,
) -> None:
    nina.sim.script = [s for s in nina.sim.script if s.event != "SEQUENCE-STARTING"]
    # Equipment, safety, autofocus: no work yet, so no night.
    await nina.play_until("TS-NEWTARGETSTART", including=False)
    assert (await nina.state())["session_id"] is None
    await nina.play(1)
    state = await nina.state()
    assert state["session_state"] == "active"
    assert state["target_name"] == "Barnard 160"
    first_work = nina.clock.now
    assert parse_time(state["start_time"]) == first_work.replace(
        microsecond=first_work.microsecond // 1000 * 1000
    )
    # Safety reported before the night began is carried into it.
    assert state["is_safe"] == 1 and state["safety_timestamp"] is not None


async def test_live_events_are_published_on_the_rig_topic_within_milliseconds(
    nina: Harness,
) -> None:
    await nina.play_until("TS-NEWTARGETSTART")
    latencies = []
    for _ in range(5):
        await nina.play_until("IMAGE-SAVE", including=False)
        seen = len(nina.recorder.of("nina-event"))
        await nina.sim.play(1)  # the rig saves a frame
        sent_at = nina.sim.sent[-1][0]
        await nina.recorder.wait(lambda r: len(r.of("nina-event")) > seen)  # noqa: B023
        arrival, message = next((t, m) for t, m in nina.recorder.items if m["type"] == "nina-event"
                                and m["data"]["Type"] == "IMAGE-SAVE" and t >= sent_at)  # fmt: skip
        latencies.append(arrival - sent_at)
        assert message["data"]["Source"] == "NINA"
        assert message["data"]["Data"]["ImageStatistics"]["ImageType"] == "LIGHT"
        await nina.recorder.wait(
            lambda r: (
                r.items[-1][1]["type"] == "sessionUpdate"
                and r.items[-1][1]["data"]["total_images"] == len(latencies)
            )
        )
    assert max(latencies) < 0.5, latencies  # typically a few milliseconds
    # The REST state reflects the last push, and says where on the topic it stands.
    state = await nina.state()
    pushed = nina.recorder.of("unifiedSession")[-1]["data"]
    assert state["total_images"] == pushed["total_images"] >= 1
    assert state["stream"]["topic"] == TOPIC
    assert state["stream"]["offset"] == len(nina.recorder.items)


async def test_the_unsafe_pause_and_the_resume_are_activity_not_lifecycle(nina: Harness) -> None:
    await nina.play_until("SAFETY-CHANGED")  # safe at dusk
    script = nina.sim.script
    unsafe = next(
        n
        for n in range(nina.sim.position, len(script))
        if script[n].event == "SAFETY-CHANGED" and script[n].fields["IsSafe"] is False
    )
    await nina.play(unsafe - nina.sim.position + 1)
    paused_at = nina.clock.now
    state = await nina.state()
    assert state["session_state"] == "active"
    assert state["is_safe"] == 0
    assert state["activity"]["state"] == "paused_unsafe"
    assert parse_time(state["activity"]["since"]) == paused_at.replace(
        microsecond=paused_at.microsecond // 1000 * 1000
    )
    assert state["activity"]["previous"] == "imaging"
    # Hours of MOUNT-HOMED while parked: one change (homed), then nothing.
    await nina.play_until("SAFETY-CHANGED")  # safe again
    state = await nina.state()
    assert state["is_safe"] == 1 and state["activity"]["state"] == "idle"
    assert state["activity"]["previous"] == "paused_unsafe"
    await nina.play_until("IMAGE-SAVE")
    state = await nina.state()
    assert state["activity"]["state"] == "imaging"
    timeline = [t["state"] for t in state["activity"]["timeline"]]
    assert timeline[-4:] == ["imaging", "paused_unsafe", "idle", "imaging"]
    assert state["session_state"] == "active"  # still the same night


async def test_repeats_make_no_event_no_push_and_no_write_but_feed_the_idle_timer(
    nina: Harness,
) -> None:
    await nina.play_until("IMAGE-SAVE")
    state = await nina.state()
    sid = state["session_id"]
    events_before = len(await nina.session_events(sid))
    pushes_before = len(nina.recorder.items)
    heartbeats_before = nina.runtime.hub.stats.heartbeats
    target = next(s for s in nina.sim.script if s.event == "TS-TARGETSTART").fields
    filt = state["current_filter"]
    await nina.sim.emit("MOUNT-HOMED")  # one real change: the mount reports homed
    await nina.barrier()
    assert len(await nina.session_events(sid)) == events_before + 1
    pushes_before = len(nina.recorder.items)
    for _ in range(10):
        nina.clock.advance(80)
        await nina.sim.emit("TS-TARGETSTART", target)  # "still on target"
        await nina.sim.emit("MOUNT-HOMED")
        await nina.sim.emit(
            "FILTERWHEEL-CHANGED",
            {"Previous": {"Name": filt, "Id": 1}, "New": {"Name": filt, "Id": 1}},
        )
        await nina.sim.emit("GUIDER-START")  # guiding already
    await nina.barrier()
    assert len(await nina.session_events(sid)) == events_before + 1
    assert len(nina.recorder.items) == pushes_before
    # Heartbeats instead (one per batch of repeats, coalesced in memory by the hub), which
    # carry the newest repeat's time to the idle timer.
    assert nina.runtime.hub.stats.heartbeats > heartbeats_before
    assert nina.runtime.hub.pending_activity(sid) == nina.clock.now


async def test_idle_timeout_ends_the_night_and_repeats_keep_it_alive(nina: Harness) -> None:
    await nina.play_until("IMAGE-SAVE")
    sid = (await nina.state())["session_id"]
    scheduler = nina.runtime.scheduler
    # Seven hours of bad weather with only MOUNT-HOMED from the rig: still one night.
    nina.clock.advance(7 * 3600)
    await nina.sim.emit("MOUNT-HOMED")
    await nina.sim.emit("MOUNT-HOMED")
    await nina.barrier()
    nina.clock.advance(2 * 3600)
    report = await scheduler.sweep()
    assert report.idled == []
    assert (await nina.state())["session_state"] == "active"
    # Then silence for longer than the idle timeout (8 h): the sweep ends it.
    nina.clock.advance(8 * 3600 + 60)
    pushes = len(nina.recorder.of("unifiedSession"))
    report = await scheduler.sweep()
    assert report.idled == [sid]
    await nina.recorder.wait(lambda r: len(r.of("unifiedSession")) > pushes)
    state = await nina.state()
    assert state["session_state"] == "finished"
    assert state["end_reason"] == "idle_timeout"
    assert nina.recorder.of("unifiedSession")[-1]["data"]["session_state"] == "finished"
    # The next sign of work is a new night.
    await nina.play_until("IMAGE-SAVE")
    state = await nina.state()
    assert state["session_id"] != sid and state["session_state"] == "active"
    assert state["total_images"] == 1
