"""The HTTP lane (``server/httplane.py``): the hot routes answered by ``sessionhub serve``'s
HTTP protocol before ASGI, over real sockets, exactly as FastAPI answers them.

Each case of ``test_fastlane.py`` is sent twice to a live server: once as it runs (the
protocol takes what it can) and once with the lane switched off at both layers (FastAPI's
routing, dependencies and exception handlers). The answers must match, and the protocol
must have written the answer itself exactly where the lane claims the request. Then what
a protocol owes its clients whichever layer answers: keep-alive, pipelined requests
answered in order, HTTP/1.0 and ``Connection: close``, chunked and ``Expect: 100-continue``
bodies, a body over the limit, a body in pieces, a client that leaves mid-body, and the
request counted and logged as any other.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from live import LiveServer, make_settings
from sessionhub.server import httplane
from sessionhub.server.fastlane import Lane
from test_fastlane import CASES, _answer, case_headers, counted


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(make_settings(tmp_path)).start()
    yield server
    server.stop()


@contextmanager
def protocol_lane(on: bool, written: list[int]) -> Iterator[None]:
    """Switch the lane off (both layers) or leave it on; record each answer the protocol
    wrote itself (its status)."""
    original_match, original_write = Lane.match, httplane.LaneCycle._write

    def write(self: httplane.LaneCycle, response: Any, start: float) -> None:
        written.append(response.status_code)
        original_write(self, response, start)

    httplane.LaneCycle._write = write  # type: ignore[method-assign]
    if not on:
        Lane.match = lambda self, method, path: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        Lane.match, httplane.LaneCycle._write = original_match, original_write  # type: ignore[method-assign]


async def _create(http: httpx.AsyncClient, headers: dict[str, str]) -> str:
    r = await http.post("/api/sessions", json={"kind": "generic"}, headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _new_session(live: LiveServer, headers: dict[str, str]) -> str:
    """A session made over a connection of its own (the test's socket stays fresh)."""
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        return await _create(http, headers)


@pytest.mark.parametrize(
    ("method", "tail", "extra", "body", "lane_answers"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
async def test_the_protocol_answers_as_fastapi_does(
    live: LiveServer,
    method: str,
    tail: str,
    extra: dict[str, str] | None,
    body: bytes | None,
    lane_answers: bool,
) -> None:
    answers = []
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        for on in (True, False):
            owner = live.headers("alice")
            sid = await _create(http, owner)
            headers = case_headers(owner, extra, live.headers("bob"))
            written: list[int] = []
            with protocol_lane(on, written):
                r = await http.request(
                    method, f"/api/sessions/{sid}{tail}", headers=headers, content=body
                )
            if on:
                assert len(written) == int(lane_answers), "the protocol took (or left) it wrongly"
            else:
                assert written == []
            answers.append(_timeless(_answer(r, sid)))
    assert answers[0] == answers[1]
    assert answers[0][0] != 500


def _timeless(answer: tuple[Any, ...]) -> tuple[Any, ...]:
    """The answer with its times blanked: the live server runs on the real clock."""
    body = _TIMES.sub('"<time>"', _DURATION.sub('"duration_seconds":0', answer[-1]))
    return (*answer[:-1], body)


_TIMES = re.compile(r'"\d{4}-\d\d-\d\dT[\d:.]+Z"')
_DURATION = re.compile(r'"duration_seconds":\s*[\d.e-]+')


# -- raw HTTP/1.1 on one socket -----------------------------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", 0))), 10)
    return status, headers, body


def _request(method: str, target: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: test"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method in ("PATCH", "POST"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _open(live: LiveServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", live.port)


async def _version(live: LiveServer, sid: str) -> int:
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        r = await http.get(f"/api/sessions/{sid}", headers=live.headers("alice"))
        return int(r.json()["version"])


async def test_pipelined_requests_are_answered_in_order_on_one_connection(
    live: LiveServer,
) -> None:
    auth = live.headers("alice")
    sid = await _new_session(live, auth)
    json_auth = {**auth, "Content-Type": "application/json"}
    written: list[int] = []
    reader, writer = await _open(live)
    with protocol_lane(True, written):
        # A lane change, a FastAPI read, a lane heartbeat, a change the lane leaves to
        # FastAPI (422), a lane action: written at once, answered one by one, in order.
        writer.write(
            _request("PATCH", f"/api/sessions/{sid}", json_auth, b'{"metadata": {"n": 1}}')
            + _request("GET", f"/api/sessions/{sid}", auth)
            + _request("POST", f"/api/sessions/{sid}/heartbeat", auth)
            + _request("PATCH", f"/api/sessions/{sid}", json_auth, b'{"state": "x"}')
            + _request("POST", f"/api/sessions/{sid}/actions/end", auth)
        )
        answers = [await _read_response(reader) for _ in range(5)]
        # Still open, still answering.
        writer.write(_request("POST", f"/api/sessions/{sid}/heartbeat", auth))
        late = await _read_response(reader)
    writer.close()
    assert [a[0] for a in answers] == [200, 200, 200, 422, 200]
    assert b'"version":2' in answers[0][2].replace(b" ", b"")
    assert b'"n":1' in answers[1][2].replace(b" ", b"")
    assert answers[4][1]["etag"] == '"3"' and late[0] == 409  # ended: no more heartbeats
    assert written == [200, 200, 200, 409]  # the lane wrote its own four, FastAPI the rest


async def test_heartbeats_answered_at_once_keep_their_order_and_the_connection(
    live: LiveServer,
) -> None:
    """A heartbeat for a session the node knows is answered inside the protocol's own
    callback (no task): pipelined behind it, a change and another heartbeat still come
    back in order, and the connection stays open past the keep-alive timer it re-armed."""
    auth = live.headers("alice")
    sid = await _new_session(live, auth)
    json_auth = {**auth, "Content-Type": "application/json"}
    beat = _request("POST", f"/api/sessions/{sid}/heartbeat", auth)
    written: list[int] = []
    reader, writer = await _open(live)
    with protocol_lane(True, written):
        writer.write(
            beat
            + _request("PATCH", f"/api/sessions/{sid}", json_auth, b'{"metadata": {"n": 2}}')
            + beat
            + _request("GET", f"/api/sessions/{sid}", auth)
        )
        answers = [await _read_response(reader) for _ in range(4)]
    writer.close()
    assert [a[0] for a in answers] == [200, 200, 200, 200]
    assert b"last_activity_at" in answers[0][2] and b'"version":2' in answers[1][2]
    assert b"last_activity_at" in answers[2][2] and b'"n":2' in answers[3][2]
    assert written == [200, 200, 200]


async def test_a_heartbeat_for_a_known_session_runs_no_task(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answered inside the parser's callback; a change still runs as a task."""
    auth = live.headers("alice")
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        sid = await _create(http, auth)
        tasks: list[str] = []
        original = httplane.LaneCycle.run_asgi

        async def run_asgi(self: httplane.LaneCycle, app: Any) -> None:
            tasks.append(self.scope["path"])
            await original(self, app)

        monkeypatch.setattr(httplane.LaneCycle, "run_asgi", run_asgi)
        r = await http.post(f"/api/sessions/{sid}/heartbeat", headers=auth, content=b"{}")
        assert r.status_code == 200 and tasks == []
        r = await http.patch(f"/api/sessions/{sid}", headers=auth, json={"metadata": {}})
        assert r.status_code == 200 and tasks == [f"/api/sessions/{sid}"]


@pytest.mark.parametrize(
    ("version", "connection"),
    [("HTTP/1.0", None), ("HTTP/1.1", "close")],
    ids=["HTTP/1.0", "Connection: close"],
)
async def test_a_connection_that_asks_to_close_is_closed_after_its_answer(
    live: LiveServer, version: str, connection: str | None
) -> None:
    auth = live.headers("alice")
    sid = await _new_session(live, auth)
    extra = {"Connection": connection} if connection else {}
    raw = _request("POST", f"/api/sessions/{sid}/heartbeat", {**auth, **extra})
    written: list[int] = []
    reader, writer = await _open(live)
    with protocol_lane(True, written):
        writer.write(raw.replace(b"HTTP/1.1", version.encode(), 1))
        status, headers, _ = await _read_response(reader)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
    writer.close()
    assert status == 200 and headers["connection"] == "close" and written == [200]


async def test_bodies_the_lane_does_not_frame_itself_are_fastapis(live: LiveServer) -> None:
    """Chunked and 100-continue bodies, and a body over the limit, take uvicorn's path:
    answered right, never by the protocol's lane."""
    auth = {**live.headers("alice"), "Content-Type": "application/json"}
    sid = await _new_session(live, auth)
    body = b'{"metadata": {"chunked": true}}'
    chunked = (
        f"PATCH /api/sessions/{sid} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in auth.items())
        + "\r\n"
    ).encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    expect = _request(
        "PATCH", f"/api/sessions/{sid}", {**auth, "Expect": "100-continue"}, b'{"metadata": {}}'
    )
    limit = live.runtime.settings.max_body_bytes
    huge = _request("PATCH", f"/api/sessions/{sid}", auth, b" " * (limit + 1))
    written: list[int] = []
    reader, writer = await _open(live)
    with protocol_lane(True, written):
        writer.write(chunked)
        first = await _read_response(reader)
        writer.write(expect)
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(
            b"HTTP/1.1 100"
        )
        second = await _read_response(reader)
        writer.write(huge)
        third = await _read_response(reader)
    writer.close()
    assert (first[0], second[0], third[0]) == (200, 200, 413)
    assert third[1]["content-type"] == "application/problem+json"
    assert written == []


async def test_a_body_in_pieces_is_waited_for(live: LiveServer) -> None:
    auth = {**live.headers("alice"), "Content-Type": "application/json"}
    sid = await _new_session(live, auth)
    raw = _request("PATCH", f"/api/sessions/{sid}", auth, b'{"metadata": {"slow": "yes"}}')
    written: list[int] = []
    reader, writer = await _open(live)
    with protocol_lane(True, written):
        cut = raw.index(b"\r\n\r\n") + 10
        writer.write(raw[:cut])
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(raw[cut:])
        status, _, answer = await _read_response(reader)
    writer.close()
    assert status == 200 and b"slow" in answer and written == [200]


async def test_a_client_that_leaves_mid_body_changes_nothing(live: LiveServer) -> None:
    auth = {**live.headers("alice"), "Content-Type": "application/json"}
    sid = await _new_session(live, auth)
    raw = _request("PATCH", f"/api/sessions/{sid}", auth, b'{"metadata": {"left": 1}}')
    written: list[int] = []
    with protocol_lane(True, written):
        _, writer = await _open(live)
        writer.write(raw[:-5])
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()
        await asyncio.sleep(0.2)
    assert written == []
    assert await _version(live, sid) == 1  # nothing was changed, the server still answers


async def test_lane_answers_are_counted_and_logged_under_their_route(
    live: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    auth = live.headers("alice")
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        sid = await _create(http, auth)
        written: list[int] = []
        with protocol_lane(True, written), caplog.at_level(logging.DEBUG, "sessionhub.http"):
            for _ in range(3):
                r = await http.post(f"/api/sessions/{sid}/heartbeat", headers=auth)
                assert r.status_code == 200
        with protocol_lane(True, written), caplog.at_level(logging.INFO, "sessionhub.http"):
            r = await http.post(f"/api/sessions/{sid}/heartbeat", headers=auth)
            assert r.status_code == 200
            r = await http.post("/api/sessions/nope/heartbeat", headers=auth)
            assert r.status_code == 404
        assert written == [200, 200, 200, 200, 404]
        text = (await http.get("/metrics")).text
    route = 'method="POST",route="/api/sessions/{session_id}/heartbeat",status="200"'
    assert counted(text, route, 4), text
    logged = [
        (r.levelno, r.fields)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "sessionhub.http"
        and getattr(r, "fields", {}).get("path", "").endswith("heartbeat")
    ]
    # A heartbeat answered 200 is a debug line (observe.QUIET_ROUTES); a failed one is info.
    assert [(level, f["status"]) for level, f in logged] == [(logging.DEBUG, 200)] * 3 + [
        (logging.INFO, 404)
    ]
    first = logged[0][1]
    assert first["status"] == 200 and first["user"] == "alice"
    assert first["method"] == "POST" and first["duration_ms"] >= 0
