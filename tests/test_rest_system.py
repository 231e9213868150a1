"""REST, in-process: kinds, health, readiness, metrics, OpenAPI, and authentication errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import httpx
import jwt
import pytest

from conftest import SECRET
from sessionhub.server.app import create_app
from sessionhub.server.runtime import Runtime
from sessionhub.settings import Settings
from test_rest_sessions import assert_problem, create

Auth = Callable[..., dict[str, str]]
SERVICE_KEY = "svc-key-0123456789abcdef"


async def test_kinds_lists_lifecycles_attributes_and_timeouts(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    r = await client.get("/api/kinds", headers=auth("alice"))
    assert r.status_code == 200
    generic = next(k for k in r.json()["kinds"] if k["name"] == "generic")
    assert generic["states"] == ["active", "ended", "dropped"]
    assert generic["initial"] == ["active"] and generic["terminal"] == ["dropped", "ended"]
    assert {a["name"]: a["roles"] for a in generic["actions"]} == {
        "end": ["admin", "owner", "system"],
        "drop": ["admin", "system"],
    }
    assert generic["attributes"]["label"]["required"] is False
    assert generic["timeouts"]["heartbeat_timeout"] == 300.0
    assert generic["timeouts"]["idle_timeout"] is None


async def test_health_needs_no_token(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/health")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["version"]


async def test_ready_checks_the_store(client: httpx.AsyncClient, runtime: Runtime) -> None:
    r = await client.get("/api/ready")
    assert r.status_code == 200 and r.json() == {"status": "ready", "store": "ok"}
    await runtime.hub.store.close()
    r = await client.get("/api/ready")
    assert_problem(r, 503, "store unavailable")


async def test_ready_is_503_when_the_store_is_broken(
    client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(runtime.hub.store, "ping", broken)
    assert_problem(await client.get("/api/ready"), 503, "OSError")


async def test_metrics_are_prometheus_text_with_request_counts(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    h = auth("alice")
    s = await create(client, h)
    await client.post(f"/api/sessions/{s['id']}/heartbeat", headers=h)
    await client.get("/api/sessions/ses_nope", headers=h)
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert (
        'sessionhub_http_requests_total{method="POST",route="/api/sessions",status="201"} 1.0'
        in text
    )
    assert (
        'sessionhub_http_requests_total{method="GET",route="/api/sessions/{session_id}",'
        'status="404"} 1.0' in text
    )
    assert 'sessionhub_events_published_total{type="session.created"} 1.0' in text
    assert 'sessionhub_sessions{kind="generic",state="active"} 1.0' in text
    assert "sessionhub_heartbeats_received 1.0" in text
    assert "sessionhub_http_request_duration_seconds_bucket" in text


async def test_openapi_and_docs_are_reachable(client: httpx.AsyncClient) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for p in (
        "/api/sessions",
        "/api/sessions/count",
        "/api/sessions/{session_id}",
        "/api/sessions/{session_id}/actions/{action}",
        "/api/sessions/{session_id}/heartbeat",
        "/api/sessions/{session_id}/events",
        "/api/kinds",
        "/api/health",
        "/api/ready",
    ):
        assert p in paths, p
    r = await client.get("/docs")
    assert r.status_code == 200 and "swagger" in r.text.lower()


async def test_unknown_routes_and_methods_are_problems(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    assert_problem(await client.get("/api/nothing-here", headers=auth("alice")), 404)
    assert_problem(await client.delete("/api/sessions", headers=auth("alice")), 405)


# -- authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not.a.token"},
        {"Authorization": "Bearer " + jwt.encode({"sub": "alice"}, "wrong-secret" * 3)},
        {"Authorization": "Bearer unknown-api-key-value"},
        {"X-API-Key": "wrong"},
    ],
)
async def test_missing_or_bad_credentials_are_401_with_www_authenticate(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for method, url in (("GET", "/api/sessions"), ("POST", "/api/sessions"), ("GET", "/api/kinds")):
        r = await client.request(
            method, url, headers=headers, json={} if method == "POST" else None
        )
        assert_problem(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")


async def test_an_expired_token_is_401(client: httpx.AsyncClient, runtime: Runtime) -> None:
    token = runtime.auth.issue("alice", ttl=timedelta(seconds=-120))
    r = await client.get("/api/sessions", headers={"Authorization": f"Bearer {token}"})
    assert_problem(r, 401, "expired")


async def test_a_token_cannot_claim_the_system_role(client: httpx.AsyncClient) -> None:
    token = jwt.encode({"sub": "mallory", "roles": ["system"]}, SECRET, algorithm="HS256")
    h = {"Authorization": f"Bearer {token}"}
    r = await client.post("/api/sessions", json={"owner": "alice"}, headers=h)
    assert_problem(r, 403)


@pytest.fixture
async def keyed_client(
    tmp_path: object, settings: Settings, make_runtime: Callable[[Settings], Runtime]
) -> AsyncIterator[httpx.AsyncClient]:
    settings.api_keys = f"ingest:{SERVICE_KEY}:admin,plain:plain-key-0123456789abc"
    app = create_app(runtime=make_runtime(settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


async def test_api_keys_via_header_or_bearer(keyed_client: httpx.AsyncClient) -> None:
    r = await keyed_client.post(
        "/api/sessions", json={"owner": "alice"}, headers={"X-API-Key": SERVICE_KEY}
    )
    assert r.status_code == 201 and r.json()["owner"] == "alice"
    r = await keyed_client.get(
        "/api/sessions/count", headers={"Authorization": f"Bearer {SERVICE_KEY}"}
    )
    assert r.json()["count"] == 1
    # A key without roles is a plain user named after the key.
    r = await keyed_client.post(
        "/api/sessions", json={}, headers={"X-API-Key": "plain-key-0123456789abc"}
    )
    assert r.status_code == 201 and r.json()["owner"] == "plain"
    r = await keyed_client.get(
        "/api/sessions/count", headers={"X-API-Key": "plain-key-0123456789abc"}
    )
    assert r.json()["count"] == 1


# -- PostgreSQL ----------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_rest_happy_path_on_postgresql(
    postgres_url: str, tmp_path: object, make_runtime: Callable[[Settings], Runtime]
) -> None:
    from pathlib import Path

    settings = Settings(
        data_dir=Path(str(tmp_path)) / "pg",
        jwt_secret=SECRET,
        database_url=postgres_url,
        sweep_interval=3600.0,
    )
    rt = make_runtime(settings)
    app = create_app(runtime=rt)
    h = {"Authorization": f"Bearer {rt.auth.issue('alice')}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            r = await c.post(
                "/api/sessions", json={"metadata": {"a": 1}}, headers={**h, "Idempotency-Key": "k"}
            )
            assert r.status_code == 201
            sid = r.json()["id"]
            r = await c.post(
                "/api/sessions", json={"metadata": {"a": 1}}, headers={**h, "Idempotency-Key": "k"}
            )
            assert r.status_code == 200 and r.json()["id"] == sid
            # The same key for another request is said to be so (IETF idempotency-key draft).
            r = await c.post("/api/sessions", json={}, headers={**h, "Idempotency-Key": "k"})
            assert r.status_code == 422
            r = await c.patch(
                f"/api/sessions/{sid}",
                json={"metadata": {"b": 2}},
                headers={**h, "If-Match": '"1"'},
            )
            assert r.status_code == 200 and r.json()["version"] == 2
            assert (await c.post(f"/api/sessions/{sid}/heartbeat", headers=h)).status_code == 200
            assert await rt.hub.flush_heartbeats() == 1
            r = await c.post(f"/api/sessions/{sid}/actions/end", headers=h)
            assert r.status_code == 200 and r.json()["state"] == "ended"
            r = await c.get("/api/sessions?state=ended", headers=h)
            assert [s["id"] for s in r.json()["items"]] == [sid]
            r = await c.get(f"/api/sessions/{sid}/events", headers=h)
            assert [e["version"] for e in r.json()["items"]] == [1, 2, 3]
            assert (await c.get("/api/ready")).status_code == 200
            assert (await c.get("/api/sessions/count", headers=h)).json() == {
                "count": 1,
                "active_sessions": 0,
            }


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
        "operational",
    ],
)
async def test_a_database_that_does_not_answer_is_503_not_500(
    client: httpx.AsyncClient,
    auth: Auth,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    error: object,
) -> None:
    from sqlalchemy.exc import OperationalError

    exc = (
        OperationalError("SELECT 1", {}, Exception("database is locked"))
        if error == "operational"
        else error
    )

    async def down(*_: object, **__: object) -> None:
        raise exc  # type: ignore[misc]

    monkeypatch.setattr(runtime.hub.store, "get", down)
    monkeypatch.setattr(runtime.hub.store, "find", down)
    r = await client.get("/api/sessions/ses_x", headers=auth("alice"))
    assert_problem(r, 503, "retry")
    assert r.headers["retry-after"] == "1"
    assert_problem(await client.get("/api/sessions", headers=auth("alice")), 503)


async def test_nul_characters_never_reach_the_database(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    """PostgreSQL cannot store NUL in text; every backend answers the same clear 4xx."""
    admin = auth("root", "admin")
    s = await create(client, admin)
    assert_problem(await client.get("/api/sessions/a%00b", headers=admin), 404)
    assert_problem(await client.post("/api/sessions/a%00b/heartbeat", headers=admin), 404)
    assert_problem(await client.get("/api/sessions/a%00b/events", headers=admin), 404)
    r = await client.post("/api/sessions", json={"owner": "a\u0000b"}, headers=admin)
    assert_problem(r, 422, "NUL")
    r = await client.post(
        f"/api/sessions/{s['id']}/actions/end", json={"detail": "x\u0000"}, headers=admin
    )
    assert_problem(r, 422, "NUL")
    r = await client.get("/api/sessions?owner=a%00b&kind=generic%00", headers=admin)
    assert r.status_code == 200 and r.json()["items"] == []
    r = await client.get("/api/sessions/count?owner=a%00b", headers=admin)
    assert r.json()["count"] == 0


async def test_the_sign_in_link_lands_on_a_page_that_shows_the_token(
    client: httpx.AsyncClient,
) -> None:
    """`sessionhub serve` prints <url>/?token=...: that page must exist and lead to the docs."""
    r = await client.get("/?token=abc.def.ghi")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert 'href="/docs"' in r.text
    # The token is read from the query by the page's script, not echoed into the HTML.
    assert "abc.def.ghi" not in r.text
    assert 'get("token")' in r.text


# -- a first hour without snags ----------------------------------------------------------------


async def test_a_garbage_bearer_token_is_called_malformed(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/sessions", headers={"Authorization": "Bearer garbage"})
    body = assert_problem(r, 401, "malformed bearer token", "not a JWT")
    assert "API key" not in str(body["detail"])


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (b'{"kind": }', "line 1, column 10 (character 9)"),
        (b'{\n  "kind": "generic",\n  "metadata": {"a": 1,}\n}', "line 3, column 23"),
        (b'{"kind": "generic"', "line 1, column 19 (character 18)"),
    ],
)
async def test_a_json_syntax_error_names_the_position_in_words(
    client: httpx.AsyncClient, auth: Auth, raw: bytes, where: str
) -> None:
    headers = {**auth("alice"), "Content-Type": "application/json"}
    r = await client.post("/api/sessions", content=raw, headers=headers)
    body = assert_problem(r, 422, "the body is not valid JSON", where)
    assert body["errors"] == [{"field": "body", "message": str(body["detail"]).split(": ", 1)[1]}]


async def test_a_body_that_is_not_an_object_says_so(client: httpx.AsyncClient, auth: Auth) -> None:
    r = await client.post("/api/sessions", json=[1, 2], headers=auth("alice"))
    assert_problem(r, 422, "body: the body must be a JSON object")


async def test_a_non_utf8_body_says_it_is_not_utf8(client: httpx.AsyncClient, auth: Auth) -> None:
    headers = {**auth("alice"), "Content-Type": "application/json"}
    r = await client.post(
        "/api/sessions", content='{"kind": "é"}'.encode("latin-1"), headers=headers
    )
    assert_problem(r, 400, "not valid UTF-8", "byte 0xe9 at position 10")


@pytest.mark.parametrize(("retry_after", "header"), [(None, "1"), (7, "7")])
async def test_unavailable_problems_carry_retry_after(
    client: httpx.AsyncClient,
    auth: Auth,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    retry_after: int | None,
    header: str,
) -> None:
    from sessionhub.core.errors import Unavailable

    extra = {} if retry_after is None else {"retry_after": retry_after}

    async def down(*_: object, **__: object) -> None:
        raise Unavailable("the database is not answering; retry shortly", **extra)

    monkeypatch.setattr(runtime.hub.store, "find", down)
    r = await client.get("/api/sessions", headers=auth("alice"))
    body = assert_problem(r, 503, "not answering")
    assert r.headers["retry-after"] == header and "retry_after" not in body


async def test_openapi_declares_bearer_and_api_key_security(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"]["type"] == "http" and schemes["bearer"]["scheme"] == "bearer"
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "apiKey", "in": "header"}
    assert schemes["apiKey"]["name"] == "X-API-Key"
    assert doc["security"] == [{"bearer": []}, {"apiKey": []}]
    assert doc["paths"]["/api/health"]["get"]["security"] == []  # anyone may call it
    assert "security" not in doc["paths"]["/api/sessions"]["get"]  # the default applies


async def test_docs_and_redoc_load_their_assets_from_this_server(
    client: httpx.AsyncClient,
) -> None:
    import re

    for page, assets in (
        ("/docs", ["swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"]),
        ("/redoc", ["redoc.standalone.js", "favicon.png"]),
    ):
        r = await client.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        urls = re.findall(r'(?:src|href)="([^"]+)"', r.text)
        assert urls and all(u.startswith("/docs/assets/") for u in urls), urls
        assert "http://" not in r.text and "https://" not in r.text  # no CDN, no web fonts
        for name in assets:
            assert f"/docs/assets/{name}" in urls
            asset = await client.get(f"/docs/assets/{name}")
            assert asset.status_code == 200 and len(asset.content) > 1000, name
    js = await client.get("/docs/assets/swagger-ui-bundle.js")
    assert js.headers["content-type"].startswith("text/javascript")
    assert_problem(await client.get("/docs/assets/nothing.js"), 404)
    assert_problem(await client.get("/docs/assets/..%2F__init__.py"), 404)


async def test_the_dashboard_is_served_under_a_policy_of_this_origin_only(
    client: httpx.AsyncClient,
) -> None:
    import base64
    import hashlib
    import re

    r = await client.get("/")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    assert r.headers["referrer-policy"] == "no-referrer"
    # The one inline script (it takes the token out of the address bar) is allowed by hash.
    (inline,) = re.findall(r"<script>(.*?)</script>", r.text, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp and "unsafe-inline" not in csp
    # Every module the page imports is served, with the right type, and from nowhere else.
    pending, seen = ["/dashboard/js/main.js"], set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        m = await client.get(path)
        assert m.status_code == 200, path
        assert m.headers["content-type"].startswith("text/javascript"), path
        for spec in re.findall(r"""from ['"]([^'"]+)['"]""", m.text):
            assert spec.startswith("."), f"{path} imports {spec} from outside the dashboard"
            base = path.rsplit("/", 1)[0]
            parts = [*base.split("/"), *spec.split("/")]
            out: list[str] = []
            for p in parts:
                if p == "..":
                    out.pop()
                elif p != ".":
                    out.append(p)
            pending.append("/".join(out))
    assert len(seen) > 10
    css = await client.get("/dashboard/app.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "http" not in css.text  # no fonts or images from elsewhere
    for bad in ("/dashboard/__init__.py", "/dashboard/index.html.bak", "/dashboard/../system.py"):
        assert (await client.get(bad)).status_code == 404, bad
