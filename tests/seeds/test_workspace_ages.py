"""Seed 002: every workspace age is a kind timeout, so SESSIONHUB_KIND_TIMEOUTS changes it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from workspace_calls import create, get

from sessionhub.server.runtime import Runtime

Auth = Callable[..., dict[str, str]]
DAY = 86400.0


@pytest.fixture
def settings(settings: Any) -> Any:
    # Ages are kind timeouts, so SESSIONHUB_KIND_TIMEOUTS changes them; shortened here.
    settings.kind_timeouts = '{"workspace": {"idle_timeout": 60, "archive_after": 120}}'
    return settings


async def test_ages_are_configurable(
    client: httpx.AsyncClient, auth: Auth, clock: Any, runtime: Runtime
) -> None:
    alice = auth("alice")
    sid = (await create(client, alice))["id"]
    clock.advance(61)
    await runtime.scheduler.sweep()
    assert (await get(client, sid, alice))["status"] == "abandoned"
    clock.advance(121)
    await runtime.scheduler.sweep()
    assert (await get(client, sid, alice))["status"] == "archived"
    kinds = (await client.get("/api/kinds", headers=alice)).json()["kinds"]
    ws = next(k for k in kinds if k["name"] == "workspace")
    assert ws["timeouts"]["idle_timeout"] == 60 and ws["timeouts"]["delete_after"] == 90 * DAY


@pytest.mark.postgres
async def test_workspace_flow_on_postgresql(postgres_url: str, tmp_path: Any) -> None:
    """The chat store and the one-active rule on PostgreSQL (the store's other backend)."""
    from sessionhub.server.app import create_app
    from sessionhub.server.runtime import build_runtime
    from sessionhub.settings import Settings

    runtime = build_runtime(
        Settings(
            data_dir=tmp_path,
            database_url=postgres_url,
            jwt_secret="pg-workspace-secret-0123456789abcdef01",
            sweep_interval=3600.0,
        )
    )
    app = create_app(runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            alice = {"Authorization": f"Bearer {runtime.auth.issue('alice')}"}
            first = await create(client, alice)
            second = await create(client, alice)
            assert (await get(client, first["id"], alice))["status"] == "completed"
            for i in range(3):
                r = await client.post(
                    f"/api/sessions/{second['id']}/messages",
                    json={"content": f"m{i}"},
                    headers=alice,
                )
                assert r.status_code == 201 and r.json()["sequence_order"] == i + 1
            r = await client.get("/api/workspaces/active?message_limit=2", headers=alice)
            body = r.json()
            assert body["id"] == second["id"] and body["chat"]["message_count"] == 3
            assert [m["content"] for m in body["chat"]["messages"]] == ["m1", "m2"]
