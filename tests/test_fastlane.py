"""The fast lane (``server/fastlane.py``) answers exactly as FastAPI's routes would.

Each request is made twice against fresh, identical sessions: once through the lane and
once with the lane switched off (FastAPI's routing, dependencies and exception handlers),
and the two answers must be the same — status, content type, ETag, Allow, body. The lane
must also have answered itself where it claims the request (not handed everything to
FastAPI, which would pass the comparison while doing nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from sessionhub.server.fastlane import Lane
from test_rest_sessions import create

Auth = Callable[..., dict[str, str]]
JSON_TYPE = {"Content-Type": "application/json"}


@contextmanager
def lane(on: bool, taken: list[bool]) -> Iterator[None]:
    """Switch the lane on or off; record, per request it saw, whether it answered itself."""
    original_match, original_accept = Lane.match, Lane.accept

    def accept(self: Lane, *args: Any) -> Any:
        out = original_accept(self, *args)
        taken.append(out is not None)
        return out

    Lane.accept = accept  # type: ignore[method-assign]
    if not on:
        Lane.match = lambda self, method, path: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        Lane.match, Lane.accept = original_match, original_accept  # type: ignore[method-assign]


def _answer(r: httpx.Response, sid: str) -> tuple[Any, ...]:
    return (
        r.status_code,
        r.headers.get("content-type"),
        r.headers.get("etag"),
        r.headers.get("allow"),
        r.headers.get("www-authenticate"),
        r.text.replace(sid, "<id>"),
    )


# (what, method, path after the session id, headers beyond the owner's, body, the lane answers)
CASES: list[tuple[str, str, str, dict[str, str] | None, bytes | None, bool]] = [
    ("a change", "PATCH", "", JSON_TYPE, b'{"attributes": {"label": "x"}}', True),
    ("metadata", "PATCH", "", JSON_TYPE, b'{"metadata": {"a": [1, 2.5, null]}}', True),
    ("no content type", "PATCH", "", {}, b'{"attributes": {"label": "y"}}', False),
    (
        "+json",
        "PATCH",
        "",
        {"Content-Type": "application/merge-patch+json"},
        b'{"metadata": {}}',
        True,
    ),
    ("If-Match", "PATCH", "", {**JSON_TYPE, "If-Match": '"1"'}, b'{"metadata": {"v": 1}}', True),
    ("weak If-Match", "PATCH", "", {**JSON_TYPE, "If-Match": 'W/"1"'}, b'{"metadata": {}}', True),
    ("If-Match *", "PATCH", "", {**JSON_TYPE, "If-Match": "*"}, b'{"metadata": {}}', True),
    ("stale If-Match", "PATCH", "", {**JSON_TYPE, "If-Match": '"7"'}, b'{"metadata": {}}', True),
    ("nothing to change", "PATCH", "", JSON_TYPE, b"{}", True),
    ("a 64-bit overflow", "PATCH", "", JSON_TYPE, b'{"metadata": {"n": 1e300}}', False),
    ("bad If-Match", "PATCH", "", {**JSON_TYPE, "If-Match": "three"}, b'{"metadata": {}}', False),
    ("not JSON", "PATCH", "", JSON_TYPE, b'{"attributes": ', False),
    ("no body", "PATCH", "", JSON_TYPE, b"", False),
    ("not an object", "PATCH", "", JSON_TYPE, b"[1, 2]", False),
    ("an unknown field", "PATCH", "", JSON_TYPE, b'{"state": "ended"}', False),
    ("a lone surrogate", "PATCH", "", JSON_TYPE, b'{"metadata": {"a": "\\ud800"}}', False),
    ("not UTF-8", "PATCH", "", JSON_TYPE, b'{"metadata": {"a": "\xff"}}', False),
    ("text/plain", "PATCH", "", {"Content-Type": "text/plain"}, b'{"metadata": {}}', False),
    ("no credentials", "PATCH", "", {"Authorization": ""}, b'{"metadata": {}}', False),
    ("a bad token", "PATCH", "", {"Authorization": "Bearer a.b.c"}, b'{"metadata": {}}', False),
    ("someone else's", "PATCH", "", {**JSON_TYPE, "X-As": "bob"}, b'{"metadata": {}}', True),
    ("an action", "POST", "/actions/end", None, None, True),
    ("an action with detail", "POST", "/actions/end", JSON_TYPE, b'{"detail": "done"}', True),
    ("an unknown action", "POST", "/actions/fly", None, None, True),
    ("a role's action", "POST", "/actions/drop", None, None, True),
    ("an action, If-Match", "POST", "/actions/end", {"If-Match": '"2"'}, None, True),
    ("an action, bad body", "POST", "/actions/end", JSON_TYPE, b'{"detail": 3}', False),
    ("an action, null", "POST", "/actions/end", JSON_TYPE, b"null", False),
    ("a heartbeat", "POST", "/heartbeat", None, None, True),
    ("a heartbeat with a body", "POST", "/heartbeat", JSON_TYPE, b'{"x": 1}', True),
    ("a heartbeat, no credentials", "POST", "/heartbeat", {"Authorization": ""}, None, False),
    ("someone else's heartbeat", "POST", "/heartbeat", {"X-As": "bob"}, None, True),
]


def case_headers(
    owner: dict[str, str], extra: dict[str, str] | None, other: dict[str, str]
) -> dict[str, str]:
    """A case's request headers: the owner's credentials with the case's own on top;
    ``X-As`` swaps in ``other``'s credentials, an empty ``Authorization`` sends none."""
    headers = {**owner, **(extra or {})}
    if headers.pop("X-As", None):
        headers.update(other)
    if headers.get("Authorization") == "":
        del headers["Authorization"]
    return headers


def counted(metrics: str, labels: str, n: int) -> bool:
    """Whether ``/metrics`` text counts ``n`` requests with ``labels``."""
    return any(
        line.startswith("sessionhub_http_requests_total{")
        and labels in line
        and line.endswith(f" {float(n)}")
        for line in metrics.splitlines()
    )


@pytest.mark.parametrize(
    ("method", "tail", "extra", "body", "lane_answers"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
async def test_the_lane_answers_as_fastapi_does(
    client: httpx.AsyncClient,
    auth: Auth,
    method: str,
    tail: str,
    extra: dict[str, str] | None,
    body: bytes | None,
    lane_answers: bool,
) -> None:
    answers = []
    for on in (True, False):
        owner = auth("alice")
        s = await create(client, owner)
        sid = str(s["id"])
        headers = case_headers(owner, extra, auth("bob"))
        taken: list[bool] = []
        with lane(on, taken):
            r = await client.request(
                method, f"/api/sessions/{sid}{tail}", headers=headers, content=body
            )
        if on:
            assert taken == [lane_answers], "the lane took (or left) a request it should not"
        answers.append(_answer(r, sid))
    assert answers[0] == answers[1]
    assert answers[0][0] != 500


async def test_a_path_beside_the_lane_is_fastapis(client: httpx.AsyncClient, auth: Auth) -> None:
    """Paths near the hot ones (a trailing slash, an empty id, another method) are routed by
    FastAPI: 404/405 with its Allow, never a lane's guess."""
    s = await create(client, auth("alice"))
    taken: list[bool] = []
    with lane(True, taken):
        for method, path in [
            ("PATCH", f"/api/sessions/{s['id']}/"),
            ("PATCH", "/api/sessions/"),
            ("PUT", f"/api/sessions/{s['id']}/heartbeat"),
            ("POST", f"/api/sessions/{s['id']}/actions/"),
            ("POST", f"/api/sessions/{s['id']}/actions/end/now"),
        ]:
            r = await client.request(method, path, headers=auth("alice"), json={})
            assert r.status_code in (404, 405, 307), (method, path, r.status_code)
    assert taken == []


async def test_lane_requests_are_counted_under_their_route(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    s = await create(client, auth("alice"))
    for _ in range(3):
        r = await client.patch(
            f"/api/sessions/{s['id']}", json={"metadata": {}}, headers=auth("alice")
        )
        assert r.status_code == 200
    await client.post(f"/api/sessions/{s['id']}/heartbeat", headers=auth("alice"))
    text = (await client.get("/metrics")).text
    patch = 'method="PATCH",route="/api/sessions/{session_id}",status="200"'
    assert counted(text, patch, 3), text
    assert 'route="/api/sessions/{session_id}/heartbeat",status="200"' in text


async def test_a_failing_backend_is_a_503_on_the_lane(
    client: httpx.AsyncClient, auth: Auth, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = await create(client, auth("alice"))
    runtime = client._transport.app.state.runtime  # type: ignore[attr-defined]

    async def down(*_: object, **__: object) -> None:
        raise OSError("connection refused")

    monkeypatch.setattr(runtime.hub, "update", down)
    taken: list[bool] = []
    with lane(True, taken):
        r = await client.patch(
            f"/api/sessions/{s['id']}", json={"metadata": {}}, headers=auth("alice")
        )
    assert taken == [True]
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.headers["content-type"] == "application/problem+json"


async def test_a_bug_on_the_lane_is_a_logged_500_problem(
    client: httpx.AsyncClient,
    auth: Auth,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = await create(client, auth("alice"))
    runtime = client._transport.app.state.runtime  # type: ignore[attr-defined]

    async def broken(*_: object, **__: object) -> None:
        raise KeyError("oops")

    monkeypatch.setattr(runtime.hub, "heartbeat", broken)
    r = await client.post(f"/api/sessions/{s['id']}/heartbeat", headers=auth("alice"))
    assert r.status_code == 500 and r.json()["title"] == "Internal error"
    assert "oops" not in r.text
    assert any("unhandled error on POST" in rec.getMessage() for rec in caplog.records)


async def test_of_two_credentials_the_first_counts_as_in_fastapi(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    """Starlette reads the first of repeated headers, even an empty one: so does the lane
    (a valid token second must not let the request through)."""
    s = await create(client, auth("alice"))
    good = auth("alice")["Authorization"]
    taken: list[bool] = []
    with lane(True, taken):
        r = await client.patch(
            f"/api/sessions/{s['id']}",
            content=b'{"metadata": {}}',
            headers=[
                ("content-type", "application/json"),
                ("authorization", ""),
                ("authorization", good),
            ],
        )
    assert taken == [False]
    assert r.status_code == 401
