"""Consumers after a crash: a real ``sessionhub serve`` is SIGKILLed between two events, with
notifications and webhook deliveries of the events before it still in flight, and started
again on the same data. Every notification is stored exactly once, and every webhook is
delivered (answered 2xx) exactly once: the notifier's position moves in the transaction
that stores its effects, so the restart resumes where the crash stopped it.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
import pytest
from tests.processes import SECRET, Server

from sessionhub.auth import Authenticator

pytestmark = pytest.mark.slow

EVENTS = 24  # remote sessions started; each makes one notification and one webhook


class Receiver:
    """A webhook receiver. While closed it holds every request unanswered (a receiver that
    is down from the sender's point of view); once open it answers 200 and counts."""

    def __init__(self) -> None:
        self.open = False
        self.answered: list[str] = []
        self.held = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            head = await reader.readuntil(b"\r\n\r\n")
            headers = dict(
                line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line
            )
            await reader.readexactly(int(headers.get("Content-Length", "0")))
            if not self.open:
                self.held += 1
                await reader.read()  # until the sender goes away (it is killed)
                return
            self.answered.append(headers["X-Sessionhub-Event-Id"])
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_each_notification_and_webhook_once_across_a_sigkill(
    tmp_path: Path, servers: list[Server]
) -> None:
    receiver = Receiver()
    await receiver.start()
    env = {
        "SESSIONHUB_WEBHOOK_URLS": f"http://127.0.0.1:{receiver.port}/hook",
        "SESSIONHUB_WEBHOOK_TIMEOUT": "1",
        "SESSIONHUB_WEBHOOK_BACKOFF": "0.2",
        "SESSIONHUB_WEBHOOK_POLL": "0.2",
    }
    data = tmp_path / "data"
    user = {"Authorization": f"Bearer {Authenticator(secret=SECRET).issue('user')}"}
    try:
        first = Server(data, None, tmp_path / "first.log", env=env)
        servers.append(first)
        await first.wait_ready()
        async with httpx.AsyncClient(base_url=first.url, headers=user, timeout=10) as c:
            for _ in range(EVENTS // 2):
                r = await c.post("/api/remote/start", json={})
                assert r.status_code == 200, r.text
        first.kill()  # between two events: the last ones' effects may not be stored yet
        assert receiver.answered == []  # nothing could be delivered while it was down

        receiver.open = True
        second = Server(data, None, tmp_path / "second.log", env=env, port=first.port)
        servers.append(second)
        await second.wait_ready()
        async with httpx.AsyncClient(base_url=second.url, headers=user, timeout=10) as c:
            for _ in range(EVENTS - EVENTS // 2):
                assert (await c.post("/api/remote/start", json={})).status_code == 200
            notes: list[dict[str, object]] = []
            for _ in range(300):  # bounded: 30 s
                r = await c.get("/api/notifications", params={"limit": 200})
                notes = r.json()["notifications"]
                if len(notes) >= EVENTS and len(set(receiver.answered)) >= EVENTS:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # longer than a retry: a second delivery would show
    finally:
        await receiver.stop()
    ids = [str(n["id"]) for n in notes]
    assert len(ids) == EVENTS and len(set(ids)) == EVENTS, second.log()
    assert {n["event"] for n in notes} == {"remote_session_started"}
    assert sorted(receiver.answered) == sorted(ids), "each webhook answered 2xx exactly once"
