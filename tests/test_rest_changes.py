"""REST, in-process: changing sessions (PATCH, actions, heartbeats) and reading their events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from sessionhub.kinds.generic import Generic
from sessionhub.kinds.registry import Registry
from sessionhub.server.app import create_app
from sessionhub.server.runtime import Runtime
from sessionhub.settings import Settings
from test_rest_sessions import assert_problem, create
from unit.kinds import Approval

Auth = Callable[..., dict[str, str]]


@pytest.fixture
async def approval_runtime(
    settings: Settings, make_runtime: Callable[[Settings], Runtime]
) -> Runtime:
    rt = make_runtime(settings)
    rt.hub.kinds = Registry([Generic(), Approval()])
    return rt


@pytest.fixture
async def aclient(approval_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """Like ``client``, with the ``approval`` test kind registered."""
    app = create_app(runtime=approval_runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


async def events_of(
    client: httpx.AsyncClient, sid: object, headers: dict[str, str]
) -> list[dict[str, object]]:
    r = await client.get(f"/api/sessions/{sid}/events", headers=headers)
    assert r.status_code == 200, r.text
    items: list[dict[str, object]] = r.json()["items"]
    return items


# -- PATCH ---------------------------------------------------------------------------------------


async def test_patch_changes_attributes_and_metadata(client: httpx.AsyncClient, auth: Auth) -> None:
    h = auth("alice")
    s = await create(client, h, metadata={"a": 1})
    r = await client.patch(
        f"/api/sessions/{s['id']}",
        json={"attributes": {"label": "renamed"}, "metadata": {"b": 2}},
        headers=h,
    )
    assert r.status_code == 200 and r.headers["etag"] == '"2"'
    body = r.json()
    assert body["attributes"] == {"label": "renamed"} and body["metadata"] == {"b": 2}
    assert body["version"] == 2
    evs = await events_of(client, s["id"], h)
    assert evs[-1]["type"] == "session.updated" and evs[-1]["version"] == 2
    # An admin may change anyone's session; another user cannot even see it.
    r = await client.patch(
        f"/api/sessions/{s['id']}", json={"metadata": {}}, headers=auth("root", "admin")
    )
    assert r.status_code == 200 and r.json()["version"] == 3
    r = await client.patch(f"/api/sessions/{s['id']}", json={"metadata": {}}, headers=auth("bob"))
    assert_problem(r, 404)


async def test_patch_with_if_match(client: httpx.AsyncClient, auth: Auth) -> None:
    h = auth("alice")
    s = await create(client, h)
    url = f"/api/sessions/{s['id']}"
    r = await client.patch(url, json={"metadata": {"x": 1}}, headers={**h, "If-Match": '"2"'})
    body = assert_problem(r, 412, "version 1")
    assert body["current"]["version"] == 1  # type: ignore[index]
    r = await client.patch(url, json={"metadata": {"x": 1}}, headers={**h, "If-Match": '"1"'})
    assert r.status_code == 200 and r.json()["version"] == 2
    r = await client.patch(url, json={"metadata": {"x": 2}}, headers={**h, "If-Match": 'W/"2"'})
    assert r.status_code == 200 and r.json()["version"] == 3
    r = await client.patch(url, json={"metadata": {"x": 3}}, headers={**h, "If-Match": "*"})
    assert r.status_code == 200 and r.json()["version"] == 4
    r = await client.patch(url, json={"metadata": {}}, headers={**h, "If-Match": "yesterday"})
    assert_problem(r, 422, "If-Match")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "nothing to change"),
        ({"metadata": None, "attributes": None}, "nothing to change"),
        ({"metadata": [1]}, "metadata"),
        ({"metadata": "x"}, "metadata"),
        ({"attributes": {"label": 1}}, "'label' must be a string"),
        ({"attributes": {"colour": "red"}}, "unknown attribute"),
        ({"state": "ended"}, "state"),
        ({"metadata": {"blob": "x" * 70_000}}, "metadata is"),
    ],
)
async def test_bad_patches_are_422(
    client: httpx.AsyncClient, auth: Auth, body: dict[str, object], fragment: str
) -> None:
    s = await create(client, auth("alice"))
    r = await client.patch(f"/api/sessions/{s['id']}", json=body, headers=auth("alice"))
    assert_problem(r, 422, fragment)


async def test_patch_of_an_immutable_attribute_is_422(
    aclient: httpx.AsyncClient, auth: Auth
) -> None:
    s = await create(aclient, auth("alice"), kind="approval", attributes={"target": "pc-1"})
    r = await aclient.patch(
        f"/api/sessions/{s['id']}", json={"attributes": {"target": "pc-2"}}, headers=auth("alice")
    )
    assert_problem(r, 422, "cannot be changed")


async def test_patch_of_an_ended_session_is_409(client: httpx.AsyncClient, auth: Auth) -> None:
    h = auth("alice")
    s = await create(client, h)
    await client.post(f"/api/sessions/{s['id']}/actions/end", headers=h)
    r = await client.patch(f"/api/sessions/{s['id']}", json={"metadata": {"x": 1}}, headers=h)
    body = assert_problem(r, 409, "terminal")
    assert body["current"]["state"] == "ended"  # type: ignore[index]


async def test_patch_of_an_unknown_session_is_404(client: httpx.AsyncClient, auth: Auth) -> None:
    r = await client.patch("/api/sessions/ses_nope", json={"metadata": {}}, headers=auth("alice"))
    assert_problem(r, 404)


# -- actions -------------------------------------------------------------------------------------


async def test_a_legal_action_moves_the_session(aclient: httpx.AsyncClient, auth: Auth) -> None:
    s = await create(aclient, auth("alice"), kind="approval", attributes={"target": "pc"})
    assert s["state"] == "pending"
    r = await aclient.post(
        f"/api/sessions/{s['id']}/actions/approve", headers=auth("root", "admin")
    )
    assert r.status_code == 200 and r.json()["state"] == "active" and r.json()["version"] == 2
    assert r.headers["etag"] == '"2"'
    r = await aclient.post(
        f"/api/sessions/{s['id']}/actions/stop",
        json={"detail": "User requested"},
        headers=auth("alice"),
    )
    body = r.json()
    assert r.status_code == 200 and body["state"] == "stopped"
    assert body["end_reason"] == "stopped" and body["end_detail"] == "User requested"
    assert body["ended_at"] == "2026-01-01T12:00:00Z"


async def test_an_illegal_action_is_409_with_the_current_session(
    aclient: httpx.AsyncClient, auth: Auth
) -> None:
    s = await create(aclient, auth("alice"), kind="approval", attributes={"target": "pc"})
    await aclient.post(f"/api/sessions/{s['id']}/actions/stop", headers=auth("alice"))
    r = await aclient.post(
        f"/api/sessions/{s['id']}/actions/approve", headers=auth("root", "admin")
    )
    body = assert_problem(r, 409, "terminal")
    assert body["current"]["state"] == "stopped" and body["current"]["version"] == 2  # type: ignore[index]


async def test_an_unknown_action_is_404_and_lists_the_actions(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    s = await create(client, auth("alice"))
    r = await client.post(f"/api/sessions/{s['id']}/actions/fly", headers=auth("alice"))
    assert_problem(r, 404, "unknown action 'fly'", "end")


async def test_an_action_of_another_role_is_403(client: httpx.AsyncClient, auth: Auth) -> None:
    s = await create(client, auth("alice"))
    r = await client.post(f"/api/sessions/{s['id']}/actions/drop", headers=auth("alice"))
    assert_problem(r, 403, "roles")
    r = await client.post(f"/api/sessions/{s['id']}/actions/drop", headers=auth("root", "admin"))
    assert r.status_code == 200 and r.json()["end_reason"] == "heartbeat_timeout"


async def test_actions_on_foreign_or_unknown_sessions_are_404(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    s = await create(client, auth("alice"))
    assert_problem(
        await client.post(f"/api/sessions/{s['id']}/actions/end", headers=auth("bob")), 404
    )
    assert_problem(await client.post("/api/sessions/ses_x/actions/end", headers=auth("bob")), 404)


async def test_action_with_if_match_and_bad_bodies(client: httpx.AsyncClient, auth: Auth) -> None:
    h = auth("alice")
    s = await create(client, h)
    url = f"/api/sessions/{s['id']}/actions/end"
    assert_problem(await client.post(url, headers={**h, "If-Match": '"7"'}), 412)
    assert_problem(await client.post(url, json={"detail": "x" * 1001}, headers=h), 422, "detail")
    assert_problem(await client.post(url, json={"reason": "mine"}, headers=h), 422, "reason")
    r = await client.post(url, content=b"{oops", headers={**h, "content-type": "application/json"})
    assert_problem(r, 422)
    r = await client.post(url, headers={**h, "If-Match": '"1"'})
    assert r.status_code == 200 and r.json()["state"] == "ended"


async def test_two_concurrent_transitions_one_wins_one_gets_409(
    aclient: httpx.AsyncClient, auth: Auth
) -> None:
    """``approve`` and ``deny`` are both legal from ``pending``; racing them, exactly one wins."""
    admin = auth("root", "admin")
    for _ in range(5):
        s = await create(aclient, auth("alice"), kind="approval", attributes={"target": "pc"})
        sid = s["id"]
        r1, r2 = await asyncio.gather(
            aclient.post(f"/api/sessions/{sid}/actions/approve", headers=admin),
            aclient.post(f"/api/sessions/{sid}/actions/deny", headers=admin),
        )
        statuses = sorted([r1.status_code, r2.status_code])
        assert statuses == [200, 409], (r1.text, r2.text)
        winner, loser = (r1, r2) if r1.status_code == 200 else (r2, r1)
        body = assert_problem(loser, 409)
        assert body["current"]["state"] == winner.json()["state"]  # type: ignore[index]
        assert body["current"]["version"] == 2  # type: ignore[index]
        evs = await events_of(aclient, sid, admin)
        assert [e["type"] for e in evs] == ["session.created", "session.state_changed"]


# -- heartbeats ----------------------------------------------------------------------------------


async def test_heartbeat_is_accepted_and_shows_as_activity(
    client: httpx.AsyncClient, auth: Auth, runtime: Runtime, clock: object
) -> None:
    h = auth("alice")
    s = await create(client, h)
    clock.advance(30)  # type: ignore[attr-defined]
    r = await client.post(f"/api/sessions/{s['id']}/heartbeat", headers=h)
    assert r.status_code == 200
    assert r.json() == {
        "ok": True,
        "session_id": s["id"],
        "last_activity_at": "2026-01-01T12:00:30Z",
    }
    # Not yet written (coalesced), but the read shows it; the version does not move.
    stored = await runtime.hub.store.get(str(s["id"]))
    assert stored is not None and stored.last_activity_at.second == 0
    r = await client.get(f"/api/sessions/{s['id']}", headers=h)
    assert r.json()["last_activity_at"] == "2026-01-01T12:00:30Z" and r.json()["version"] == 1
    assert await runtime.hub.flush_heartbeats() == 1
    stored = await runtime.hub.store.get(str(s["id"]))
    assert stored is not None and stored.last_activity_at.second == 30 and stored.version == 1


async def test_heartbeat_of_an_ended_session_is_409(client: httpx.AsyncClient, auth: Auth) -> None:
    h = auth("alice")
    s = await create(client, h)
    await client.post(f"/api/sessions/{s['id']}/actions/end", headers=h)
    assert_problem(await client.post(f"/api/sessions/{s['id']}/heartbeat", headers=h), 409)


async def test_heartbeat_of_foreign_or_unknown_sessions_is_404(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    s = await create(client, auth("alice"))
    assert_problem(
        await client.post(f"/api/sessions/{s['id']}/heartbeat", headers=auth("bob")), 404
    )
    assert_problem(await client.post("/api/sessions/ses_nope/heartbeat", headers=auth("bob")), 404)
    r = await client.post(f"/api/sessions/{s['id']}/heartbeat", headers=auth("root", "admin"))
    assert r.status_code == 200


async def test_heartbeat_of_a_session_not_yet_cached_reads_it_once(
    settings: Settings, make_runtime: Callable[[Settings], Runtime], auth: Auth
) -> None:
    """A restarted node has no cache: the first heartbeat loads the session, later ones don't."""
    rt = make_runtime(settings)
    await rt.hub.start()
    from sessionhub.core.principal import Principal

    alice = Principal("alice")
    s, _ = await rt.hub.create(alice, "generic")
    await rt.hub.close()
    rt2 = make_runtime(settings)
    await rt2.hub.start()
    try:
        reads = 0
        real_get = rt2.hub.store.get

        async def counting_get(sid: str):  # type: ignore[no-untyped-def]
            nonlocal reads
            reads += 1
            return await real_get(sid)

        rt2.hub.store.get = counting_get  # type: ignore[method-assign]
        for _ in range(5):
            await rt2.hub.heartbeat(alice, s.id)
        assert reads == 1
    finally:
        await rt2.hub.close()


# -- events --------------------------------------------------------------------------------------


async def test_events_in_order_and_after_version(client: httpx.AsyncClient, auth: Auth) -> None:
    h = auth("alice")
    s = await create(client, h)
    await client.patch(f"/api/sessions/{s['id']}", json={"metadata": {"a": 1}}, headers=h)
    await client.post(f"/api/sessions/{s['id']}/actions/end", headers=h)
    evs = await events_of(client, s["id"], h)
    assert [(e["type"], e["version"]) for e in evs] == [
        ("session.created", 1),
        ("session.updated", 2),
        ("session.state_changed", 3),
    ]
    assert evs[2]["data"]["from"] == "active" and evs[2]["data"]["to"] == "ended"  # type: ignore[index]
    assert evs[0]["actor"] == "alice" and evs[0]["at"] == "2026-01-01T12:00:00Z"
    r = await client.get(f"/api/sessions/{s['id']}/events?after_version=1", headers=h)
    assert [e["version"] for e in r.json()["items"]] == [2, 3]
    r = await client.get(f"/api/sessions/{s['id']}/events?after_version=1&limit=1", headers=h)
    assert [e["version"] for e in r.json()["items"]] == [2]
    # Beyond a 32-bit version (and beyond 64 bits, which SQLite cannot even bind): 422.
    too_big = ("after_version=2147483648", "after_version=99999999999999999999")
    for q in ("after_version=-1", "limit=0", "limit=1001", "after_version=x", *too_big):
        assert_problem(await client.get(f"/api/sessions/{s['id']}/events?{q}", headers=h), 422)
    r = await client.get(f"/api/sessions/{s['id']}/events?after_version=2147483647", headers=h)
    assert r.status_code == 200 and r.json()["items"] == []
    assert_problem(await client.get(f"/api/sessions/{s['id']}/events", headers=auth("bob")), 404)


async def test_two_nodes_on_one_database_serialise_through_the_version(
    tmp_path: object, clock: object
) -> None:
    """Two hubs (two nodes) share a store; a change based on a stale read loses the
    compare-and-set with a 409 carrying the current session, and writes nothing."""
    from pathlib import Path

    from sessionhub.broker.memory import MemoryBroker
    from sessionhub.core.errors import VersionConflict
    from sessionhub.core.principal import Principal
    from sessionhub.hub import Hub
    from sessionhub.store.sqlite import SqliteStore

    url = f"sqlite+aiosqlite:///{Path(str(tmp_path)) / 'shared.db'}"
    kinds = Registry([Generic(), Approval()])
    node1 = Hub(SqliteStore(url), MemoryBroker(), kinds, clock=clock)  # type: ignore[arg-type]
    node2 = Hub(SqliteStore(url), MemoryBroker(), kinds, clock=clock)  # type: ignore[arg-type]
    await node1.start()
    await node2.start()
    try:
        root = Principal("root", frozenset({"admin"}))
        s, _ = await node1.create(Principal("alice"), "approval", attributes={"target": "pc"})
        stale = await node2.store.get(s.id)
        await node1.act(root, s.id, "approve")

        real_get = node2.store.get
        reads = 0

        async def stale_get(sid: str):  # type: ignore[no-untyped-def]
            nonlocal reads
            reads += 1
            # The first read is from before node 1 committed; later ones see the truth.
            return stale if reads == 1 else await real_get(sid)

        node2.store.get = stale_get  # type: ignore[method-assign]
        with pytest.raises(VersionConflict) as err:
            await node2.act(root, s.id, "deny")
        assert err.value.status == 409
        assert err.value.extra["current"]["state"] == "active"
        assert err.value.extra["current"]["version"] == 2
        evs = await node1.store.events(s.id)
        assert [(e.type, e.version) for e in evs] == [
            ("session.created", 1),
            ("session.state_changed", 2),
        ]
    finally:
        await node1.close()
        await node2.close()


async def test_concurrent_patches_without_if_match_all_apply(
    aclient: httpx.AsyncClient, auth: Auth
) -> None:
    """A change that names no version is a merge onto the current one: 20 at once on one
    session all succeed, in some order, each exactly once (issue 13: 19 of them were 409s)."""
    h = auth("alice")
    s = await create(aclient, h)
    rs = await asyncio.gather(
        *(
            aclient.patch(f"/api/sessions/{s['id']}", json={"metadata": {"n": i}}, headers=h)
            for i in range(20)
        )
    )
    assert [r.status_code for r in rs] == [200] * 20, [r.text for r in rs if r.status_code != 200]
    assert sorted(r.json()["version"] for r in rs) == list(range(2, 22))
    evs = await events_of(aclient, str(s["id"]), h)
    assert [e["version"] for e in evs] == list(range(1, 22))
    last = (await aclient.get(f"/api/sessions/{s['id']}", headers=h)).json()
    assert last["version"] == 21 and last["metadata"]["n"] in range(20)
    # With If-Match, optimistic concurrency is still what the caller asked for.
    r = await aclient.patch(
        f"/api/sessions/{s['id']}", json={"metadata": {"n": -1}}, headers={**h, "If-Match": '"3"'}
    )
    assert r.status_code == 412
