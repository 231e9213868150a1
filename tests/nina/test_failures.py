"""The rig off, restarted, cut off; bad input; seeding from history; refresh; re-seeds."""

from __future__ import annotations

import json
from datetime import timedelta

from sessionhub.kinds.imaging import parse_time

from .harness import Harness, truth


def counts(h: Harness) -> dict[str, int]:
    return h.runner.status.to_json()["counts"]


async def test_seeding_from_history_uses_the_rigs_own_times(idle: Harness) -> None:
    # The rig worked for an hour before sessionhub started: all of it is in its history.
    played = await idle.play(idle.steps_until("SAFETY-CHANGED") + 40)
    idle.clock.advance(600)  # sessionhub starts ten minutes later
    await idle.start()
    state = await idle.state()
    assert state["session_state"] == "active"
    # The night began at the rig's SEQUENCE-STARTING, not when the history was read.
    started = parse_time(state["start_time"])
    assert started is not None and idle.clock.now - started > timedelta(minutes=30)
    starting = next(i for i in idle.sim.history if i["Event"] == "SEQUENCE-STARTING")
    local = started.astimezone(idle.sim.zone).strftime("%Y-%m-%dT%H:%M:%S")
    assert starting["Time"].startswith(local)
    script = idle.sim.script[:played]
    images = [s.image for s in script if s.event == "IMAGE-SAVE" and s.image is not None]
    assert state["total_images"] == len(images) >= 1
    # History lost the filter names ([] leaves): the joined image statistics tell them.
    assert state["current_filter"] == images[-1]["Filter"]
    per_filter: dict[str, int] = {}
    for image in images:
        per_filter[image["Filter"]] = per_filter.get(image["Filter"], 0) + 1
    assert state["session_stats"]["images_per_filter"] == per_filter
    assert counts(idle)["seeds"] == 1
    assert idle.runner.status.to_json()["bad_input"] == 0


async def test_history_in_mixed_time_zones_is_ordered_by_real_time(idle: Harness) -> None:
    await idle.play(idle.steps_until("ERROR-PLATESOLVE"))
    await idle.start()
    raw = {i["Event"]: i["Time"] for i in idle.sim.history}
    # Three styles in one history: offset, naive UTC (TS-*), naive local (log-scraped).
    assert raw["ROTATOR-MOVED"].endswith("-05:00")
    assert "+" not in raw["TS-NEWTARGETSTART"] and raw["TS-NEWTARGETSTART"][-6] != "-"
    assert raw["ERROR-PLATESOLVE"][-6] not in "+-" and raw["MOUNT-CENTER"][-6] not in "+-"
    state = await idle.state()
    recent = list(reversed(state["recent_events"]))  # oldest first
    stamps = [parse_time(e["timestamp"]) for e in recent]
    assert stamps == sorted(stamps)  # type: ignore[type-var]
    # The plate-solve error (naive local) sits right after the resume that preceded it.
    kinds = [e["eventType"] for e in recent]
    assert kinds[-1] == "ERROR-PLATESOLVE"
    assert kinds[-2] == "MOUNT-UNPARKED"


async def test_a_rig_that_is_off_at_start_is_retried_until_it_answers(idle: Harness) -> None:
    await idle.sim.cut()  # nothing listens: connections are refused
    service = idle.make_service()  # type: ignore[misc]
    idle.service = service
    await service.start()
    await idle.runner.wait_for(lambda r: r.status.failures >= 3, 5.0)
    health = service.health()["rigs"]["nightsky"]
    assert health["connected"] is False and health["retries"] >= 3
    assert "Connect" in (health["last_error"] or "") or "Errno" in (health["last_error"] or "")
    await idle.sim.restore()
    await idle.connected()
    assert idle.runner.status.retries == 0


async def test_a_rig_restart_loses_nothing_and_counts_nothing_twice(nina: Harness) -> None:
    await nina.play(nina.steps_until("IMAGE-SAVE") + 12)
    before = await nina.state()
    await nina.sim.restart()  # NINA restarts: socket dropped, its history empty
    await nina.connected(reconnects=1)
    assert (await nina.state())["total_images"] == before["total_images"]
    await nina.play()
    state = await nina.state()
    expected = truth(nina.sim.script)
    assert state["images_by_type"] == expected["images_by_type"]
    assert state["session_stats"]["images_per_filter"] == expected["images_per_filter"]
    assert state["session_id"] == before["session_id"]  # still one night
    assert state["end_reason"] == "upstream_finished"
    assert nina.runner.status.to_json()["reconnects"] >= 1


async def test_a_network_cut_is_caught_up_from_history_exactly_once(nina: Harness) -> None:
    await nina.play(nina.steps_until("IMAGE-SAVE") + 6)
    await nina.sim.cut()
    await nina.runner.wait_for(lambda r: not r.status.connected, 5.0)
    # The rig goes on working while the network is down: the socket misses all of this.
    missed = await nina.sim.play(nina.steps_until("IMAGE-SAVE") + 10)
    assert missed > 10
    await nina.sim.restore()
    await nina.connected(reconnects=1)
    await nina.play()
    state = await nina.state()
    expected = truth(nina.sim.script)
    assert state["images_by_type"] == expected["images_by_type"]
    assert state["total_images"] == expected["total_images"]
    assert state["session_stats"]["total_exposure_time"] == expected["total_exposure_time"]
    c = counts(nina)
    assert c["seeds"] == 2 and c["stale"] + c["duplicate"] + c["twin"] > 0
    health = (await nina.http.get("/api/config/health")).json()["nina"]["rigs"]["nightsky"]
    assert health["reconnects"] >= 1 and health["failures"] >= 1 and health["connected"]
    # Each image appears once in the recent events (no re-seeded duplicates).
    paths = [e["ImagePath"] for e in state["recent_events"] if e["eventType"] == "IMAGE-SAVE"]
    assert len(paths) == len(set(paths))


async def test_refresh_is_idempotent(nina: Harness) -> None:
    await nina.play(nina.steps_until("IMAGE-SAVE") + 20)
    before = await nina.state()
    sid = before["session_id"]
    events = len(await nina.session_events(sid))
    r = await nina.http.post("/api/nina/session-state/refresh", headers=nina.admin)
    assert r.status_code == 200
    again = r.json()
    r = await nina.http.post("/api/session/refresh", headers=nina.admin)
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True and body["message"] and body["timestamp"]
    for data in (again, body["data"]):
        assert data["total_images"] == before["total_images"]
        assert data["images_by_type"] == before["images_by_type"]
        assert data["recent_events"] == before["recent_events"]
    assert len(await nina.session_events(sid)) == events  # nothing written
    assert counts(nina)["seeds"] == 3


async def test_bad_input_is_counted_and_never_stops_the_connector(nina: Harness) -> None:
    await nina.play(nina.steps_until("TS-NEWTARGETSTART"))
    sim = nina.sim
    await sim.inject("{not json")
    await sim.inject(b"\x00\xff\xfe binary junk")
    await sim.inject(json.dumps([1, 2, 3]))
    await sim.inject(json.dumps({"Response": {"NoEvent": 1}, "Type": "Socket"}))
    await sim.inject(json.dumps({"Response": {"Event": 42}, "Type": "Socket"}))
    await sim.inject(json.dumps({"Response": {"Event": "PLUGIN-FROBNICATED"}, "Type": "Socket"}))
    await sim.inject(
        json.dumps({"Response": "", "Error": "boom", "Success": False, "Type": "Socket"})
    )
    await sim.inject(json.dumps({"Response": {"Event": "SAFETY-CHANGED", "IsSafe": {"x": 1}}}))
    for i in range(2000):  # a flood
        await sim.inject(f'{{"Response": {{"Event": "{i}"')
    await nina.barrier()
    c = counts(nina)
    assert c["bad_json"] >= 2002
    assert c["bad_shape"] >= 3
    assert c["error_frame"] == 1 and c["unknown_events"] == 1 and c["bad_values"] >= 1
    assert (await nina.state())["is_safe"] == 1  # the bad IsSafe changed nothing
    # A 10 MB frame: over the limit, counted; the socket is reopened and nothing is lost.
    await sim.inject("x" * (10 * 1024 * 1024))
    await nina.runner.wait_for(lambda r: r.status.counts.get("oversized", 0) == 1, 5.0)
    await nina.connected(reconnects=1)
    await nina.play()
    state = await nina.state()
    assert state["images_by_type"] == truth(sim.script)["images_by_type"]
    health = nina.service.health()["rigs"]["nightsky"]  # type: ignore[union-attr]
    assert health["bad_input"] >= 2009


async def test_two_frames_of_one_type_in_one_second_both_count(nina: Harness) -> None:
    await nina.play(nina.steps_until("IMAGE-SAVE"))
    flat = next(s.image for s in nina.sim.script if s.event == "IMAGE-SAVE")
    assert flat is not None
    before = (await nina.state())["images_by_type"]
    for n in range(2):
        nina.clock.advance(0.3)
        await nina.sim.emit(
            "IMAGE-SAVE", image={**flat, "ImageType": "FLAT", "Filename": f"f{n}.fits"}
        )
    await nina.barrier()
    after = (await nina.state())["images_by_type"]
    assert after.get("FLAT", 0) == before.get("FLAT", 0) + 2
    # And a re-seed of both from history (same second) counts neither again.
    await nina.http.post("/api/nina/session-state/refresh", headers=nina.admin)
    assert (await nina.state())["images_by_type"] == after
