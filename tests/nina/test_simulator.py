"""The simulated rig itself: its HTTP answers, its time formats, its command line."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import httpx

from sessionhub.connectors.nina.simnight import NightPlan, generate_night
from sessionhub.connectors.nina.simulator import NinaSimulator, main, render_time

from .harness import SMALL


def test_history_times_look_like_the_real_rigs() -> None:
    ts = datetime(2026, 9, 4, 2, 15, 32, 784847, tzinfo=UTC)
    chicago = ZoneInfo("America/Chicago")
    assert render_time(ts, "SAFETY-CHANGED", chicago) == "2026-09-03T21:15:32.7848470-05:00"
    assert render_time(ts, "TS-NEWTARGETSTART", chicago) == "2026-09-04T02:15:32.7848470"
    assert render_time(ts, "ERROR-PLATESOLVE", chicago) == "2026-09-03T21:15:32.7848470"


def test_the_generated_night_is_realistic_and_seeded() -> None:
    night = generate_night(SMALL)
    assert night == generate_night(SMALL)
    kinds = [s.event for s in night]
    assert kinds.count("SEQUENCE-FINISHED") == 1 and kinds[-1] == "SEQUENCE-FINISHED"
    assert kinds.count("MOUNT-HOMED") == SMALL.homed_repeats + 1
    assert kinds.count("TS-TARGETSTART") > kinds.count("TS-NEWTARGETSTART")  # repeats
    assert any(s.fields.get("IsSafe") == "True" for s in night)
    assert "SEQUENCE-STARTING" not in [
        s.event for s in generate_night(NightPlan(sequence_start=False))
    ]


async def test_the_http_answers() -> None:
    sim = NinaSimulator(plan=SMALL, speed=0)
    await sim.start()
    try:
        async with httpx.AsyncClient(base_url=sim.url, trust_env=False) as http:
            r = await http.get("/v2/api/image-history", params={"all": "true"})
            assert r.status_code == 400 and r.json()["Error"] == "Index out of range"
            await sim.play(
                sim.script.index(next(s for s in sim.script if s.event == "IMAGE-SAVE")) + 1
            )
            r = await http.get("/v2/api/image-history", params={"all": "true"})
            assert r.status_code == 200 and r.json()["Response"][0]["ImageType"] == "LIGHT"
            history = (await http.get("/v2/api/event-history")).json()["Response"]
            assert history[-1] == {"Event": "IMAGE-SAVE", "Time": history[-1]["Time"]}
            lost = next(i for i in history if i["Event"] == "TS-NEWTARGETSTART")
            assert lost["Coordinates"]["RA"] == []
            info = (await http.get("/v2/api/equipment/guider/info")).json()["Response"]
            assert info["State"] == "Guiding" and info["RMSError"]["Total"]["Arcseconds"] > 0
            assert (await http.get("/nope")).status_code == 404
            assert (await http.get("/v2/version")).json()["Response"]
    finally:
        await sim.close()


def test_the_command_line_plays_a_night() -> None:
    assert main(["--port", "0", "--speed", "1000000", "--seed", "3", "--exit"]) == 0
