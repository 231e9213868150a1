"""REST, in-process: creating, listing, counting and reading sessions."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from sessionhub.server.runtime import Runtime

Auth = Callable[..., dict[str, str]]
PROBLEM = "application/problem+json"


def assert_problem(r: httpx.Response, status: int, *fragments: str) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, object] = r.json()
    assert body["status"] == status and body["title"] and isinstance(body["detail"], str)
    for f in fragments:
        assert f in str(body["detail"]), body
    return body


async def create(
    client: httpx.AsyncClient, headers: dict[str, str], **body: object
) -> dict[str, object]:
    r = await client.post("/api/sessions", json={"kind": "generic", **body}, headers=headers)
    assert r.status_code == 201, r.text
    out: dict[str, object] = r.json()
    return out


# -- POST /api/sessions ------------------------------------------------------------------------


async def test_create_returns_201_with_the_session_and_an_etag(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    r = await client.post(
        "/api/sessions",
        json={"kind": "generic", "attributes": {"label": "demo"}, "metadata": {"a": [1]}},
        headers=auth("alice"),
    )
    assert r.status_code == 201 and r.headers["etag"] == '"1"'
    s = r.json()
    assert s["id"].startswith("ses_") and s["owner"] == "alice" and s["state"] == "active"
    assert s["version"] == 1 and s["attributes"] == {"label": "demo"}
    assert s["metadata"] == {"a": [1]} and s["created_at"] == "2026-01-01T12:00:00Z"
    assert s["duration_seconds"] == 0.0


async def test_kind_defaults_to_generic(client: httpx.AsyncClient, auth: Auth) -> None:
    r = await client.post("/api/sessions", json={}, headers=auth("alice"))
    assert r.status_code == 201 and r.json()["kind"] == "generic"


async def test_idempotency_key_replays_the_first_answer_without_a_second_event(
    client: httpx.AsyncClient, auth: Auth, runtime: Runtime
) -> None:
    h = {**auth("alice"), "Idempotency-Key": "req-1"}
    first = await client.post("/api/sessions", json={"kind": "generic"}, headers=h)
    published = runtime.hub.stats.events_published
    again = await client.post("/api/sessions", json={"kind": "generic"}, headers=h)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert runtime.hub.stats.events_published == published
    r = await client.get(f"/api/sessions/{first.json()['id']}/events", headers=auth("alice"))
    assert len(r.json()["items"]) == 1
    r = await client.get("/api/sessions/count", headers=auth("alice"))
    assert r.json()["count"] == 1
    # Another user's identical key is a different request.
    other = await client.post(
        "/api/sessions", json={}, headers={**auth("bob"), "Idempotency-Key": "req-1"}
    )
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]


async def test_an_idempotency_key_reused_for_another_request_is_422(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    """The IETF idempotency-key draft: the same key with a different body names another
    request; answering the first one's session would hide the mistake."""
    h = {**auth("alice"), "Idempotency-Key": "req-2"}
    body = {"kind": "generic", "attributes": {"label": "a"}, "metadata": {"x": 1, "y": 2}}
    first = await client.post("/api/sessions", json=body, headers=h)
    assert first.status_code == 201
    reordered = {"metadata": {"y": 2, "x": 1}, "attributes": {"label": "a"}, "kind": "generic"}
    same = await client.post("/api/sessions", json=reordered, headers=h)  # key order is free
    assert same.status_code == 200 and same.json()["id"] == first.json()["id"]
    other = {**body, "metadata": {"x": 2}}
    r = await client.post("/api/sessions", json=other, headers=h)
    assert_problem(r, 422, "another request")
    r = await client.get("/api/sessions/count", headers=auth("alice"))
    assert r.json()["count"] == 1


async def test_an_overlong_idempotency_key_is_422(client: httpx.AsyncClient, auth: Auth) -> None:
    r = await client.post(
        "/api/sessions", json={}, headers={**auth("alice"), "Idempotency-Key": "k" * 201}
    )
    assert_problem(r, 422, "Idempotency-Key")


async def test_only_an_admin_may_create_for_another_owner(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    r = await client.post("/api/sessions", json={"owner": "bob"}, headers=auth("alice"))
    assert_problem(r, 403, "admin")
    r = await client.post("/api/sessions", json={"owner": "bob"}, headers=auth("root", "admin"))
    assert r.status_code == 201 and r.json()["owner"] == "bob"
    r = await client.get(f"/api/sessions/{r.json()['id']}", headers=auth("bob"))
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"kind": "nope"}, "unknown kind 'nope'"),
        ({"attributes": {"label": 5}}, "'label' must be a string"),
        ({"attributes": {"colour": "red"}}, "unknown attribute"),
        ({"attributes": {"label": "x" * 201}}, "longer than 200"),
        ({"extra": 1}, "extra"),
        ({"metadata": [1, 2]}, "metadata"),
        ({"metadata": "text"}, "metadata"),
        ({"attributes": None}, "attributes"),
        ({"kind": 5}, "kind"),
        ({"owner": ""}, "owner"),
        ({"metadata": {"blob": "x" * 70_000}}, "metadata is"),
    ],
)
async def test_bad_create_bodies_are_422(
    client: httpx.AsyncClient, auth: Auth, body: dict[str, object], fragment: str
) -> None:
    r = await client.post("/api/sessions", json=body, headers=auth("root", "admin"))
    assert_problem(r, 422, fragment)


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1,2]", b"null", b'"text"'])
async def test_invalid_json_is_422(client: httpx.AsyncClient, auth: Auth, raw: bytes) -> None:
    r = await client.post(
        "/api/sessions",
        content=raw,
        headers={**auth("alice"), "content-type": "application/json"},
    )
    assert_problem(r, 422)


async def test_a_too_large_body_is_413(client: httpx.AsyncClient, auth: Auth) -> None:
    big = b'{"metadata": {"x": "' + b"a" * 1_100_000 + b'"}}'
    r = await client.post(
        "/api/sessions", content=big, headers={**auth("alice"), "content-type": "application/json"}
    )
    assert_problem(r, 413, "larger than")


async def test_a_too_large_chunked_body_is_413(client: httpx.AsyncClient, auth: Auth) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"metadata": {"x": "'
        for _ in range(20):
            yield b"a" * 64_000
        yield b'"}}'

    r = await client.post(
        "/api/sessions",
        content=chunks(),
        headers={**auth("alice"), "content-type": "application/json"},
    )
    assert "content-length" not in r.request.headers
    assert_problem(r, 413, "larger than")


# -- GET /api/sessions --------------------------------------------------------------------------


async def test_list_filters_by_kind_state_and_owner_with_comma_lists(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    admin = auth("root", "admin")
    a1 = await create(client, auth("alice"))
    a2 = await create(client, auth("alice"))
    b1 = await create(client, auth("bob"))
    await client.post(f"/api/sessions/{a2['id']}/actions/end", headers=auth("alice"))

    async def ids(params: str, headers: dict[str, str] = admin) -> set[object]:
        r = await client.get(f"/api/sessions?{params}", headers=headers)
        assert r.status_code == 200, r.text
        return {s["id"] for s in r.json()["items"]}

    everyone = {a1["id"], a2["id"], b1["id"]}
    assert await ids("") == everyone
    assert await ids("kind=generic") == everyone
    assert await ids("kind=other") == set()
    assert await ids("state=ended") == {a2["id"]}
    assert await ids("state=active,ended") == everyone
    assert await ids("state=active&state=ended") == everyone
    assert await ids("owner=bob") == {b1["id"]}
    assert await ids("owner=alice&state=active") == {a1["id"]}
    # A non-admin sees only their own, whatever they ask for.
    assert await ids("", auth("alice")) == {a1["id"], a2["id"]}
    assert await ids("owner=bob", auth("alice")) == set()
    assert await ids("", auth("carol")) == set()


async def test_list_paginates_over_many_pages_without_duplicates_or_gaps(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    h = auth("alice")
    made = {(await create(client, h))["id"] for _ in range(12)}  # same clock: ids break ties
    seen: list[object] = []
    url = "/api/sessions?limit=5"
    for _ in range(10):
        r = await client.get(url, headers=h)
        body = r.json()
        assert len(body["items"]) <= 5
        seen += [s["id"] for s in body["items"]]
        if body["next_cursor"] is None:
            break
        url = f"/api/sessions?limit=5&cursor={body['next_cursor']}"
    assert len(seen) == len(set(seen)) == 12 and set(seen) == made


async def test_list_has_a_stream_position_for_the_callers_topic(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    await create(client, auth("alice"))
    r = await client.get("/api/sessions", headers=auth("alice"))
    stream = r.json()["stream"]
    assert stream["topic"] == "user:alice" and stream["offset"] == 1 and stream["epoch"]
    r = await client.get("/api/sessions", headers=auth("root", "admin"))
    assert r.json()["stream"]["topic"] == "sessions"
    r = await client.get("/api/sessions?kind=generic", headers=auth("root", "admin"))
    assert r.json()["stream"]["topic"] == "sessions:generic"
    r = await client.get("/api/sessions?owner=alice", headers=auth("root", "admin"))
    assert r.json()["stream"]["topic"] == "user:alice"
    # A non-admin asking about someone else still gets their own topic (no peeking).
    r = await client.get("/api/sessions?owner=bob", headers=auth("alice"))
    assert r.json()["stream"]["topic"] == "user:alice"


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=abc", "limit"),
        ("cursor=%21%21%21", "cursor"),
        ("cursor=WzEsMiwzXQ", "cursor"),
        ("cursor=" + "a" * 501, "cursor"),
        ("owner=" + "o" * 201, "owner"),
    ],
)
async def test_bad_list_queries_are_422(
    client: httpx.AsyncClient, auth: Auth, query: str, fragment: str
) -> None:
    r = await client.get(f"/api/sessions?{query}", headers=auth("alice"))
    assert_problem(r, 422, fragment)


# -- GET /api/sessions/count ---------------------------------------------------------------------


async def test_count_and_active_sessions(client: httpx.AsyncClient, auth: Auth) -> None:
    admin = auth("root", "admin")
    a = await create(client, auth("alice"))
    await create(client, auth("alice"))
    await create(client, auth("bob"))
    await client.post(f"/api/sessions/{a['id']}/actions/end", headers=auth("alice"))
    r = await client.get("/api/sessions/count", headers=admin)
    assert r.status_code == 200 and r.json() == {"count": 3, "active_sessions": 2}
    r = await client.get("/api/sessions/count?state=ended", headers=admin)
    assert r.json() == {"count": 1, "active_sessions": 0}
    r = await client.get("/api/sessions/count?owner=bob", headers=admin)
    assert r.json() == {"count": 1, "active_sessions": 1}
    r = await client.get("/api/sessions/count", headers=auth("alice"))
    assert r.json() == {"count": 2, "active_sessions": 1}
    r = await client.get("/api/sessions/count?owner=bob", headers=auth("alice"))
    assert r.json() == {"count": 0, "active_sessions": 0}
    r = await client.get("/api/sessions/count?kind=generic,nope", headers=admin)
    assert_problem(r, 422, "unknown kind 'nope'")


# -- GET /api/sessions/{id} ----------------------------------------------------------------------


async def test_read_one_with_etag_and_stream(client: httpx.AsyncClient, auth: Auth) -> None:
    s = await create(client, auth("alice"))
    r = await client.get(f"/api/sessions/{s['id']}", headers=auth("alice"))
    assert r.status_code == 200 and r.headers["etag"] == '"1"'
    body = r.json()
    assert body["id"] == s["id"] and body["version"] == 1
    assert body["stream"]["topic"] == f"session:{s['id']}" and body["stream"]["offset"] == 1
    r = await client.get(f"/api/sessions/{s['id']}", headers=auth("root", "admin"))
    assert r.status_code == 200


async def test_unknown_and_foreign_sessions_are_both_404(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    s = await create(client, auth("alice"))
    missing = assert_problem(
        await client.get("/api/sessions/ses_nope", headers=auth("bob")), 404, "no session"
    )
    foreign = assert_problem(
        await client.get(f"/api/sessions/{s['id']}", headers=auth("bob")), 404, "no session"
    )
    # The two answers differ only by the id they name: existence does not leak.
    assert str(foreign["detail"]).replace(str(s["id"]), "X") == str(missing["detail"]).replace(
        "ses_nope", "X"
    )


# -- filters a newcomer gets wrong ---------------------------------------------------------------


@pytest.mark.parametrize("route", ["/api/sessions", "/api/sessions/count"])
async def test_an_unknown_state_filter_is_422_naming_the_valid_states(
    client: httpx.AsyncClient, auth: Auth, route: str
) -> None:
    h = auth("alice")
    await create(client, h)
    body = assert_problem(
        await client.get(f"{route}?state=bogus", headers=h), 422, "'bogus'", "active", "ended"
    )
    assert body["errors"] == [{"field": "state", "message": body["detail"]}]
    # Another kind's state is no state of this one.
    body = assert_problem(
        await client.get(f"{route}?kind=remote_access&state=active,ended", headers=h),
        422,
        "'ended'",
        "of kind remote_access",
        "pending_approval",
    )
    assert "'active'" not in str(body["detail"])
    # Valid states still filter as before.
    assert (await client.get(f"{route}?state=active,ended", headers=h)).status_code == 200
    r = await client.get(f"{route}?kind=remote_access&state=pending_approval", headers=h)
    assert r.status_code == 200


async def test_a_text_filter_matches_id_owner_and_attributes(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    admin = auth("root", "admin")
    a = await create(client, auth("alice"), attributes={"label": "Telescope night"})
    b = await create(client, auth("bob"), attributes={"label": "other"})

    async def ids(text: str) -> set[object]:
        r = await client.get("/api/sessions", params={"text": text}, headers=admin)
        assert r.status_code == 200, r.text
        return {s["id"] for s in r.json()["items"]}

    assert await ids("telescope") == {a["id"]}  # attributes, case-insensitively
    assert await ids("BOB") == {b["id"]}  # the owner
    assert await ids(str(a["id"])[-6:]) == {a["id"]}  # the id
    assert await ids("nothing like it") == set()
    r = await client.get("/api/sessions/count", params={"text": "telescope"}, headers=admin)
    assert r.json() == {"count": 1, "active_sessions": 1}
    assert_problem(await client.get("/api/sessions?text=" + "t" * 201, headers=admin), 422, "text")
