"""A Server-Sent Events reader for ``GET /api/stream``: what a browser's EventSource sees."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import orjson

from .harness import until


class SseReader:
    """Reads one event stream in a task: ``events`` holds ``(event, data, id)`` in order."""

    def __init__(self, base: str, topics: str, token: str, last_event_id: str | None = None):
        self.base = base
        self.params = {"topics": topics, "token": token}
        self.headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        self.events: list[tuple[str, Any, str | None]] = []
        self.status = 0
        self.ended = False
        self._task: asyncio.Task[None] | None = None
        self._opened = asyncio.Event()

    async def start(self) -> SseReader:
        self._task = asyncio.get_running_loop().create_task(self._read())
        await asyncio.wait_for(self._opened.wait(), 10)
        if self.status == 200:
            await until(lambda: self.kinds().count("subscribed") > 0, what="subscribed event")
        return self

    def kinds(self) -> list[str]:
        return [e[0] for e in self.events]

    def pubs(self) -> list[dict[str, Any]]:
        return [d for kind, d, _ in self.events if kind == "pub"]

    @property
    def last_id(self) -> str | None:
        ids = [i for _, _, i in self.events if i]
        return ids[-1] if ids else None

    async def _read(self) -> None:
        timeout = httpx.Timeout(10, read=None)
        try:
            async with (
                httpx.AsyncClient(base_url=self.base, timeout=timeout) as c,
                c.stream("GET", "/api/stream", params=self.params, headers=self.headers) as r,
            ):
                self.status = r.status_code
                self._opened.set()
                if r.status_code != 200:
                    await r.aread()
                    return
                kind, data, ident = "", b"", None
                async for line in r.aiter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        data = line[6:].encode()
                    elif line.startswith("id: "):
                        ident = line[4:]
                    elif line == "" and kind:
                        self.events.append((kind, orjson.loads(data), ident))
                        kind, data, ident = "", b"", None
        except httpx.HTTPError:
            pass  # the stream was cut: ``ended`` says so
        finally:
            self.ended = True
            self._opened.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
