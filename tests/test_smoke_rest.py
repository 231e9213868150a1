"""A first end-to-end pass through the REST API in-process."""

from __future__ import annotations

from collections.abc import Callable

import httpx


async def test_create_act_and_read_events(
    client: httpx.AsyncClient, auth: Callable[..., dict[str, str]]
) -> None:
    alice = auth("alice")
    r = await client.post("/api/sessions", json={"kind": "generic"}, headers=alice)
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["state"] == "active" and s["version"] == 1 and s["owner"] == "alice"
    r = await client.post(f"/api/sessions/{s['id']}/actions/end", headers=alice)
    assert r.status_code == 200 and r.json()["state"] == "ended" and r.json()["version"] == 2
    r = await client.post(f"/api/sessions/{s['id']}/actions/end", headers=alice)
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["current"]["state"] == "ended"
    r = await client.get(f"/api/sessions/{s['id']}/events", headers=alice)
    assert [e["type"] for e in r.json()["items"]] == ["session.created", "session.state_changed"]
