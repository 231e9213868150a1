"""Who may do what: an authorization matrix over every route, topic and socket path.

The rows are checked against the app's own routes (``app.routes``): a route without a row
fails ``test_every_route_has_a_row`` (add one: who may call it, and what everyone else
gets), and so does a row whose route is gone. Each row is called by four identities:
``anon`` (no credentials), ``owner`` (alice, who owns the resource the path names),
``other`` (bob, another user) and ``admin`` (root, role admin). Every identity gets a
resource of its own (owned by alice), so what one call changes does not decide another's
answer. The status each gets must be the row's and one the OpenAPI document lists for the
operation. Another user's resource is a 404, never a 403: ids do not leak.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
import websockets
from fastapi import FastAPI
from starlette.routing import BaseRoute
from tests.live import LiveServer, make_settings

from sessionhub.server.app import create_app
from sessionhub.server.runtime import Runtime, build_runtime
from sessionhub.settings import Settings

WHO = ("anon", "owner", "other", "admin")
Ids = dict[str, str]


@dataclass(frozen=True)
class Row:
    """The answers to one route: ``anon, owner, other, admin``. ``needs`` names what alice
    must own for the path (``{session_id}``, ``{command_id}``); ``body``/``query`` may use
    those ids."""

    anon: int
    owner: int
    other: int
    admin: int
    needs: str | None = None
    body: Callable[[Ids], Any] | None = None
    query: dict[str, str] = field(default_factory=dict)

    def expect(self, who: str) -> int:
        status: int = getattr(self, who)
        return status


def own(ok: int = 200, needs: str = "generic", **kw: Any) -> Row:
    """The owner and admins; another user gets 404 (the resource does not exist for them)."""
    return Row(401, ok, 404, ok, needs=needs, **kw)


def users(ok: int = 200, **kw: Any) -> Row:
    """Anyone signed in (each sees their own)."""
    return Row(401, ok, ok, ok, **kw)


def admins(**kw: Any) -> Row:
    return Row(401, 403, 403, 200, **kw)


def public(ok: int = 200) -> Row:
    return Row(ok, ok, ok, ok)


#: (method, path) -> row. Intentionally public: the health and readiness probes, the metrics
#: scrape, the dashboard's page and files, the API docs and the OpenAPI document.
ROWS: dict[tuple[str, str], Row] = {
    # -- public --------------------------------------------------------------------------
    ("GET", "/openapi.json"): public(),
    ("GET", "/"): public(),
    ("GET", "/dashboard/{path:path}"): public(),
    ("GET", "/api/health"): public(),
    ("GET", "/api/ready"): public(),
    ("GET", "/api/config/health"): public(),
    ("GET", "/metrics"): public(),
    ("GET", "/docs"): public(),
    ("GET", "/redoc"): public(),
    ("GET", "/docs/assets/{name}"): public(),
    # -- sessions ------------------------------------------------------------------------
    ("POST", "/api/sessions"): users(201, body=lambda _: {}),
    ("GET", "/api/sessions"): users(),
    ("GET", "/api/sessions/count"): users(),
    ("GET", "/api/kinds"): users(),
    ("GET", "/api/sessions/{session_id}"): own(),
    ("PATCH", "/api/sessions/{session_id}"): own(body=lambda _: {"metadata": {"n": 1}}),
    ("POST", "/api/sessions/{session_id}/actions/{action}"): own(),
    ("POST", "/api/sessions/{session_id}/heartbeat"): own(),
    ("GET", "/api/sessions/{session_id}/events"): own(),
    # The stream's answer is its first line: 200 once the topics are allowed.
    ("GET", "/api/stream"): Row(401, 200, 403, 200, query={"topics": "user:alice"}),
    # -- Grace (seed 004) ----------------------------------------------------------------
    ("POST", "/api/remote/start"): users(body=lambda _: {}),
    ("POST", "/api/remote/stop/{session_id}"): own(needs="remote"),
    ("GET", "/api/remote/status/{session_id}"): own(needs="remote"),
    ("POST", "/api/remote/approve/{session_id}"): Row(401, 403, 404, 200, needs="pending"),
    ("POST", "/api/remote/deny/{session_id}"): Row(401, 403, 404, 200, needs="pending"),
    ("POST", "/api/remote/{session_id}/commands"): own(
        needs="remote", body=lambda _: {"command": "ls"}
    ),
    ("GET", "/api/remote/{session_id}/commands"): own(needs="remote"),
    ("POST", "/api/remote/{session_id}/commands/{command_id}/approve"): own(needs="command"),
    ("POST", "/api/remote/{session_id}/commands/{command_id}/reject"): own(needs="command"),
    ("POST", "/api/remote/{session_id}/commands/{command_id}/complete"): own(
        needs="approved_command", body=lambda _: {"success": True, "exit_code": 0}
    ),
    ("POST", "/api/screen_share/start"): users(body=lambda _: {}),
    ("POST", "/api/screen_share/stop"): own(
        needs="screen", body=lambda ids: {"session_id": ids["session_id"]}
    ),
    ("GET", "/api/screen_share/status/{session_id}"): own(needs="screen"),
    ("POST", "/api/screen_share/{session_id}/viewers"): own(
        needs="screen", body=lambda _: {"user_id": "carol"}
    ),
    ("DELETE", "/api/screen_share/{session_id}/viewers/{user_id}"): own(needs="screen"),
    ("GET", "/api/sessions/active"): users(),
    ("POST", "/api/sessions/heartbeat/{session_id}"): own(needs="remote"),
    ("POST", "/api/sessions/check_dropped"): users(),
    ("GET", "/api/sessions/history"): users(),
    # -- notifications and webhooks ------------------------------------------------------
    ("GET", "/api/notifications"): users(),
    ("POST", "/api/notifications/read"): users(body=lambda _: {"all": True}),
    ("GET", "/api/webhooks/deliveries"): admins(),
    # -- JamBot (seed 002) ---------------------------------------------------------------
    ("POST", "/api/sessions/"): users(body=lambda _: {}),
    ("GET", "/api/sessions/"): users(),
    ("GET", "/api/workspaces/active"): users(),
    ("PUT", "/api/sessions/{session_id}"): own(needs="workspace", body=lambda _: {"name": "x"}),
    ("POST", "/api/sessions/{session_id}/link-mission/{mission_id}"): own(needs="workspace"),
    ("POST", "/api/sessions/{session_id}/activity"): own(needs="workspace"),
    ("POST", "/api/sessions/{session_id}/complete"): own(needs="workspace"),
    ("POST", "/api/sessions/{session_id}/messages"): own(
        201, needs="workspace", body=lambda _: {"content": "hello"}
    ),
    ("GET", "/api/sessions/{session_id}/messages"): own(needs="workspace"),
    ("POST", "/api/sessions/admin/cleanup/abandon"): admins(),
    ("POST", "/api/sessions/admin/cleanup/archive"): admins(),
    ("DELETE", "/api/sessions/admin/cleanup/delete"): admins(),
    ("POST", "/api/sessions/admin/cleanup/delete"): admins(),
    # -- NINA (seed 000): no rig is configured here, so there is nothing to see for anyone
    # (the answer names no rig); who sees which rig is tests/nina/test_rest.py's.
    ("GET", "/api/nina/session-state"): public(404),
    ("POST", "/api/nina/session-state/refresh"): public(404),
    ("POST", "/api/session/refresh"): public(404),
    # -- rooms (seed 003): public by design (Aesthetic Computer's rooms are anonymous; with
    # SESSIONHUB_ROOMS_REQUIRE_TOKEN=1 the signalling needs a token: tests/rooms/). The
    # connection id here names no connection: its routes answer what geckos.io answers.
    ("GET", "/session/{slug}"): public(),
    **{
        (method, prefix + path): public(status)
        for prefix in ("/.wrtc/v1", "/.wrtc/v2", "/room/{slug}/.wrtc/v1", "/room/{slug}/.wrtc/v2")
        for method, path, status in (
            ("POST", "/connections", 200),
            ("POST", "/connections/{id}/remote-description", 400),
            ("GET", "/connections/{id}/additional-candidates", 404),
            ("POST", "/connections/{id}/close", 200),
            ("OPTIONS", "/{rest:path}", 200),
        )
    },
}

#: WebSocket paths -> the close code (or "open") per identity: ``test_socket_paths``.
SOCKETS: dict[str, dict[str, int | str]] = {
    # The Centrifugo protocol: a connect without a token is error 101 (then, never connected,
    # the socket goes stale: 3502); a user's connect opens the connection.
    "/connection/websocket": {"anon": 101, "owner": "open", "other": "open", "admin": "open"},
    # KATO's dashboard: server-wide numbers, admins only.
    "/ws": {"anon": 3500, "owner": 3507, "other": 3507, "admin": "open"},
    # The screen-share relay, as a viewer of alice's share: not admitted is 4403.
    "/stream/{session_id}": {"anon": 4401, "owner": "open", "other": 4403, "admin": "open"},
    # /ws/unified exists with a NINA rig only (tests/nina/test_ws_unified.py).
    # The room sockets (seed 003): anyone may join a room (its protocol: tests/rooms/).
    "/room/{slug}": {"anon": "open", "owner": "open", "other": "open", "admin": "open"},
    "/": {"anon": "open", "owner": "open", "other": "open", "admin": "open"},
}

#: Topics -> who may follow them (SSE and the WebSocket protocol alike).
TOPICS: dict[str, dict[str, bool]] = {
    "sessions": {"owner": False, "other": False, "admin": True},
    "sessions:generic": {"owner": False, "other": False, "admin": True},
    "session:{session_id}": {"owner": True, "other": False, "admin": True},
    "user:alice": {"owner": True, "other": False, "admin": True},
    "notifications:alice": {"owner": True, "other": False, "admin": True},
}


def routes(app: FastAPI) -> Iterator[tuple[str, BaseRoute]]:
    """Every route of the app with its full path (FastAPI nests included routers)."""
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:
            for ctx in contexts():
                yield ctx.path, ctx.original_route
        else:
            yield getattr(route, "path", ""), route


def http_routes(app: FastAPI) -> set[tuple[str, str]]:
    out = set()
    for path, route in routes(app):
        for method in getattr(route, "methods", None) or ():
            if method != "HEAD":
                out.add((method, path))
    return out


def socket_routes(app: FastAPI) -> set[str]:
    return {path for path, route in routes(app) if type(route).__name__.endswith("WebSocketRoute")}


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, Runtime]]:
    runtime = build_runtime(settings)
    app = create_app(runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield app, c, runtime


def headers_for(runtime: Runtime) -> dict[str, dict[str, str]]:
    token = runtime.auth.issue
    return {
        "anon": {},
        "owner": {"Authorization": f"Bearer {token('alice', ())}"},
        "other": {"Authorization": f"Bearer {token('bob', ())}"},
        "admin": {"Authorization": f"Bearer {token('root', ('admin',))}"},
    }


async def make(c: httpx.AsyncClient, alice: dict[str, str], needs: str | None) -> Ids:
    """A fresh resource of alice's for a row."""
    ids: Ids = {"action": "end", "user_id": "carol", "mission_id": "m-1"}
    ids.update({"name": "swagger-ui.css", "path:path": "app.css", "slug": "lobby"})
    ids.update({"id": "a" * 24, "rest:path": "connections"})
    if needs is None:
        return ids

    async def post(path: str, body: Any) -> dict[str, Any]:
        r = await c.post(path, json=body, headers=alice)
        assert r.status_code in (200, 201), r.text
        out: dict[str, Any] = r.json()
        return out

    if needs == "generic":
        ids["session_id"] = (await post("/api/sessions", {}))["id"]
    elif needs in ("remote", "command", "approved_command"):
        ids["session_id"] = (await post("/api/remote/start", {}))["session_id"]
        if needs != "remote":
            path = f"/api/remote/{ids['session_id']}/commands"
            ids["command_id"] = (await post(path, {"command": "ls"}))["command"]["id"]
        if needs == "approved_command":
            await post(f"{path}/{ids['command_id']}/approve", None)
    elif needs == "pending":
        body = {"safety_mode": "autonomous"}
        ids["session_id"] = (await post("/api/remote/start", body))["session_id"]
    elif needs == "screen":
        ids["session_id"] = (await post("/api/screen_share/start", {}))["session_id"]
    elif needs == "workspace":
        ids["session_id"] = (await post("/api/sessions/", {}))["id"]
    else:
        raise AssertionError(f"unknown resource {needs!r}")
    return ids


def fill(path: str, ids: Ids) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, path
    return path


async def first_status(app: FastAPI, path: str, query: str, headers: dict[str, str]) -> int:
    """The status of a streaming answer, without reading its endless body: the app is called
    directly and the client goes away once the head is sent."""
    started = asyncio.Event()
    gone = asyncio.Event()
    status = 0

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            started.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    task = asyncio.ensure_future(app(scope, receive, send))
    try:
        await asyncio.wait_for(started.wait(), 10)
    finally:
        gone.set()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
    return status


# -- the matrix ----------------------------------------------------------------------------


async def test_every_route_has_a_row(served: tuple[FastAPI, httpx.AsyncClient, Runtime]) -> None:
    app, _, _ = served
    present = http_routes(app)
    missing = sorted(present - ROWS.keys())
    assert not missing, f"routes without a row in ROWS (who may call them?): {missing}"
    gone = sorted(ROWS.keys() - present)
    assert not gone, f"rows of routes the app no longer has: {gone}"
    sockets = socket_routes(app)
    assert sockets == SOCKETS.keys(), f"socket paths and SOCKETS differ: {sorted(sockets)}"


async def test_each_identity_gets_its_documented_answer(
    served: tuple[FastAPI, httpx.AsyncClient, Runtime],
) -> None:
    """Every row, every identity (one app for all rows: the whole table is reported)."""
    app, c, runtime = served
    who = headers_for(runtime)
    document = app.openapi()["paths"]
    wrong: list[str] = []
    for (method, path), row in sorted(ROWS.items()):
        documented = document.get(path, {}).get(method.lower(), {}).get("responses")
        for identity in WHO:
            ids = await make(c, who["owner"], row.needs)
            url = fill(path, ids)
            body = row.body(ids) if row.body is not None else None
            if path == "/api/stream":
                status = await first_status(app, url, urlencode(row.query), who[identity])
                problem = True
            else:
                r = await c.request(method, url, params=row.query, json=body, headers=who[identity])
                status = r.status_code
                # Documented operations answer errors as problems; a compat route outside
                # the document keeps its upstream's shape (geckos.io signalling).
                problem = (
                    status < 400
                    or documented is None
                    or r.headers["content-type"] == "application/problem+json"
                )
            if status != row.expect(identity):
                wrong.append(f"{method} {path} as {identity}: {status}, not {row.expect(identity)}")
            elif documented is not None and str(status) not in documented:
                wrong.append(f"{method} {path} as {identity}: {status} is not documented")
            elif not problem:
                wrong.append(f"{method} {path} as {identity}: {status} is not a problem+json")
    assert not wrong, "\n".join(wrong)


async def test_another_users_notifications_are_403_for_users_and_open_to_admins(
    served: tuple[FastAPI, httpx.AsyncClient, Runtime],
) -> None:
    _, c, runtime = served
    who = headers_for(runtime)
    query = {"user": "alice"}
    assert (
        await c.get("/api/notifications", params=query, headers=who["other"])
    ).status_code == 403
    assert (
        await c.get("/api/notifications", params=query, headers=who["admin"])
    ).status_code == 200
    assert (
        await c.get("/api/notifications", params=query, headers=who["owner"])
    ).status_code == 200


async def test_a_method_a_path_does_not_serve_is_405_naming_the_ones_it_does(
    served: tuple[FastAPI, httpx.AsyncClient, Runtime],
) -> None:
    app, c, runtime = served
    admin = headers_for(runtime)["admin"]
    by_path: dict[str, set[str]] = {}
    for method, path in http_routes(app):
        by_path.setdefault(path, set()).add(method)
    ids = {"session_id": "x1", "command_id": "c1", "action": "end", "user_id": "u1"}
    ids.update({"mission_id": "m1", "name": "favicon.png", "path:path": "app.css"})
    # A catch-all ({rest:path}) filled with what no other route takes.
    ids.update({"slug": "lobby", "id": "a" * 24, "rest:path": "x/y"})
    for path, methods in sorted(by_path.items()):
        url = fill(path, ids)
        r = await c.request("TRACE", url, headers=admin)
        assert r.status_code == 405, (path, r.status_code)
        # The methods of this template (not of /api/sessions/{session_id} for
        # /api/sessions/active, which matches it too); geckos' signalling also answers
        # OPTIONS anywhere under its prefix (a CORS preflight catch-all).
        allowed = set(r.headers["allow"].split(", "))
        assert methods <= allowed and allowed - methods <= {"OPTIONS"}, (path, allowed)
        assert r.headers["content-type"] == "application/problem+json"


async def test_topics_over_sse(served: tuple[FastAPI, httpx.AsyncClient, Runtime]) -> None:
    app, c, runtime = served
    who = headers_for(runtime)
    ids = await make(c, who["owner"], "generic")
    for template, allowed in TOPICS.items():
        topic = fill(template, ids)
        query = urlencode({"topics": topic})
        assert await first_status(app, "/api/stream", query, who["anon"]) == 401
        for identity, may in allowed.items():
            status = await first_status(app, "/api/stream", query, who[identity])
            assert status == (200 if may else 403), (topic, identity, status)


# -- sockets, on a real server ---------------------------------------------------------------


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(make_settings(tmp_path / "live")).start()
    try:
        yield server
    finally:
        server.stop()


async def _open(url: str) -> websockets.ClientConnection:
    return await websockets.connect(url, open_timeout=5, max_size=None, compression=None)


async def _outcome(ws: websockets.ClientConnection, wait: float = 1.0) -> int | str:
    """The close code the server sent within ``wait`` seconds, or "open"."""
    try:
        async with asyncio.timeout(wait):
            while True:
                await ws.recv()
    except websockets.ConnectionClosed:
        return ws.close_code or 0
    except TimeoutError:
        return "open"


async def _centrifugo(live: LiveServer, token: str | None) -> int | str:
    ws = await _open(live.ws_url)
    try:
        await ws.send(
            orjson.dumps({"id": 1, "connect": {"token": token} if token else {}}).decode()
        )
        reply = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        if "error" in reply:
            return int(reply["error"]["code"])
        return await _outcome(ws, 1.0)
    finally:
        await ws.close()


@pytest.mark.slow
async def test_socket_paths(live: LiveServer) -> None:
    tokens = {
        "anon": None,
        "owner": live.token("alice"),
        "other": live.token("bob"),
        "admin": live.token("root", "admin"),
    }
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        r = await http.post("/api/screen_share/start", json={}, headers=live.headers("alice"))
        share = r.json()["session_id"]
    for path, expected in SOCKETS.items():
        for identity, want in expected.items():
            token = tokens[identity]
            if path == "/connection/websocket":
                got = await _centrifugo(live, token)
            else:
                filled = path.replace("{session_id}", share).replace("{slug}", "lobby")
                url = live.socket_url(filled, token)
                ws = await _open(url)
                try:
                    got = await _outcome(ws)
                finally:
                    await ws.close()
            assert got == want, (path, identity, got)


@pytest.mark.slow
async def test_topics_over_the_websocket_protocol(live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        r = await http.post("/api/sessions", json={}, headers=live.headers("alice"))
        ids = {"session_id": r.json()["id"]}
    tokens = {"owner": live.token("alice"), "other": live.token("bob")}
    tokens["admin"] = live.token("root", "admin")
    for identity, token in tokens.items():
        ws = await _open(live.ws_url)
        try:
            await ws.send(orjson.dumps({"id": 1, "connect": {"token": token}}).decode())
            assert "connect" in orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            for n, (template, allowed) in enumerate(TOPICS.items(), start=2):
                topic = fill(template, ids)
                await ws.send(orjson.dumps({"id": n, "subscribe": {"channel": topic}}).decode())
                reply = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
                if allowed[identity]:
                    assert "subscribe" in reply, (topic, identity, reply)
                else:
                    assert reply.get("error", {}).get("code") == 103, (topic, identity, reply)
        finally:
            await ws.close()
