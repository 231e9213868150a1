"""The REST adapter: who sees which rig, the health check, guider polling, metrics."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from conftest import FakeClock
from sessionhub.connectors.nina.simulator import NinaSimulator
from sessionhub.server.app import create_app
from sessionhub.server.compat import nina as nina_routes
from sessionhub.server.runtime import Runtime

from .harness import RIG, Harness, open_harness, with_imaging


async def test_without_a_rig_the_routes_say_so(
    runtime: Runtime, auth: Callable[..., dict[str, str]]
) -> None:
    with_imaging(runtime)
    app = create_app(runtime=runtime)
    if not any(getattr(r, "path", None) == "/api/nina/session-state" for r in app.routes):
        app.include_router(nina_routes.router)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            root = auth("root", "admin")
            for method, path in (
                ("GET", "/api/nina/session-state"),
                ("POST", "/api/nina/session-state/refresh"),
                ("POST", "/api/session/refresh"),
            ):
                r = await http.request(method, path, headers=root)
                assert r.status_code == 404, (path, r.text)
                assert "no NINA rig configured" in r.json()["detail"]
            r = await http.get("/api/config/health")
            assert r.status_code == 200
            body = r.json()
            assert body["status"] == "ok" and body["version"] and body["nina"] is None


async def test_admins_see_every_rig_and_a_rig_sees_itself_only(
    nina: Harness, auth: Callable[..., dict[str, str]]
) -> None:
    await nina.play(nina.steps_until("IMAGE-SAVE"))
    http = nina.http
    r = await http.get("/api/nina/session-state")
    assert r.status_code == 401
    r = await http.get("/api/nina/session-state", headers=auth(RIG))
    assert r.status_code == 200 and r.json()["total_images"] == 1
    r = await http.get("/api/nina/session-state", params={"rig": RIG}, headers=auth("alice"))
    assert r.status_code == 404
    r = await http.get("/api/nina/session-state", headers=auth("alice"))
    assert r.status_code == 404
    r = await http.get("/api/nina/session-state", params={"rig": "other"}, headers=nina.admin)
    assert r.status_code == 404
    r = await http.post("/api/nina/session-state/refresh", headers=auth("alice"))
    assert r.status_code == 404
    r = await http.post("/api/nina/session-state/refresh", headers=auth(RIG))
    assert r.status_code == 200
    # The generic API agrees: the rig owns its nights.
    r = await http.get("/api/sessions", params={"kind": "imaging"}, headers=auth(RIG))
    assert len(r.json()["items"]) == 1
    r = await http.get("/api/sessions", params={"kind": "imaging"}, headers=auth("alice"))
    assert r.json()["items"] == []


async def test_anonymous_read_only_access_is_a_setting(
    runtime: Runtime, sim: NinaSimulator, clock: FakeClock, auth: Callable[..., dict[str, str]]
) -> None:
    async with open_harness(runtime, sim, clock, auth("root", "admin"), allow_anonymous=1) as h:
        await h.start()
        r = await h.http.get("/api/nina/session-state")
        assert r.status_code == 200 and r.json()["session_id"] is None
        r = await h.http.post("/api/nina/session-state/refresh")
        assert r.status_code == 404
        r = await h.http.get("/api/nina/session-state", headers={"Authorization": "Bearer junk"})
        assert r.status_code == 401  # a bad token is still refused


async def test_health_and_metrics_show_the_connector(nina: Harness) -> None:
    r = await nina.http.get("/api/config/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["timestamp"].endswith("Z")
    rig = body["nina"]["rigs"][RIG]
    assert rig["connected"] is True and rig["retries"] == 0
    assert set(rig["counts"]) >= {"bad_json", "oversized", "applied", "seeds"}
    await nina.play(5)
    service = nina.service
    assert service is not None
    metrics = service.metrics()
    assert metrics["sessionhub_nina_connected"]["values"] == {RIG: 1.0}
    assert metrics["sessionhub_nina_applied_total"]["values"][RIG] >= 5
    assert metrics["sessionhub_nina_last_event_timestamp_seconds"]["values"][RIG] == (
        nina.clock.now.timestamp()
    )
    assert all(m["type"] in ("gauge", "counter") and m["help"] for m in metrics.values())


async def test_guiding_rms_is_polled_while_guiding(
    runtime: Runtime, sim: NinaSimulator, clock: FakeClock, auth: Callable[..., dict[str, str]]
) -> None:
    extra = {"guider_poll_interval": 0.02, "rms_min_delta": 0}
    async with open_harness(runtime, sim, clock, auth("root", "admin"), **extra) as h:
        await h.start()
        await h.play(h.steps_until("GUIDER-START"))
        h.clock.advance(5)  # time passes while guiding: readings newer than the start
        polls = h.runner.status.counts.get("guider_polls", 0)
        await h.runner.wait_for(
            lambda r: r.status.counts.get("guider_polls", 0) >= polls + 2 and r.idle, 5.0
        )
        await h.barrier()
        state = await h.state()
        assert state["is_guiding"] == 1 and state["guiding_state"] == "Guiding"
        assert state["guiding_rms"] in sim.rms_served and state["guiding_rms"] > 0
        # The poll is a reading, not a rig event: not among the recent events.
        assert all(e["eventType"] != "GUIDER-INFO" for e in state["recent_events"])
        await h.play(h.steps_until("GUIDER-STOP"))
        state = await h.state()
        assert state["is_guiding"] == 0 and state["guiding_rms"] is None


async def test_two_rigs_two_owners_two_topics(
    runtime: Runtime, clock: FakeClock, auth: Callable[..., dict[str, str]]
) -> None:
    from .harness import Recorder, nina_config

    other = NinaSimulator(clock=clock, advance=clock.advance, seed=9, timezone="UTC")
    await other.start()
    try:
        async with open_harness(runtime, other, clock, auth("root", "admin")) as h:
            config = nina_config(other.url)
            config.rigs = (*config.rigs, type(config.rigs[0])("south", other.url))
            from sessionhub.connectors.nina.service import NinaService

            service = NinaService(runtime.hub, config)
            h.service = service
            runtime.nina = service  # type: ignore[attr-defined]
            south = Recorder()
            runtime.hub.broker.subscribe("nina:south", south)
            await service.start()
            await other.wait_clients(2)
            await other.play(
                other.script.index(next(s for s in other.script if s.event == "IMAGE-SAVE")) + 1
            )
            for rig in (RIG, "south"):
                await service.runner(rig).wait_for(
                    lambda r: r.session is not None and r.idle and r.state.active, 5.0
                )
            a = await h.state(rig=RIG)
            b = await h.state(rig="south")
            assert (
                a["session_id"] != b["session_id"] and a["total_images"] == b["total_images"] == 1
            )
            r = await h.http.get(
                "/api/nina/session-state", params={"rig": "south"}, headers=auth("south")
            )
            assert r.status_code == 200 and r.json()["session_id"] == b["session_id"]
            assert south.of("unifiedSession") and all(
                m["data"]["session_id"] == b["session_id"] for m in south.of("unifiedSession")
            )
            # close() and start() again (a leadership change): it takes up where it was.
            await service.close()
            assert not service.running
            await service.start()
            await service.runner("south").wait_for(lambda r: r.status.connected and r.idle, 5.0)
            assert (await h.state(rig="south"))["session_id"] == b["session_id"]
    finally:
        await other.close()
