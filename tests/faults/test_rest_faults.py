"""The REST findings of issue 13, each as the probe reproduced it, on a real server.

* 20 concurrent ``PATCH``es of one session without ``If-Match`` all apply (no 409 the client
  never asked for); with a stale ``If-Match`` it is a 412.
* An ``Idempotency-Key`` repeats its first answer for the same body (200) and is a 422 for
  another one.
* What the schema promised and the server did differently: a 404 on an operation that did
  not list it, 405 without ``Allow``, schema-valid bodies refused, and a body that made the
  server fail (a 64-bit overflow in the idempotency fingerprint: a 500).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.live import LiveServer, make_settings

pytestmark = pytest.mark.slow


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(make_settings(tmp_path)).start()
    try:
        yield server
    finally:
        server.stop()


async def test_concurrent_patches_without_if_match_all_apply(live: LiveServer) -> None:
    h = live.headers("alice")
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(base_url=live.url, headers=h, limits=limits, timeout=10) as c:
        sid = (await c.post("/api/sessions", json={})).json()["id"]
        answers = await asyncio.gather(
            *(c.patch(f"/api/sessions/{sid}", json={"metadata": {"n": i}}) for i in range(20))
        )
        assert [r.status_code for r in answers] == [200] * 20, [r.text for r in answers]
        assert sorted(r.json()["version"] for r in answers) == list(range(2, 22))
        events = (await c.get(f"/api/sessions/{sid}/events", params={"limit": 100})).json()
        assert [e["version"] for e in events["items"]] == list(range(1, 22))
        # Optimistic concurrency only when asked for: a stale version is a 412.
        r = await c.patch(
            f"/api/sessions/{sid}", json={"metadata": {}}, headers={"If-Match": '"3"'}
        )
        assert r.status_code == 412 and r.json()["current"]["version"] == 21


async def test_idempotency_keys(live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live.url, headers=live.headers("alice")) as c:
        key = {"Idempotency-Key": "k-13"}
        first = await c.post("/api/sessions", json={"metadata": {"a": 1}}, headers=key)
        again = await c.post("/api/sessions", json={"metadata": {"a": 1}}, headers=key)
        other = await c.post("/api/sessions", json={"metadata": {"a": 2}}, headers=key)
        assert (first.status_code, again.status_code, other.status_code) == (201, 200, 422)
        assert again.json()["id"] == first.json()["id"]
        assert other.headers["content-type"] == "application/problem+json"
        # A body the fingerprint could not encode was a 500; it is a 422 naming the field.
        big = await c.post(
            "/api/sessions", json={"metadata": {"n": 2**70}}, headers={"Idempotency-Key": "k2"}
        )
        assert big.status_code == 422 and "metadata" in big.json()["detail"], big.text
        empty = await c.post("/api/sessions", json={}, headers={"Idempotency-Key": ""})
        assert empty.status_code == 422


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"metadata": {"n": 1e300}}', "±"),  # a float JSON Schema cannot tell from an int
        (b'{"metadata": {"s": "\\ud800"}}', "Unicode"),  # a lone surrogate: no encoder writes it
        (b'{"attributes": {"label": "x"}, "owner": "a\\u0000"}', "NUL"),
    ],
)
async def test_bodies_the_encoders_cannot_carry_are_422(
    live: LiveServer, body: bytes, why: str
) -> None:
    headers = {**live.headers("root", "admin"), "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=live.url, headers=headers) as c:
        r = await c.post("/api/sessions", content=body)
        assert r.status_code == 422, r.text
        assert why in r.json()["detail"], r.text


async def test_what_the_probe_found_in_the_schema(live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live.url, headers=live.headers("root", "admin")) as c:
        doc = (await c.get("/openapi.json")).json()
        paths = doc["paths"]
        # POST /api/sessions/0/activity: 404, and the operation lists it.
        r = await c.post("/api/sessions/0/activity")
        assert (
            r.status_code == 404
            and "404" in paths["/api/sessions/{session_id}/activity"]["post"]["responses"]
        )
        # problem+json answers are documented as such.
        content = paths["/api/sessions/{session_id}"]["get"]["responses"]["404"]["content"]
        assert list(content) == ["application/problem+json"]
        # TRACE: 405 with Allow naming every method of the path.
        r = await c.request("TRACE", "/api/sessions")
        assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
        # PATCH {} is refused, and the schema says at least one of the two fields is needed.
        patch = paths["/api/sessions/{session_id}"]["patch"]["requestBody"]["content"]
        schema = doc["components"]["schemas"]["PatchSession"]
        assert "anyOf" in schema, patch
        sid = (await c.post("/api/sessions", json={})).json()["id"]
        assert (await c.patch(f"/api/sessions/{sid}", json={})).status_code == 422
        # A cursor of the documented form is a position (an empty page), never a 422.
        cursor = paths["/api/sessions"]["get"]["parameters"]
        pattern = next(p for p in cursor if p["name"] == "cursor")["schema"]["pattern"]
        assert pattern.startswith("^[0-9]")
        r = await c.get("/api/sessions", params={"cursor": "0000000000000000.ses_0"})
        assert r.status_code == 200 and r.json()["items"] == []
        assert (await c.get("/api/sessions", params={"cursor": "0" * 64})).status_code == 422
        # {"kind": ""} is no kind the schema offers, and the server refuses it.
        kinds = [
            v["properties"]["kind"]["const"]
            for v in paths["/api/sessions"]["post"]["requestBody"]["content"]["application/json"][
                "schema"
            ]["anyOf"]
        ]
        assert "" not in kinds and "generic" in kinds
        assert (await c.post("/api/sessions", json={"kind": ""})).status_code == 422
        # ?kind=false&state=false: "false" is no state, so it is refused.
        r = await c.get("/api/sessions/count", params={"kind": "false", "state": "false"})
        assert r.status_code == 422


async def test_kept_alive_requests_do_not_wait_for_delayed_acks(live: LiveServer) -> None:
    """The harness runs uvicorn on the standard asyncio loop, as a server without uvloop
    does: without TCP_NODELAY on the connection, each request on a kept-alive connection
    waited ~40 ms for the client's delayed ACK."""
    async with httpx.AsyncClient(base_url=live.url) as c:
        await c.get("/api/health")
        times = []
        for _ in range(20):
            started = time.perf_counter()
            assert (await c.get("/api/health")).status_code == 200
            times.append(time.perf_counter() - started)
    assert statistics.median(times) < 0.02, times
