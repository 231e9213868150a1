"""The ``imaging`` kind: its forward-only lifecycle, its validated state, its timeouts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conftest import FakeClock
from sessionhub.connectors.nina.service import NinaService
from sessionhub.core import engine
from sessionhub.core.errors import Forbidden, IllegalTransition, InvalidInput
from sessionhub.core.principal import SYSTEM_PRINCIPAL, Principal
from sessionhub.kinds import registry
from sessionhub.kinds.imaging import Imaging, empty_unified_session, js_time, unified_session
from sessionhub.server.runtime import Runtime

from .harness import nina_config, with_imaging

ADMIN = Principal("root", frozenset({"admin"}))
RIG = Principal("nightsky")
T = datetime(2026, 9, 4, 2, 0, tzinfo=UTC)


def night(**attrs: object) -> engine.Change:
    return engine.create(
        Imaging(),
        session_id="img_1",
        owner="nightsky",
        attributes={"rig": "nightsky", **attrs},
        metadata={},
        actor=SYSTEM_PRINCIPAL,
        now=T,
        event_id="e1",
    )


@pytest.mark.parametrize(
    ("action", "actor", "reason"),
    [
        ("finish", SYSTEM_PRINCIPAL, "upstream_finished"),
        ("finish", ADMIN, "upstream_finished"),
        ("abandon", SYSTEM_PRINCIPAL, "idle_timeout"),
        ("stop", ADMIN, "stopped"),
    ],
)
def test_a_night_ends_once_with_its_reason(action: str, actor: Principal, reason: str) -> None:
    kind = Imaging()
    s = night().session
    assert s.state == "active" and s.started_at == T
    ended = engine.act(kind, s, action, actor=actor, now=T + timedelta(hours=9), event_id="e2")
    assert ended.session.state == "finished" and ended.session.end_reason == reason
    with pytest.raises(IllegalTransition):
        engine.act(kind, ended.session, "finish", actor=SYSTEM_PRINCIPAL, now=T, event_id="e3")


def test_only_the_system_abandons_and_only_an_admin_stops() -> None:
    s = night().session
    with pytest.raises(Forbidden):
        engine.act(Imaging(), s, "abandon", actor=ADMIN, now=T, event_id="e")
    with pytest.raises(Forbidden):
        engine.act(Imaging(), s, "stop", actor=RIG, now=T, event_id="e")


@pytest.mark.parametrize(
    "attrs",
    [
        {"activity": {"state": "dancing", "since": None}},
        {"activity": {"state": "idle", "since": "not a time"}},
        {"images_by_type": {"LIGHT": -1}},
        {"images_per_filter": {"L": True}},
        {"recent_events": [{"timestamp": "2026-09-04T02:00:00Z"}]},
        {"safety_timestamp": "soon"},
        {"target_coordinates": {"ra": 1.5}},
        {"equipment": {"CAMERA": {"connected": "yes"}}},
        {"is_safe": 1},
        {"colour": "red"},
    ],
)
def test_the_state_is_validated(attrs: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        night(**attrs)


def test_the_rig_cannot_change_and_a_rigless_night_cannot_exist() -> None:
    s = night().session
    with pytest.raises(InvalidInput):
        engine.update(
            Imaging(), s, actor=SYSTEM_PRINCIPAL, now=T, event_id="e", attributes={"rig": "x"}
        )
    with pytest.raises(InvalidInput):
        engine.create(Imaging(), session_id="i", owner="x", attributes={}, metadata={},
                      actor=SYSTEM_PRINCIPAL, now=T, event_id="e")  # fmt: skip


def test_the_unified_session_is_the_documents_shape() -> None:
    s = night(is_safe=True, is_guiding=False, total_images=3, guiding_rms=0.62,
              images_by_type={"LIGHT": 3, "FLAT": 10},
              recent_events=[{"eventType": "A", "timestamp": "x"},
                             {"eventType": "B", "timestamp": "y"}]).session  # fmt: skip
    data = unified_session(s, T + timedelta(minutes=90, seconds=5))
    assert data["session_id"] == "img_1" and data["session_state"] == "active"
    assert data["start_time"] == "2026-09-04T02:00:00.000Z" and data["end_time"] is None
    assert data["duration"] == 5405
    assert (data["is_safe"], data["is_guiding"]) == (1, 0)
    assert [e["eventType"] for e in data["recent_events"]] == ["B", "A"]  # newest first
    assert data["images_by_type"] == {"LIGHT": 3, "FLAT": 10}
    assert data["session_stats"] == {"total_exposure_time": 0, "images_per_filter": {}}
    assert set(empty_unified_session()) == set(data)
    assert js_time(datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)) == "2026-01-01T12:00:00.123Z"
    view = Imaging().view(s)
    assert view["rig"] == "nightsky" and view["total_images"] == 3


async def test_the_scheduler_ends_a_silent_night_after_the_idle_timeout(
    runtime: Runtime, clock: FakeClock
) -> None:
    with_imaging(runtime)
    await runtime.start()
    try:
        hub = runtime.hub
        s, _ = await hub.create(
            SYSTEM_PRINCIPAL, "imaging", owner="nightsky", attributes={"rig": "nightsky"}
        )
        clock.advance(8 * 3600 - 60)
        assert (await runtime.scheduler.sweep()).idled == []
        clock.advance(120)
        assert (await runtime.scheduler.sweep()).idled == [s.id]
        ended = await hub.get(SYSTEM_PRINCIPAL, s.id)
        assert ended.state == "finished" and ended.end_reason == "idle_timeout"
    finally:
        await runtime.close()


def test_the_idle_timeout_is_a_setting(runtime: Runtime) -> None:
    with_imaging(runtime)
    kind = runtime.hub.kinds["imaging"]
    assert kind.idle_timeout == timedelta(hours=8)
    NinaService(runtime.hub, nina_config("http://127.0.0.1:1", idle_timeout=3600))
    assert kind.idle_timeout == timedelta(hours=1)


def test_kind_timeouts_override_the_imaging_kind() -> None:
    if not any(k.name == "imaging" for k in (cls() for cls in registry.BUILTIN)):
        pytest.skip("the imaging kind is not registered in kinds/registry.py yet")
    kinds = registry.default_registry({"imaging": {"idle_timeout": 600}})
    assert kinds["imaging"].idle_timeout == timedelta(minutes=10)
