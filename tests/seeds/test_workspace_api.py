"""Seed 002 (JamBot workspaces) through the HTTP API, with the injected clock.

The record shape, status values, routes and answers are JamBot's ``routers/user_session.py``
and ``schemas/user_session.py`` (see UPSTREAM.md); each test walks one documented flow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from workspace_calls import create, get

from sessionhub.server.runtime import Runtime
from sessionhub.workflows.workspaces import WorkspaceService

Auth = Callable[..., dict[str, str]]

# JamBot's UserSession record (schemas/user_session.py + models.UserSession).
RECORD_FIELDS = {
    "id",
    "user_id",
    "name",
    "status",
    "chat_id",
    "mission_id",
    "session_metadata",
    "created_at",
    "updated_at",
    "last_activity_at",
}
HOUR = 3600.0
DAY = 24 * HOUR


def service(runtime: Runtime) -> WorkspaceService:
    svc: WorkspaceService = runtime.workspaces
    return svc


async def test_create_answers_jambot_shape_with_default_names(
    client: httpx.AsyncClient, auth: Auth, clock: Any
) -> None:
    alice = auth("42")
    made = await create(client, alice, session_metadata={"theme": "dark"})
    # CreateUserSessionResponse: user_session + chat; the record also at the top level.
    assert set(made) >= RECORD_FIELDS | {"user_session", "chat"}
    rec = made["user_session"]
    assert set(rec) >= RECORD_FIELDS | {"chat"}
    assert rec["id"] == made["id"] and rec["id"].startswith("ws_")
    assert rec["user_id"] == 42  # JamBot's user_id is an integer
    assert rec["name"] == "Session 1"
    assert rec["status"] == "active"
    assert rec["mission_id"] is None
    assert rec["session_metadata"] == {"theme": "dark"}
    assert (
        rec["created_at"] == rec["updated_at"] == rec["last_activity_at"] == "2026-01-01T12:00:00Z"
    )
    chat = made["chat"]
    assert chat["id"] == rec["chat_id"] and chat["user_session_id"] == rec["id"]
    assert chat["title"] == "Session 1" and chat["messages"] == []

    clock.advance(10)
    second = await create(client, alice)
    assert second["name"] == "Session 2"
    named = await create(client, alice, name="Research")
    assert named["name"] == "Research"
    assert (await create(client, alice))["name"] == "Session 3"
    # A non-numeric subject stays a string; names count per user.
    bob = await create(client, auth("bob"))
    assert bob["user_id"] == "bob" and bob["name"] == "Session 1"


async def test_creating_completes_the_users_other_active_workspace(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    alice, bob = auth("alice"), auth("bob")
    first = await create(client, alice)
    bobs = await create(client, bob)
    second = await create(client, alice)
    old = await get(client, first["id"], alice)
    assert old["status"] == "completed" and old["end_reason"] == "completed"
    assert old["end_detail"] == f"superseded by {second['id']}"
    assert (await get(client, second["id"], alice))["status"] == "active"
    assert (await get(client, bobs["id"], bob))["status"] == "active"  # other users untouched


async def test_concurrent_creates_leave_exactly_one_active(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    alice = auth("alice")
    made = await asyncio.gather(*(create(client, alice) for _ in range(8)))
    r = await client.get("/api/sessions/?status_filter=active&per_page=100", headers=alice)
    active = r.json()["sessions"]
    assert len(active) == 1, [s["id"] for s in active]
    r = await client.get("/api/sessions/?per_page=100", headers=alice)
    assert r.json()["total"] == 8
    # Names are unique even under concurrency (creates of one user are serialised).
    assert sorted(m["name"] for m in made) == sorted(f"Session {i}" for i in range(1, 9))


async def test_generic_route_creates_obey_the_rule_too(
    client: httpx.AsyncClient, auth: Auth, runtime: Runtime
) -> None:
    alice = auth("alice")
    first = await create(client, alice)
    r = await client.post("/api/sessions", json={"kind": "workspace"}, headers=alice)
    assert r.status_code == 201, r.text
    await service(runtime).drain()
    generic = await get(client, r.json()["id"], alice)
    assert generic["status"] == "active" and generic["name"] == "Session 2"
    assert (await get(client, first["id"], alice))["status"] == "completed"


async def test_list_pages_filters_and_scopes_to_the_caller(
    client: httpx.AsyncClient, auth: Auth, clock: Any
) -> None:
    alice = auth("alice")
    ids = []
    for _ in range(5):
        ids.append((await create(client, alice))["id"])
        clock.advance(1)
    await create(client, auth("bob"))
    r = await client.get("/api/sessions/?page=2&per_page=2", headers=alice)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"sessions", "total", "page", "per_page"}
    assert body["total"] == 5 and body["page"] == 2 and body["per_page"] == 2
    assert [s["id"] for s in body["sessions"]] == [ids[2], ids[1]]  # newest first
    assert all(set(s) >= RECORD_FIELDS for s in body["sessions"])
    r = await client.get("/api/sessions/?status_filter=completed&per_page=10", headers=alice)
    assert r.json()["total"] == 4
    r = await client.get("/api/sessions/?status_filter=active", headers=alice)
    assert [s["id"] for s in r.json()["sessions"]] == [ids[4]]
    r = await client.get("/api/sessions/?status_filter=finished", headers=alice)
    assert r.status_code == 422
    r = await client.get("/api/sessions/?page=0", headers=alice)
    assert r.status_code == 422
    # The generic list keeps its own shape at the path without the slash.
    r = await client.get("/api/sessions?kind=workspace", headers=alice)
    assert "items" in r.json() and "sessions" not in r.json()
    r = await client.get("/api/sessions/", headers={})
    assert r.status_code == 401


async def test_get_and_put_a_workspace(client: httpx.AsyncClient, auth: Auth, clock: Any) -> None:
    alice = auth("alice")
    ws = await create(client, alice, session_metadata={"a": 1})
    sid = ws["id"]
    r = await client.get(f"/api/sessions/{sid}", headers=auth("mallory"))
    assert r.status_code == 404
    clock.advance(30)
    r = await client.put(
        f"/api/sessions/{sid}",
        json={"name": "Renamed", "mission_id": "m-1", "session_metadata": {"b": 2}},
        headers=alice,
    )
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["name"] == "Renamed" and rec["mission_id"] == "m-1"
    assert rec["session_metadata"] == {"b": 2}  # the auto-save replaces the metadata
    assert rec["updated_at"] == rec["last_activity_at"] == "2026-01-01T12:00:30Z"
    fetched = await get(client, sid, alice)
    assert {k: fetched[k] for k in RECORD_FIELDS} == {k: rec[k] for k in RECORD_FIELDS}
    r = await client.put(f"/api/sessions/{sid}", json={"assets": [{"id": "as1"}]}, headers=alice)
    assert r.json()["assets"] == [{"id": "as1"}] and r.json()["name"] == "Renamed"
    r = await client.put(f"/api/sessions/{sid}", json={"status": "archived"}, headers=alice)
    assert r.status_code == 200 and r.json()["status"] == "archived"
    r = await client.put(f"/api/sessions/{sid}", json={"status": "active"}, headers=alice)
    assert r.status_code == 409
    r = await client.put(f"/api/sessions/{sid}", json={"name": "x"}, headers=alice)
    assert r.status_code == 409  # archived is terminal
    r = await client.put(f"/api/sessions/{sid}", json={"status": "paused"}, headers=alice)
    assert r.status_code == 422
    r = await client.put("/api/sessions/ws_nope", json={"name": "x"}, headers=alice)
    assert r.status_code == 404
    generic = (await client.post("/api/sessions", json={}, headers=alice)).json()
    r = await client.put(f"/api/sessions/{generic['id']}", json={"name": "x"}, headers=alice)
    assert r.status_code == 404  # not a workspace


async def test_link_mission_activity_and_complete(
    client: httpx.AsyncClient, auth: Auth, clock: Any
) -> None:
    alice = auth("alice")
    sid = (await create(client, alice))["id"]
    r = await client.post(f"/api/sessions/{sid}/link-mission/mission-7", headers=alice)
    assert r.status_code == 200 and r.json()["mission_id"] == "mission-7"
    assert set(r.json()) >= RECORD_FIELDS
    clock.advance(120)
    r = await client.post(f"/api/sessions/{sid}/activity", headers=alice)
    assert r.status_code == 200 and r.json() == {"message": "Activity updated"}
    rec = await get(client, sid, alice)
    assert rec["last_activity_at"] == "2026-01-01T12:02:00Z"
    r = await client.post(f"/api/sessions/{sid}/activity", headers=auth("bob"))
    assert r.status_code == 404
    r = await client.post(f"/api/sessions/{sid}/complete", headers=alice)
    assert r.status_code == 200
    assert r.json()["status"] == "completed" and r.json()["mission_id"] == "mission-7"
    r = await client.post(f"/api/sessions/{sid}/complete", headers=alice)
    assert r.status_code == 409
    r = await client.post(f"/api/sessions/{sid}/activity", headers=alice)
    assert r.status_code == 409


async def test_lifecycle_idle_abandon_archive_delete(
    client: httpx.AsyncClient, auth: Auth, clock: Any, runtime: Runtime
) -> None:
    alice = auth("alice")
    sid = (await create(client, alice))["id"]
    r = await client.post(
        f"/api/sessions/{sid}/messages", json={"role": "user", "content": "hi"}, headers=alice
    )
    assert r.status_code == 201
    clock.advance(23 * HOUR)
    assert (await client.post(f"/api/sessions/{sid}/activity", headers=alice)).status_code == 200
    clock.advance(23 * HOUR)
    await runtime.scheduler.sweep()
    assert (await get(client, sid, alice))["status"] == "active"  # activity 23 h ago
    clock.advance(1 * HOUR + 1)
    report = await runtime.scheduler.sweep()
    assert report.idled == [sid]
    rec = await get(client, sid, alice)
    assert rec["status"] == "abandoned" and rec["end_reason"] == "idle_timeout"
    clock.advance(7 * DAY - 10)
    await runtime.scheduler.sweep()
    assert (await get(client, sid, alice))["status"] == "abandoned"
    clock.advance(11)
    report = await runtime.scheduler.sweep()
    assert report.archived == [sid]
    assert (await get(client, sid, alice))["status"] == "archived"
    r = await client.get(f"/api/sessions/{sid}/messages", headers=alice)
    assert r.json()["total"] == 1  # kept while archived
    clock.advance(90 * DAY + 1)
    report = await runtime.scheduler.sweep()
    assert report.deleted == [sid]
    await service(runtime).drain()
    assert (await client.get(f"/api/sessions/{sid}", headers=alice)).status_code == 404
    assert await service(runtime).chat.count(sid) == 0  # the chat went with it


async def test_recovery_returns_chat_and_metadata_and_touches_activity(
    client: httpx.AsyncClient, auth: Auth, clock: Any, runtime: Runtime
) -> None:
    alice = auth("alice")
    r = await client.get("/api/workspaces/active", headers=alice)
    assert r.status_code == 200 and r.json() is None
    sid = (await create(client, alice))["id"]
    await client.put(
        f"/api/sessions/{sid}", json={"session_metadata": {"view": "mission"}}, headers=alice
    )
    for i in range(3):
        await client.post(
            f"/api/sessions/{sid}/messages",
            json={"role": "assistant" if i % 2 else "user", "content": f"m{i}"},
            headers=alice,
        )
    await client.post(f"/api/sessions/{sid}/link-mission/mis-1", headers=alice)
    clock.advance(20 * HOUR)
    r = await client.get("/api/workspaces/active", headers=alice)
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= RECORD_FIELDS | {"chat", "mission"}
    assert body["id"] == sid and body["session_metadata"] == {"view": "mission"}
    assert body["last_activity_at"] == "2026-01-02T08:00:00Z"  # touched by the recovery
    assert [m["content"] for m in body["chat"]["messages"]] == ["m0", "m1", "m2"]
    assert body["chat"]["message_count"] == 3 and body["mission"] == {"id": "mis-1"}
    r = await client.get("/api/workspaces/active?message_limit=2", headers=alice)
    assert [m["content"] for m in r.json()["chat"]["messages"]] == ["m1", "m2"]
    # The touch counts for the idle timeout: 20 h + 5 h after creation it is still active.
    clock.advance(5 * HOUR)
    await runtime.scheduler.sweep()
    assert (await get(client, sid, alice))["status"] == "active"
    assert (await client.get("/api/workspaces/active", headers=auth("bob"))).json() is None


async def test_chat_append_and_paginated_read(client: httpx.AsyncClient, auth: Auth) -> None:
    alice = auth("alice")
    sid = (await create(client, alice))["id"]
    for i in range(7):
        r = await client.post(
            f"/api/sessions/{sid}/messages",
            json={"role": "user", "content": f"msg {i}", "message_metadata": {"i": i}},
            headers=alice,
        )
        assert r.status_code == 201, r.text
        msg = r.json()
        assert msg["sequence_order"] == i + 1 and msg["chat_id"] == f"chat_{sid[3:]}"
        assert set(msg) == {
            "id",
            "chat_id",
            "user_session_id",
            "sequence_order",
            "role",
            "content",
            "message_metadata",
            "created_at",
        }
    r = await client.get(f"/api/sessions/{sid}/messages?page=2&per_page=3", headers=alice)
    body = r.json()
    assert body["total"] == 7 and body["page"] == 2 and body["per_page"] == 3
    assert [m["content"] for m in body["messages"]] == ["msg 3", "msg 4", "msg 5"]
    assert [m["sequence_order"] for m in body["messages"]] == [4, 5, 6]
    assert body["messages"][0]["message_metadata"] == {"i": 3}
    r = await client.get(f"/api/sessions/{sid}/messages?page=3&per_page=3", headers=alice)
    assert [m["content"] for m in r.json()["messages"]] == ["msg 6"]
    r = await client.post(
        f"/api/sessions/{sid}/messages", json={"role": "robot", "content": "x"}, headers=alice
    )
    assert r.status_code == 422
    r = await client.post(f"/api/sessions/{sid}/messages", json={"role": "user"}, headers=alice)
    assert r.status_code == 422
    r = await client.get(f"/api/sessions/{sid}/messages", headers=auth("bob"))
    assert r.status_code == 404
    await client.put(f"/api/sessions/{sid}", json={"status": "archived"}, headers=alice)
    r = await client.post(f"/api/sessions/{sid}/messages", json={"content": "late"}, headers=alice)
    assert r.status_code == 409


async def test_admin_cleanup_routes(
    client: httpx.AsyncClient, auth: Auth, clock: Any, runtime: Runtime
) -> None:
    admin = auth("root", "admin")
    users = [auth(f"u{i}") for i in range(3)]
    ids = [(await create(client, h))["id"] for h in users]
    for path in ("abandon", "archive"):
        r = await client.post(f"/api/sessions/admin/cleanup/{path}", headers=users[0])
        assert r.status_code == 403
    assert (
        await client.delete("/api/sessions/admin/cleanup/delete", headers=users[0])
    ).status_code == 403

    clock.advance(2 * HOUR)
    await client.post(f"/api/sessions/{ids[2]}/activity", headers=users[2])
    r = await client.post("/api/sessions/admin/cleanup/abandon", headers=admin)
    assert r.json()["count"] == 0  # default threshold: 24 h
    r = await client.post("/api/sessions/admin/cleanup/abandon?hours_threshold=1", headers=admin)
    body = r.json()
    assert body["message"] == "Abandoned 2 inactive sessions" and body["count"] == 2
    assert sorted(body["ids"]) == sorted(ids[:2])
    assert (await get(client, ids[0], admin))["end_reason"] == "idle_timeout"

    clock.advance(3 * DAY)
    r = await client.post("/api/sessions/admin/cleanup/archive", headers=admin)
    assert r.json()["count"] == 0  # default: 7 days
    r = await client.post("/api/sessions/admin/cleanup/archive?days_threshold=2", headers=admin)
    assert r.json() == {
        "message": "Archived 2 abandoned sessions",
        "count": 2,
        "ids": r.json()["ids"],
    }
    clock.advance(10 * DAY)
    r = await client.delete("/api/sessions/admin/cleanup/delete", headers=admin)
    assert r.json()["count"] == 0  # default: 90 days
    r = await client.post("/api/sessions/admin/cleanup/delete?days_threshold=5", headers=admin)
    assert r.json()["message"] == "Deleted 2 archived sessions"
    assert (await client.get(f"/api/sessions/{ids[0]}", headers=admin)).status_code == 404
    assert (await get(client, ids[2], admin))["status"] == "active"
    r = await client.post("/api/sessions/admin/cleanup/abandon?hours_threshold=-1", headers=admin)
    assert r.status_code == 422
