"""Notifications of the Grace kinds: the document's events, stored, listed, pushed, idempotent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grace_doc as doc
import httpx
import orjson
import pytest
from sqlalchemy import delete, func, select, update
from tests.inprocess import serve_in_process

from conftest import FakeClock
from sessionhub.consumers.notifications import ADMIN_TOPIC, Notifier
from sessionhub.core.streams import Publication
from sessionhub.server.runtime import Runtime
from sessionhub.store.schema import events, notifications

Auth = Callable[..., dict[str, str]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(doc.DOC_START)


def _notifier(runtime: Runtime) -> Notifier:
    notifier: Notifier = runtime.notifier
    return notifier


async def _all(client: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> list[Any]:
    r = await client.get("/api/notifications", params={"limit": 200, **params}, headers=headers)
    assert r.status_code == 200, r.text
    return list(reversed(r.json()["notifications"]))  # oldest first


def _check(ours: dict[str, Any], name: str, session_id: str, timestamp: str) -> None:
    """Field by field against the document's example of ``name``."""
    expected = doc.NOTIFICATIONS[name]
    assert ours["event"] == expected["event"]
    data, exp = ours["data"], expected["data"]
    assert list(data) == list(exp), f"{name}: fields {list(data)} vs {list(exp)}"
    example_id = exp["session_id"]
    assert data["session_id"] == session_id and data["user_id"] == exp["user_id"]
    assert data["message"] == exp["message"].replace(example_id, session_id)
    assert doc.as_document_prints(data["badge"]) == exp["badge"]
    assert doc.TIMESTAMP.match(data["timestamp"]) and data["timestamp"] == timestamp
    for extra in set(exp) - {"session_id", "user_id", "message", "badge", "timestamp"}:
        assert data[extra] == exp[extra]


async def test_every_documented_event_in_the_documents_shape(
    client: httpx.AsyncClient, auth: Auth, clock: FakeClock, runtime: Runtime
) -> None:
    user, admin = auth("user"), auth("root", "admin")
    pushed: list[Publication] = []
    runtime.hub.broker.subscribe("notifications:user", pushed.append)
    admin_pushed: list[Publication] = []
    runtime.hub.broker.subscribe(ADMIN_TOPIC, admin_pushed.append)

    # 12:00 supervised start; autonomous start (approval needed); 12:01 approved.
    r = await client.post("/api/remote/start", json=doc.START_REMOTE_REQUEST, headers=user)
    supervised = r.json()["session_id"]
    r = await client.post(
        "/api/remote/start", json={"user_id": "user", "safety_mode": "autonomous"}, headers=user
    )
    autonomous = r.json()["session_id"]
    clock.advance(60)
    await client.post(f"/api/remote/approve/{autonomous}", headers=admin)
    # 12:10 stopped; 12:15 screen share started; 12:25 ended.
    clock.advance(540)
    await client.post(f"/api/remote/stop/{supervised}", json=doc.STOP_REMOTE_REQUEST, headers=user)
    clock.advance(300)
    screen = (
        await client.post("/api/screen_share/start", json=doc.START_SCREEN_REQUEST, headers=user)
    ).json()["session_id"]
    clock.advance(600)
    await client.post("/api/screen_share/stop", json={"session_id": screen}, headers=user)
    # 12:30 the approved session has had no heartbeat since 12:01: dropped.
    clock.advance(300)
    r = await client.post("/api/sessions/check_dropped?timeout_minutes=5", headers=user)
    assert r.json()["dropped_sessions"] == [autonomous]

    got = await _all(client, user)
    assert [n["event"] for n in got] == [
        "remote_session_started",
        "remote_session_approval_needed",
        "remote_session_approved",
        "remote_session_stopped",
        "screen_share_started",
        "screen_share_stopped",
        "remote_access_dropped",
    ]
    _check(got[0], "remote_session_started", supervised, "2025-11-18T12:00:00")
    _check(got[1], "remote_session_approval_needed", autonomous, "2025-11-18T12:00:00")
    _check(got[2], "remote_session_approved", autonomous, "2025-11-18T12:01:00")
    _check(got[3], "remote_session_stopped", supervised, "2025-11-18T12:10:00")
    _check(got[4], "screen_share_started", screen, "2025-11-18T12:15:00")
    _check(got[5], "screen_share_stopped", screen, "2025-11-18T12:25:00")
    _check(got[6], "remote_access_dropped", autonomous, "2025-11-18T12:30:00")

    # Pushed live, same ids and content as listed; approval also to the admins' topic.
    frames = [orjson.loads(p.data) for p in pushed]
    assert [f["id"] for f in frames] == [n["id"] for n in got]
    assert [f["data"] for f in frames] == [n["data"] for n in got]
    assert [orjson.loads(p.data)["event"] for p in admin_pushed] == [
        "remote_session_approval_needed"
    ]
    # Admins see their own and the admins' ones; ?user= reads a user's list.
    mine = await _all(client, admin)
    assert [n["event"] for n in mine] == ["remote_session_approval_needed"]
    assert mine[0]["user_id"] == "@admins"
    assert len(await _all(client, admin, user="user")) == 7


async def test_screen_share_dropped_and_denied(
    client: httpx.AsyncClient, auth: Auth, clock: FakeClock
) -> None:
    user, admin = auth("user"), auth("root", "admin")
    screen = (await client.post("/api/screen_share/start", json={}, headers=user)).json()
    assert screen["status"] == "active"
    r = await client.post("/api/remote/start", json={"safety_mode": "autonomous"}, headers=user)
    pending = r.json()["session_id"]
    await client.post(f"/api/remote/deny/{pending}", json={"reason": "policy"}, headers=admin)
    clock.advance(301)
    await client.post("/api/sessions/check_dropped", headers=user)
    got = {n["event"]: n for n in await _all(client, user)}
    dropped = got["screen_share_dropped"]["data"]
    assert dropped["message"] == "screen_share session dropped (inactive)"
    assert (
        doc.as_document_prints(dropped["badge"])
        == doc.NOTIFICATIONS["remote_access_dropped"]["data"]["badge"]
    )
    denied = got["remote_session_denied"]["data"]
    assert denied["message"] == f"Remote access session {pending} was denied: policy"
    assert set(denied) == {"session_id", "user_id", "message", "badge", "timestamp"}


async def test_lists_are_per_user_and_paginated(
    client: httpx.AsyncClient, auth: Auth, clock: FakeClock
) -> None:
    user, bob = auth("user"), auth("bob")
    for _ in range(5):
        await client.post("/api/screen_share/start", json={}, headers=user)
        clock.advance(1)
    await client.post("/api/screen_share/start", json={}, headers=bob)
    seen: list[str] = []
    cursor = None
    for _page in range(10):
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = (await client.get("/api/notifications", params=params, headers=user)).json()
        assert body["total"] == 5
        seen += [n["id"] for n in body["notifications"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5
    assert len(await _all(client, bob)) == 1
    r = await client.get("/api/notifications", params={"user": "user"}, headers=bob)
    assert r.status_code == 403
    r = await client.get("/api/notifications", params={"user": "@admins"}, headers=bob)
    assert r.status_code == 403
    assert (
        await client.get("/api/notifications", params={"cursor": "x"}, headers=user)
    ).status_code == 422

    r = await client.post("/api/notifications/read", json={"ids": seen[:2]}, headers=user)
    assert r.json() == {"success": True, "updated": 2}
    body = (await client.get("/api/notifications?unread=true", headers=user)).json()
    assert body["total"] == 3 and body["unread"] == 3
    r = await client.post("/api/notifications/read", json={"all": True}, headers=bob)
    assert r.json()["updated"] == 1
    assert (await client.get("/api/notifications", headers=user)).json()["unread"] == 3


async def _count(runtime: Runtime) -> int:
    async with _notifier(runtime).engine.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(notifications))).scalar_one()
        )


async def test_republished_events_do_not_duplicate_notifications(
    client: httpx.AsyncClient, auth: Auth, runtime: Runtime
) -> None:
    """After a crash the outbox republishes events: the listener sees them again."""
    user = auth("user")
    await client.post("/api/remote/start", json={}, headers=user)
    await client.post("/api/screen_share/start", json={}, headers=user)
    listed = await _all(client, user)
    assert len(listed) == 2
    pushed: list[Publication] = []
    runtime.hub.broker.subscribe("notifications:user", pushed.append)
    engine = _notifier(runtime).engine
    async with engine.begin() as conn:
        await conn.execute(update(events).values(published=False))
    # The broker still holds them: found by their ids and only marked, never pushed twice.
    assert await runtime.hub.republish_outbox() == 0
    assert runtime.hub.outbox.stats.already_published >= 2
    assert await _all(client, user) == listed
    assert pushed == []  # nothing new, nothing pushed again


async def test_catch_up_restores_notifications_lost_in_a_crash(
    client: httpx.AsyncClient, auth: Auth, runtime: Runtime
) -> None:
    """Events committed, notifications not yet written when the process died: re-derived."""
    user = auth("user")
    sid = (await client.post("/api/remote/start", json={}, headers=user)).json()["session_id"]
    await client.post(f"/api/remote/stop/{sid}", headers=user)
    before = await _all(client, user)
    assert len(before) == 2
    notifier = _notifier(runtime)
    async with notifier.engine.begin() as conn:
        await conn.execute(delete(notifications))
    assert await notifier.catch_up() == 2
    assert await _all(client, user) == before  # same ids, same content
    assert await notifier.catch_up() == 0
    assert await _count(runtime) == 2


@pytest.mark.postgres
async def test_idempotent_storage_on_postgresql(postgres_url: str, tmp_path: Any) -> None:
    """The insert-if-absent path of PostgreSQL: replays and catch-up add nothing twice."""
    from conftest import SECRET
    from sessionhub.server.app import create_app
    from sessionhub.server.runtime import build_runtime
    from sessionhub.settings import Settings

    settings = Settings(
        data_dir=tmp_path / "data",
        jwt_secret=SECRET,
        database_url=postgres_url,
        sweep_interval=3600.0,
        extra={"webhook_urls": "http://127.0.0.1:9/unused", "webhook_poll": 3600.0},
    )
    runtime = build_runtime(settings, clock=FakeClock(doc.DOC_START))
    app = create_app(runtime=runtime)
    headers = {"Authorization": f"Bearer {runtime.auth.issue('user')}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            r = await client.post("/api/remote/start", json={}, headers=headers)
            await client.post(f"/api/remote/stop/{r.json()['session_id']}", headers=headers)
            listed = await _all(client, headers)
            assert [n["event"] for n in listed] == [
                "remote_session_started",
                "remote_session_stopped",
            ]
            notifier = _notifier(runtime)
            async with notifier.engine.begin() as conn:
                await conn.execute(update(events).values(published=False))
            await runtime.hub.republish_outbox()
            assert await _all(client, headers) == listed
            async with notifier.engine.begin() as conn:
                await conn.execute(delete(notifications))
            assert await notifier.catch_up() == 2
            assert await notifier.catch_up() == 0
            assert await _all(client, headers) == listed
            assert notifier.webhooks is not None
            assert await notifier.webhooks.count_pending() == 2  # one per notification


async def test_a_store_that_cannot_keep_up_delays_notifications_but_loses_none(
    settings: Any, make_runtime: Any, auth: Auth, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Notifications follow the event log: a slow store holds them back (never the requests
    that caused them), and once it catches up every one is stored, once."""
    runtime = make_runtime(settings)
    user = auth("user")
    async with serve_in_process(runtime) as client:
        notifier = _notifier(runtime)
        assert (await client.post("/api/remote/start", json={}, headers=user)).status_code == 200
        await runtime.consumers.drain()
        assert await _count(runtime) == 1
        gate = asyncio.Event()
        handle = notifier.handle

        async def slow(events: Any, start: Any, position: Any) -> bool:
            await gate.wait()  # a database that cannot keep up
            return await handle(events, start, position)

        monkeypatch.setattr(notifier, "handle", slow)
        for _ in range(6):
            r = await client.post("/api/remote/start", json={}, headers=user)
            assert r.status_code == 200  # never blocked by the notification backlog
        assert await _count(runtime) == 1  # held back, not dropped
        gate.set()
        await runtime.consumers.drain()
        stored = await _all(client, user)
        assert len(stored) == 7 and len({n["id"] for n in stored}) == 7
        assert {n["event"] for n in stored} == {"remote_session_started"}
