"""Grace (seed 004) through HTTP: every documented endpoint, compared with the document."""

from __future__ import annotations

from collections.abc import Callable

import grace_doc as doc
import httpx
import pytest

from conftest import FakeClock
from sessionhub.server.runtime import Runtime

Auth = Callable[..., dict[str, str]]


@pytest.fixture
def clock() -> FakeClock:
    """The document's examples start at 2025-11-18T12:00:00; so does this clock."""
    return FakeClock(doc.DOC_START)


async def _start_remote(client: httpx.AsyncClient, headers: dict[str, str], mode: str) -> str:
    r = await client.post(
        "/api/remote/start", json={**doc.START_REMOTE_REQUEST, "safety_mode": mode}, headers=headers
    )
    assert r.status_code == 200, r.text
    sid: str = r.json()["session_id"]
    return sid


async def _start_screen(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    r = await client.post("/api/screen_share/start", json=doc.START_SCREEN_REQUEST, headers=headers)
    assert r.status_code == 200, r.text
    sid: str = r.json()["session_id"]
    return sid


async def test_supervised_remote_session_walks_the_document(
    client: httpx.AsyncClient, auth: Auth, clock: FakeClock
) -> None:
    user = auth("user")
    r = await client.post("/api/remote/start", json=doc.START_REMOTE_REQUEST, headers=user)
    assert r.status_code == 200
    start = r.json()
    doc.like(start, doc.START_REMOTE, same=("success", "status", "requires_approval", "message"))
    sid = start["session_id"]

    clock.advance(345)
    r = await client.post(f"/api/sessions/heartbeat/{sid}", headers=user)
    assert r.status_code == 200 and r.json() == doc.HEARTBEAT
    clock.advance(0.6)
    r = await client.get(f"/api/remote/status/{sid}", headers=user)
    status = r.json()
    doc.like(
        status,
        doc.STATUS_ACTIVE,
        same=(
            "status",
            "type",
            "user_id",
            "safety_mode",
            "started_at",
            "duration_seconds",
            "last_activity",
        ),
    )
    assert status["session_id"] == sid
    assert status["commands_executed"] == 0

    clock.advance(254.4)
    r = await client.post(f"/api/remote/stop/{sid}", json=doc.STOP_REMOTE_REQUEST, headers=user)
    assert r.status_code == 200
    doc.like(r.json(), doc.STOP_REMOTE, same=("success", "status"))
    assert r.json()["session_id"] == sid and r.json()["duration_seconds"] == 600.0

    clock.advance(100)  # a stopped session's duration no longer grows
    r = await client.get(f"/api/remote/status/{sid}", headers=user)
    doc.like(
        r.json(),
        doc.STATUS_STOPPED,
        same=("status", "stopped_at", "stop_reason", "duration_seconds"),
    )

    r = await client.get("/api/sessions/history?limit=50", headers=user)
    body = r.json()
    assert set(body) == {"history", "total"} and body["total"] == 1
    doc.like(
        body["history"][0],
        doc.HISTORY_ITEM,
        same=("type", "status", "started_at", "stopped_at", "stop_reason", "duration_seconds"),
    )
    # A second stop is illegal: the lifecycle only moves forward.
    r = await client.post(f"/api/remote/stop/{sid}", json=doc.STOP_REMOTE_REQUEST, headers=user)
    assert r.status_code == 409


async def test_autonomous_waits_for_an_admin_and_approving_twice_is_400(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    user, admin = auth("user"), auth("root", "admin")
    r = await client.post(
        "/api/remote/start",
        json={**doc.START_REMOTE_REQUEST, "safety_mode": "autonomous"},
        headers=user,
    )
    start = r.json()
    doc.like(start, doc.START_REMOTE, same=("success", "message"))
    assert start["status"] == "pending_approval" and start["requires_approval"] is True
    sid = start["session_id"]
    status = (await client.get(f"/api/remote/status/{sid}", headers=user)).json()
    assert status["status"] == "pending_approval"
    doc.like(status, doc.STATUS_ACTIVE)

    r = await client.post(f"/api/remote/approve/{sid}", headers=user)
    assert r.status_code == 403  # only admins approve
    r = await client.post(f"/api/remote/approve/{sid}", headers=admin)
    assert r.status_code == 200
    doc.like(r.json(), doc.APPROVE, same=("success", "status"))
    assert (await client.get(f"/api/remote/status/{sid}", headers=user)).json()["status"] == (
        "active"
    )

    r = await client.post(f"/api/remote/approve/{sid}", headers=admin)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "not pending" in r.json()["detail"]
    supervised = await _start_remote(client, user, "supervised")
    assert (await client.post(f"/api/remote/approve/{supervised}", headers=admin)).status_code == (
        400
    )


async def test_deny_ends_a_pending_session(client: httpx.AsyncClient, auth: Auth) -> None:
    user, admin = auth("user"), auth("root", "admin")
    sid = await _start_remote(client, user, "autonomous")
    r = await client.post(f"/api/remote/deny/{sid}", json={"reason": "not today"}, headers=user)
    assert r.status_code == 403
    r = await client.post(f"/api/remote/deny/{sid}", json={"reason": "not today"}, headers=admin)
    assert r.status_code == 200 and r.json() == {
        "success": True,
        "session_id": sid,
        "status": "denied",
    }
    status = (await client.get(f"/api/remote/status/{sid}", headers=user)).json()
    doc.like(status, doc.STATUS_STOPPED)
    assert status["status"] == "denied" and status["stop_reason"] == "not today"
    assert (await client.post(f"/api/remote/deny/{sid}", headers=admin)).status_code == 400
    # The heartbeat of an ended session is refused.
    assert (await client.post(f"/api/sessions/heartbeat/{sid}", headers=user)).status_code == 409


async def test_read_only_starts_active_and_bad_modes_are_422(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    user = auth("user")
    sid = await _start_remote(client, user, "read_only")
    status = (await client.get(f"/api/remote/status/{sid}", headers=user)).json()
    assert status["status"] == "active" and status["safety_mode"] == "read_only"
    r = await client.post("/api/remote/start", json={"safety_mode": "reckless"}, headers=user)
    assert r.status_code == 422 and "safety_mode" in r.json()["detail"]
    r = await client.post("/api/remote/start", json={"metadata": {"_commands": []}}, headers=user)
    assert r.status_code == 422


async def test_screen_share_walks_the_document(
    client: httpx.AsyncClient, auth: Auth, clock: FakeClock
) -> None:
    user = auth("user")
    r = await client.post("/api/screen_share/start", json=doc.START_SCREEN_REQUEST, headers=user)
    start = r.json()
    doc.like(start, doc.START_SCREEN, same=("success", "status", "quality"))
    sid = start["session_id"]
    assert start["stream_url"] == f"/stream/{sid}"

    clock.advance(234.5)
    status = (await client.get(f"/api/screen_share/status/{sid}", headers=user)).json()
    doc.like(
        status, doc.STATUS_SCREEN, same=("status", "type", "user_id", "quality", "duration_seconds")
    )
    assert (
        status["stream_url"] == f"/stream/{sid}" and status["started_at"] == "2025-11-18T12:00:00"
    )
    assert status["frames_captured"] == 0

    clock.advance(554.6)
    r = await client.post("/api/screen_share/stop", json={"session_id": sid}, headers=user)
    assert r.status_code == 200
    doc.like(r.json(), doc.STOP_SCREEN, same=("success", "status"))
    assert r.json()["duration_seconds"] == 789.1
    r = await client.post("/api/screen_share/stop", json={"session_id": sid}, headers=user)
    assert r.status_code == 409


async def test_quality_presets_and_bad_quality(client: httpx.AsyncClient, auth: Auth) -> None:
    user = auth("user")
    seen = {}
    for quality in ("low", "medium", "high"):
        r = await client.post("/api/screen_share/start", json={"quality": quality}, headers=user)
        sid = r.json()["session_id"]
        s = (await client.get(f"/api/sessions/{sid}", headers=user)).json()
        seen[quality] = (s["resolution"], s["fps"])
    assert seen == {"low": ("640x480", 15), "medium": ("1280x720", 30), "high": ("1920x1080", 60)}
    r = await client.post("/api/screen_share/start", json={"quality": "ultra"}, headers=user)
    assert r.status_code == 422


async def test_active_lists_both_kinds_scoped_to_the_caller(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    user, bob, admin = auth("user"), auth("bob"), auth("root", "admin")
    remote_id = await _start_remote(client, user, "supervised")
    screen_id = await _start_screen(client, user)
    pending = await _start_remote(client, user, "autonomous")
    bobs = await _start_screen(client, bob)
    stopped = await _start_remote(client, user, "supervised")
    await client.post(f"/api/remote/stop/{stopped}", headers=user)

    r = await client.get("/api/sessions/active", headers=user)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"active_sessions", "total"}
    by_id = {s["session_id"]: s for s in body["active_sessions"]}
    assert set(by_id) == {remote_id, screen_id, pending} and body["total"] == 3
    doc.like(by_id[remote_id], doc.STATUS_ACTIVE, same=("type", "status"))
    doc.like(by_id[screen_id], doc.STATUS_SCREEN, same=("type", "status"))
    assert by_id[pending]["status"] == "pending_approval"

    admin_view = (await client.get("/api/sessions/active", headers=admin)).json()
    assert {s["session_id"] for s in admin_view["active_sessions"]} == set(by_id) | {bobs}
    # Another user's session is not even visible.
    assert (await client.get(f"/api/remote/status/{remote_id}", headers=bob)).status_code == 404
    assert (
        await client.get(f"/api/screen_share/status/{remote_id}", headers=user)
    ).status_code == (404)


async def test_user_id_names_the_owner_only_for_admins(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    r = await client.post(
        "/api/remote/start",
        json={"user_id": "carol", "safety_mode": "supervised"},
        headers=auth("mallory"),
    )
    sid = r.json()["session_id"]
    assert (await client.get(f"/api/remote/status/{sid}", headers=auth("mallory"))).json()[
        "user_id"
    ] == "mallory"
    r = await client.post(
        "/api/screen_share/start", json={"user_id": "carol"}, headers=auth("root", "admin")
    )
    sid = r.json()["session_id"]
    status = (await client.get(f"/api/screen_share/status/{sid}", headers=auth("carol"))).json()
    assert status["user_id"] == "carol"


async def test_check_dropped_drops_idle_sessions(
    client: httpx.AsyncClient, auth: Auth, clock: FakeClock
) -> None:
    user, bob, admin = auth("user"), auth("bob"), auth("root", "admin")
    remote_id = await _start_remote(client, user, "supervised")
    screen_id = await _start_screen(client, user)
    alive = await _start_remote(client, user, "read_only")
    pending = await _start_remote(client, user, "autonomous")
    bobs = await _start_remote(client, bob, "supervised")
    clock.advance(6 * 60)  # "Wait 6 minutes without clicking anything"
    await client.post(f"/api/sessions/heartbeat/{alive}", headers=user)

    r = await client.post("/api/sessions/check_dropped?timeout_minutes=5", headers=user)
    assert r.status_code == 200
    body = r.json()
    doc.like(body, doc.CHECK_DROPPED, same=("count",))
    assert sorted(body["dropped_sessions"]) == sorted([remote_id, screen_id])
    for sid, path in ((remote_id, "remote"), (screen_id, "screen_share")):
        status = (await client.get(f"/api/{path}/status/{sid}", headers=user)).json()
        assert status["status"] == "dropped"
        assert status["stop_reason"] == "Session dropped (inactive)"
    # The caller's check left bob's session alone (and a session waiting for approval).
    assert (await client.get(f"/api/remote/status/{bobs}", headers=bob)).json()["status"] == (
        "active"
    )
    assert (await client.get(f"/api/remote/status/{pending}", headers=user)).json()[
        "status"
    ] == "pending_approval"
    # An admin's check covers everyone.
    r = await client.post("/api/sessions/check_dropped?timeout_minutes=5", headers=admin)
    assert r.json() == {"dropped_sessions": [bobs], "count": 1}
    history = (await client.get("/api/sessions/history", headers=user)).json()
    assert {h["session_id"] for h in history["history"]} == {remote_id, screen_id}
    assert (
        await client.post("/api/sessions/check_dropped?timeout_minutes=0", headers=user)
    ).status_code == 422


async def test_the_scheduler_drops_after_five_minutes(
    client: httpx.AsyncClient, auth: Auth, clock: FakeClock, runtime: Runtime
) -> None:
    user = auth("user")
    remote_id = await _start_remote(client, user, "supervised")
    screen_id = await _start_screen(client, user)
    clock.advance(299)
    await client.post(f"/api/sessions/heartbeat/{screen_id}", headers=user)
    report = await runtime.scheduler.sweep()
    assert report.dropped == []
    clock.advance(2)
    report = await runtime.scheduler.sweep()
    assert report.dropped == [remote_id]
    clock.advance(299)
    report = await runtime.scheduler.sweep()
    assert report.dropped == [screen_id]
    status = (await client.get(f"/api/remote/status/{remote_id}", headers=user)).json()
    assert status["status"] == "dropped" and status["stopped_at"] == "2025-11-18T12:05:01"


async def test_a_request_nobody_approves_is_denied_after_fifteen_minutes(
    client: httpx.AsyncClient, auth: Auth, clock: FakeClock, runtime: Runtime
) -> None:
    """No dead end: an autonomous request waits for an admin, but not forever."""
    user = auth("user")
    sid = await _start_remote(client, user, "autonomous")
    clock.advance(15 * 60 - 1)
    report = await runtime.scheduler.sweep()
    assert report.expired == [] and report.dropped == []
    clock.advance(2)
    report = await runtime.scheduler.sweep()
    assert report.expired == [sid]
    status = (await client.get(f"/api/remote/status/{sid}", headers=user)).json()
    assert status["status"] == "denied" and status["stop_reason"] == "Not approved in time"
    session = (await client.get(f"/api/sessions/{sid}", headers=user)).json()
    assert session["end_reason"] == "approval_timeout"
    notes = (await client.get("/api/notifications", headers=user)).json()["notifications"]
    assert notes[0]["event"] == "remote_session_denied"
    assert notes[0]["data"]["message"].endswith("was denied: Not approved in time")
    # An approved session is not touched by the approval timeout.
    other = await _start_remote(client, user, "autonomous")
    r = await client.post(f"/api/remote/approve/{other}", headers=auth("root", "admin"))
    assert r.status_code == 200
    clock.advance(16 * 60)
    await client.post(f"/api/sessions/heartbeat/{other}", headers=user)
    report = await runtime.scheduler.sweep()
    assert report.expired == [] and report.dropped == []


async def test_history_is_limited_and_counts_everything(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    user = auth("user")
    for _ in range(3):
        sid = await _start_remote(client, user, "supervised")
        await client.post(f"/api/remote/stop/{sid}", headers=user)
    body = (await client.get("/api/sessions/history?limit=2", headers=user)).json()
    assert len(body["history"]) == 2 and body["total"] == 3
    assert (await client.get("/api/sessions/history?limit=0", headers=user)).status_code == 422


async def test_unknown_ids_and_missing_auth(client: httpx.AsyncClient, auth: Auth) -> None:
    user = auth("user")
    assert (await client.get("/api/remote/status/remote_00000000", headers=user)).status_code == 404
    assert (
        await client.post("/api/remote/approve/remote_00000000", headers=user)
    ).status_code == 404
    assert (
        await client.post("/api/screen_share/stop", json={"session_id": "x"}, headers=user)
    ).status_code == 404
    assert (await client.post("/api/sessions/heartbeat/nope", headers=user)).status_code == 404
    assert (await client.get("/api/sessions/active")).status_code == 401
