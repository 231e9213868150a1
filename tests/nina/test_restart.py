"""sessionhub restarting mid-night: the night comes back from the store, and the re-seed from
the rig's history (which holds everything it already applied) counts nothing twice."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import FakeClock
from sessionhub.connectors.nina import rawlog
from sessionhub.connectors.nina.simulator import NinaSimulator
from sessionhub.server.runtime import Runtime
from sessionhub.settings import Settings

from .harness import Harness, open_harness, truth


def admin(runtime: Runtime) -> dict[str, str]:
    return {"Authorization": f"Bearer {runtime.auth.issue('root', ['admin'])}"}


async def test_restart_mid_night_restores_state_and_a_reseed_does_not_double_count(
    settings: Settings,
    make_runtime: Callable[[Settings], Runtime],
    sim: NinaSimulator,
    clock: FakeClock,
) -> None:
    first = make_runtime(settings)
    async with open_harness(first, sim, clock, admin(first)) as h:
        await h.start()
        # Through the unsafe pause: lights, a no-op filter change, MOUNT-HOMED repeats.
        await h.play(h.steps_until("ERROR-PLATESOLVE") + 3)
        before = await h.state()
        sid = before["session_id"]
        events_before = len(await h.session_events(sid))
    assert before["total_images"] >= 4

    # A second process on the same database file while the rig keeps its history.
    second = make_runtime(settings)
    async with open_harness(second, sim, clock, admin(second)) as h2:
        service = h2.make_service()  # type: ignore[misc]
        h2.service = service
        second.nina = service  # type: ignore[attr-defined]
        await service.start()
        restored = await service.state()  # straight from the store
        for key in ("session_id", "total_images", "images_by_type", "session_stats", "is_safe"):
            assert restored[key] == before[key], key
        await h2.connected()  # seeded again from the whole history
        after = await h2.state()
        assert after["session_id"] == sid
        assert after["images_by_type"] == before["images_by_type"]
        assert after["recent_events"] == before["recent_events"]
        assert len(await h2.session_events(sid)) == events_before  # the re-seed wrote nothing
        c = h2.runner.status.to_json()["counts"]
        assert c["applied"] == 0 and c["stale"] + c["duplicate"] > 0
        # And the rest of the night goes on in the same session.
        await h2.play()
        final = await h2.state()
    expected = truth(sim.script)
    assert final["session_id"] == sid
    assert final["images_by_type"] == expected["images_by_type"]
    assert final["session_stats"]["images_per_filter"] == expected["images_per_filter"]
    assert final["session_state"] == "finished"


async def test_the_raw_events_rebuild_the_night(nina: Harness) -> None:
    await nina.play()
    live = await nina.state()
    service = nina.service
    assert service is not None
    rebuilt = await service.replay()
    assert rebuilt.night is not None
    attrs = rebuilt.night.attrs
    assert attrs["images_by_type"] == live["images_by_type"]
    assert attrs["images_per_filter"] == live["session_stats"]["images_per_filter"]
    assert attrs["recent_events"] == list(reversed(live["recent_events"]))
    assert rebuilt.night.end_reason == "upstream_finished"
    kept = await rawlog.RawLog(nina.runtime.hub, "nina:nightsky", 10).records()
    # Every applied event is kept once (repeats and junk are not).
    assert len(kept) == nina.runner.status.counts["applied"]


async def test_raw_event_retention_is_a_setting(
    runtime: Runtime,
    sim: NinaSimulator,
    clock: FakeClock,
    auth: Callable[..., dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rawlog, "TRIM_EVERY", 10)
    async with open_harness(runtime, sim, clock, auth("root", "admin"), raw_retention=25) as h:
        await h.start()
        await h.play(80)
        kept = await rawlog.RawLog(runtime.hub, "nina:nightsky", 25).records()
        assert h.runner.status.counts["applied"] > 60
        assert 25 <= len(kept) < 40  # trimmed back to 25 every 10 appends
