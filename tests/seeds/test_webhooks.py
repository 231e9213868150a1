"""Webhooks to a real local receiver: signed, unique ids, retried with backoff, never blocking."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import update

from conftest import SECRET, FakeClock
from sessionhub.consumers.webhooks import (
    ATTEMPT_HEADER,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    WebhookConfig,
    WebhookDispatcher,
    sign,
    verify,
)
from sessionhub.server.app import create_app
from sessionhub.server.runtime import Runtime, build_runtime
from sessionhub.settings import Settings
from sessionhub.store.schema import events

Auth = Callable[..., dict[str, str]]
HOOK_SECRET = "hook-secret-for-tests"


class Receiver:
    """A minimal HTTP/1.1 server on 127.0.0.1 that checks signatures like a real receiver.

    ``statuses`` are answered in order (then 200); with ``hold`` set it keeps each request
    open until the event is set."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.requests: list[tuple[dict[str, str], bytes, bool]] = []
        self.hold: asyncio.Event | None = None
        self.url = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._server is not None:
            self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            headers = {}
            for line in head.split("\r\n")[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            valid = verify(HOOK_SECRET.encode(), body, headers.get(SIGNATURE_HEADER.lower()))
            self.requests.append((headers, body, valid))
            if self.hold is not None:
                await self.hold.wait()
            status = self.statuses.pop(0) if self.statuses else 200
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        finally:
            writer.close()


async def eventually(check: Callable[[], Any], what: str, *, tries: int = 500) -> None:
    """Poll ``check`` (sync or async) every 10 ms, at most ``tries`` times."""
    for _ in range(tries):
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.close()


def hook_settings(tmp_path: Path, receiver: Receiver, **extra: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        jwt_secret=SECRET,
        sweep_interval=3600.0,
        extra={
            "webhook_urls": receiver.url,
            "webhook_secret": HOOK_SECRET,
            "webhook_backoff": 1.0,
            "webhook_max_attempts": 3,
            "webhook_poll": 3600.0,  # only woken by new deliveries; retries are run by hand
            **extra,
        },
    )


@pytest.fixture
def settings(tmp_path: Path, receiver: Receiver) -> Settings:
    return hook_settings(tmp_path, receiver)


def _dispatcher(runtime: Runtime) -> WebhookDispatcher:
    webhooks: WebhookDispatcher = runtime.webhooks
    return webhooks


async def _deliveries(client: httpx.AsyncClient, auth: Auth) -> list[dict[str, Any]]:
    r = await client.get("/api/webhooks/deliveries", headers=auth("root", "admin"))
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["deliveries"]
    return items


async def test_signed_delivery_is_retried_after_a_500_with_backoff(
    client: httpx.AsyncClient, auth: Auth, clock: FakeClock, runtime: Runtime, receiver: Receiver
) -> None:
    receiver.statuses = [500, 200]
    user = auth("user")
    sid = (await client.post("/api/remote/start", json={}, headers=user)).json()["session_id"]

    async def first_failed() -> bool:
        rows = await _deliveries(client, auth)
        return bool(rows) and rows[0]["last_error"] == "HTTP 500"

    await eventually(first_failed, "the first attempt to fail")
    dispatcher = _dispatcher(runtime)
    assert await dispatcher.run_once() == 0  # backing off: not due yet
    clock.advance(0.9)
    assert await dispatcher.run_once() == 0
    clock.advance(0.1)
    assert await dispatcher.run_once() == 1
    [row] = await _deliveries(client, auth)
    assert row["status"] == "delivered" and row["attempts"] == 2

    assert len(receiver.requests) == 2
    (h1, b1, ok1), (h2, b2, ok2) = receiver.requests
    assert ok1 and ok2, "signatures must verify with the shared secret"
    assert h1[SIGNATURE_HEADER.lower()] == sign(HOOK_SECRET.encode(), b1)
    assert h1[EVENT_ID_HEADER.lower()] == h2[EVENT_ID_HEADER.lower()]
    assert (h1[ATTEMPT_HEADER.lower()], h2[ATTEMPT_HEADER.lower()]) == ("1", "2")
    assert b1 == b2
    body = orjson.loads(b1)
    listed = (await client.get("/api/notifications", headers=user)).json()["notifications"]
    assert body == {
        "id": listed[0]["id"],
        "event": "remote_session_started",
        "data": listed[0]["data"],
    }
    assert body["data"]["session_id"] == sid
    assert h1[EVENT_ID_HEADER.lower()] == body["id"]

    # An event republished after a crash does not send the webhook again.
    async with _dispatcher(runtime).engine.begin() as conn:
        await conn.execute(update(events).values(published=False))
    await runtime.hub.republish_outbox()
    await client.get("/api/notifications", headers=user)  # drains the notifier
    assert await dispatcher.run_once() == 0
    assert len(await _deliveries(client, auth)) == 1 and len(receiver.requests) == 2


async def test_gives_up_after_max_attempts_with_doubling_delays(
    client: httpx.AsyncClient, auth: Auth, clock: FakeClock, runtime: Runtime, receiver: Receiver
) -> None:
    receiver.statuses = [500, 503, 500, 200]
    await client.post("/api/screen_share/start", json={}, headers=auth("user"))
    await eventually(lambda: len(receiver.requests) == 1, "the first attempt")

    async def attempts() -> int:
        return int((await _deliveries(client, auth))[0]["attempts"])

    dispatcher = _dispatcher(runtime)
    await eventually(lambda: dispatcher.attempts == 1, "the first attempt to be recorded")
    clock.advance(1)
    assert await dispatcher.run_once() == 1  # attempt 2 after 1 s
    clock.advance(1)
    assert await dispatcher.run_once() == 0  # attempt 3 waits 2 s
    clock.advance(1)
    assert await dispatcher.run_once() == 1
    assert await attempts() == 3
    [row] = await _deliveries(client, auth)
    assert row["status"] == "failed" and row["last_error"] == "HTTP 500"
    clock.advance(3600)
    assert await dispatcher.run_once() == 0
    assert len(receiver.requests) == 3


async def test_a_slow_receiver_never_blocks_the_request(
    client: httpx.AsyncClient, auth: Auth, runtime: Runtime, receiver: Receiver
) -> None:
    receiver.hold = asyncio.Event()  # the receiver keeps every request open until released
    user = auth("user")
    r = await client.post("/api/remote/start", json={}, headers=user)
    assert r.status_code == 200
    await eventually(lambda: len(receiver.requests) == 1, "the webhook to arrive")
    # The request has returned while its webhook is still in flight, unanswered.
    [row] = await _deliveries(client, auth)
    assert row["attempts"] == 1 and row["status"] == "pending" and row["last_error"] is None
    r = await client.post(f"/api/remote/stop/{r.json()['session_id']}", headers=user)
    assert r.status_code == 200
    receiver.hold.set()

    async def all_delivered() -> bool:
        rows = await _deliveries(client, auth)
        return len(rows) == 2 and all(x["status"] == "delivered" for x in rows)

    await eventually(all_delivered, "both deliveries")


async def test_background_worker_retries_on_a_real_clock(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.statuses = [500, 500, 200]
    settings = hook_settings(
        tmp_path, receiver, webhook_backoff=0.02, webhook_poll=0.02, webhook_max_attempts=5
    )
    runtime = build_runtime(settings)
    app = create_app(runtime=runtime)
    headers = {"Authorization": f"Bearer {runtime.auth.issue('user')}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await client.post("/api/screen_share/start", json={}, headers=headers)
            await eventually(lambda: len(receiver.requests) == 3, "three attempts", tries=1000)
            dispatcher = _dispatcher(runtime)
            await eventually(lambda: dispatcher.delivered == 1, "the delivery to be recorded")
    attempts = [h[ATTEMPT_HEADER.lower()] for h, _, _ in receiver.requests]
    assert attempts == ["1", "2", "3"]
    assert len({h[EVENT_ID_HEADER.lower()] for h, _, _ in receiver.requests}) == 1
    assert all(ok for _, _, ok in receiver.requests)


def test_config_from_the_environment(tmp_path: Path) -> None:
    env = {
        "SESSIONHUB_WEBHOOK_URLS": "http://a.example/h, https://b.example/h",
        "SESSIONHUB_WEBHOOK_MAX_ATTEMPTS": "4",
        "SESSIONHUB_WEBHOOK_BACKOFF": "0.5",
    }
    config = WebhookConfig.load(env=env, data_dir=tmp_path)
    assert config.urls == ("http://a.example/h", "https://b.example/h")
    assert config.max_attempts == 4
    assert [config.delay(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    # No secret configured: one is generated into the data directory and kept.
    assert config.secret and (tmp_path / "webhook-secret").exists()
    assert WebhookConfig.load(env=env, data_dir=tmp_path).secret == config.secret
    with pytest.raises(ValueError, match="http"):
        WebhookConfig.load(env={"SESSIONHUB_WEBHOOK_URLS": "ftp://x"}, data_dir=tmp_path)
    assert WebhookConfig.load(env={}, data_dir=tmp_path).urls == ()
    body = b'{"id":"1"}'
    assert verify(b"k", body, sign(b"k", body))
    assert not verify(b"k", body + b" ", sign(b"k", body))
    assert not verify(b"other", body, sign(b"k", body))
