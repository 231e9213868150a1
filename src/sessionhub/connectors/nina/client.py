"""Talking to one rig's NINA Advanced API: the history seed, the live socket, guider polls.

The socket is followed forever. Each connection first seeds from the event history (and
the image history, for image statistics) and only then reads live frames, so a live image
is never counted before an older one missed while disconnected: frames that arrive during
the seed wait in the socket (TCP flow control keeps them). Any failure - the rig off, a
restart, a cut network, a frame over the size limit - closes the socket and retries after
a capped exponential backoff with jitter; the connector itself never stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import httpx
import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from ...core.model import JSON
from .config import NinaConfig, RigConfig
from .health import RigStatus
from .normalize import BadInput, image_items

log = logging.getLogger("sessionhub.nina")

#: A connection that lasted this long resets the backoff (seconds); a rig that accepts and
#: drops at once keeps backing off.
STABLE_AFTER = 10.0


class Sink(Protocol):
    """Where a rig client delivers what it reads (the service's rig runner)."""

    def clock(self) -> datetime: ...

    async def seed(self, history: Any, images: list[JSON], at: datetime) -> None:
        """History fetched: queue it ahead of any frame of this connection."""

    async def frame(self, data: str | bytes, at: datetime) -> None: ...

    async def guider(self, body: Any, at: datetime) -> None: ...

    def guiding(self) -> bool:
        """Whether the rig is guiding (poll the guider only then)."""

    def changed(self) -> None:
        """The connection state changed (wakes whoever waits on it)."""


class Backoff:
    """Capped exponential delays with "equal jitter": half fixed, half random."""

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.cap = cap
        self.rng = rng or random.Random()
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.initial * 2.0 ** min(self.attempt, 30))
        self.attempt += 1
        return delay / 2 + self.rng.uniform(0, delay / 2)

    def reset(self) -> None:
        self.attempt = 0


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


class RigClient:
    """HTTP requests to one rig and the loop that follows its socket."""

    def __init__(
        self,
        rig: RigConfig,
        config: NinaConfig,
        sink: Sink,
        status: RigStatus,
        *,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.rig = rig
        self.config = config
        self.sink = sink
        self.status = status
        self.backoff = Backoff(config.backoff_initial, config.backoff_max, rng)
        # No proxies from the environment: a rig is on the local network.
        self.http = httpx.AsyncClient(
            base_url=rig.url, timeout=config.http_timeout, transport=transport, trust_env=False
        )
        self._ws: Any = None

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- HTTP ------------------------------------------------------------------------------

    async def _get(self, path: str, **params: str) -> tuple[int, Any]:
        r = await self.http.get(path, params=params or None)
        try:
            return r.status_code, orjson.loads(r.content)
        except orjson.JSONDecodeError:
            raise BadInput("bad_json", f"{path} answered {r.status_code} with no JSON") from None

    async def history(self) -> Any:
        """``GET /v2/api/event-history`` (the body; ``normalize`` reads it)."""
        status, body = await self._get("/v2/api/event-history")
        if status >= 400:
            raise BadInput("bad_shape", f"event history answered {status}")
        return body

    async def images(self) -> list[JSON]:
        """``GET /v2/api/image-history?all=true``; an empty history is ``[]``."""
        status, body = await self._get("/v2/api/image-history", all="true")
        return image_items(status, body)

    async def guider_info(self) -> Any:
        status, body = await self._get("/v2/api/equipment/guider/info")
        if status >= 400:
            raise BadInput("bad_shape", f"guider info answered {status}")
        return body

    async def fetch_seed(self) -> tuple[Any, list[JSON]]:
        return await self.history(), await self.images()

    # -- the socket ------------------------------------------------------------------------

    async def follow(self) -> None:
        """Follow the socket forever (until cancelled)."""
        while True:
            started = time.monotonic()
            try:
                await self._session()
                self.status.down("closed by the rig", self.sink.clock())
            except asyncio.CancelledError:
                self.status.connected = False
                raise
            except ConnectionClosed as exc:
                sent = exc.sent
                if sent is not None and sent.code == 1009:
                    self.status.bad(
                        "oversized", f"a frame over {self.config.max_frame_bytes} bytes"
                    )
                self.status.down(describe(exc), self.sink.clock())
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI, httpx.HTTPError) as exc:
                self.status.down(describe(exc), self.sink.clock())
            except BadInput as exc:
                self.status.bad(exc.reason, exc.detail)
                self.status.count("seed_errors")
                self.status.down(describe(exc), self.sink.clock())
            except Exception as exc:  # never let one bad surprise end the connector
                log.exception("nina %s: connection failed", self.rig.name)
                self.status.down(describe(exc), self.sink.clock())
            self.sink.changed()
            if time.monotonic() - started >= STABLE_AFTER:
                self.backoff.reset()
            await asyncio.sleep(self.backoff.next())

    async def _session(self) -> None:
        async with connect(
            self.rig.socket_url,
            max_size=self.config.max_frame_bytes,
            open_timeout=self.config.connect_timeout,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=2,
            compression=None,
            proxy=None,
        ) as ws:
            self._ws = ws
            try:
                history, images = await self.fetch_seed()
                await self.sink.seed(history, images, self.sink.clock())
                self.status.up(self.sink.clock())
                self.sink.changed()
                async for message in ws:
                    await self.sink.frame(message, self.sink.clock())
            finally:
                self._ws = None

    async def drop(self) -> None:
        """Close the current socket (the loop reconnects): used after a failed commit, so
        the next seed brings back what could not be stored."""
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    # -- guider polls ----------------------------------------------------------------------

    async def poll_guider(self, sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        """Poll guider info while connected and guiding, every ``guider_poll_interval``."""
        while True:
            await sleep(self.config.guider_poll_interval)
            if not (self.status.connected and self.sink.guiding()):
                continue
            # A reading is as old as the question: an answer that arrives after a
            # GUIDER-STOP must not undo it.
            asked = self.sink.clock()
            try:
                body = await self.guider_info()
            except (httpx.HTTPError, BadInput, OSError) as exc:
                self.status.count("guider_errors")
                log.debug("nina %s: guider poll failed: %s", self.rig.name, describe(exc))
                continue
            self.status.count("guider_polls")
            await self.sink.guider(body, asked)
