"""The REST client against a real server: a round trip, paging, and typed errors."""

from __future__ import annotations

import pytest
from tests.live import LiveServer

from sessionhub.client import (
    ApiError,
    ConflictError,
    NotFoundError,
    PreconditionFailedError,
    SessionHubClient,
    UnauthorizedError,
    ValidationError,
)

pytestmark = pytest.mark.slow


async def test_round_trip(live: LiveServer) -> None:
    async with SessionHubClient(live.url, token=live.token("rt-alice")) as c:
        s = await c.create_session(
            attributes={"label": "one"}, metadata={"k": 1}, idempotency_key="key-1"
        )
        assert s["owner"] == "rt-alice" and s["state"] == "active" and s["version"] == 1
        again = await c.create_session(
            attributes={"label": "one"}, metadata={"k": 1}, idempotency_key="key-1"
        )
        assert again["id"] == s["id"]  # the idempotency key made the retry harmless

        got = await c.get_session(s["id"])
        assert got["attributes"] == {"label": "one"} and got["metadata"] == {"k": 1}
        assert got["stream"]["topic"] == f"session:{s['id']}"

        changed = await c.update(s["id"], attributes={"label": "two"}, if_match=got["version"])
        assert changed["attributes"]["label"] == "two" and changed["version"] == 2
        beat = await c.heartbeat(s["id"])
        assert beat["ok"] is True and beat["session_id"] == s["id"]
        ended = await c.act(s["id"], "end", detail="done", if_match=2)
        assert ended["state"] == "ended" and ended["version"] == 3

        events = await c.events(s["id"])
        assert [e["version"] for e in events] == [1, 2, 3]
        assert (await c.events(s["id"], after_version=2))[0]["version"] == 3
        counts = await c.count(kind="generic")
        assert counts == {"count": 1, "active_sessions": 0}
        assert any(k["name"] == "generic" for k in await c.kinds())


async def test_list_sessions_follows_every_page(live: LiveServer) -> None:
    async with SessionHubClient(live.url, token=live.token("rt-pager")) as c:
        made = [(await c.create_session(attributes={"label": str(i)}))["id"] for i in range(5)]
        seen = [s["id"] async for s in c.list_sessions(page_size=2)]
        assert seen == made[::-1]  # newest first, all three pages, nothing twice
        page = await c.list_page(limit=2)
        assert len(page["items"]) == 2 and page["next_cursor"]
        assert [s async for s in c.list_sessions(state="ended")] == []


async def test_typed_errors(live: LiveServer) -> None:
    async with SessionHubClient(live.url, token=live.token("rt-errs")) as c:
        with pytest.raises(NotFoundError) as nf:
            await c.get_session("ses_nope")
        assert nf.value.status == 404 and nf.value.body["status"] == 404

        s = await c.create_session()
        await c.act(s["id"], "end")
        with pytest.raises(ConflictError) as conflict:
            await c.act(s["id"], "end")
        assert conflict.value.status == 409
        assert conflict.value.current is not None and conflict.value.current["state"] == "ended"

        with pytest.raises(PreconditionFailedError) as stale:
            await c.update(s["id"], metadata={"x": 1}, if_match=1)
        assert stale.value.status == 412 and stale.value.current is not None
        assert stale.value.current["version"] == 2

        with pytest.raises(ValidationError) as invalid:
            await c.create_session(attributes={"label": 5})
        assert invalid.value.status == 422 and "label" in invalid.value.detail

    for client in (SessionHubClient(live.url), SessionHubClient(live.url, token="not-a-jwt")):
        async with client:
            with pytest.raises(UnauthorizedError) as unauth:
                await client.get_session("ses_x")
            assert unauth.value.status == 401
            assert isinstance(unauth.value, ApiError)


async def test_api_key(live: LiveServer) -> None:
    async with SessionHubClient(live.url, api_key="wrong") as c:
        with pytest.raises(UnauthorizedError):
            await c.count()
