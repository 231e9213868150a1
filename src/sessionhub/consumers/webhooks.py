"""Webhooks: every notification POSTed, signed, to the configured URLs, retried with backoff.

Deliveries are an outbox in the ``webhook_deliveries`` table: the notifier inserts one row
per (notification, URL) in the transaction that stores the notification, and a background
worker sends due rows with httpx, so the request that caused an event never waits for a
receiver. A row's id is derived from the notification's id and the URL, so replaying an
event (after a crash) never enqueues a second delivery.

Each delivery is ``POST <url>`` with the JSON body ``{"id", "event", "data"}`` and headers:

``X-Sessionhub-Event-Id``     the notification's unique id (the same on every retry: dedupe on it)
``X-Sessionhub-Event``        the event name, e.g. ``remote_session_started``
``X-Sessionhub-Timestamp``    Unix seconds of this attempt
``X-Sessionhub-Attempt``      1 for the first attempt, 2 for the first retry, ...
``X-Sessionhub-Signature``    ``sha256=<hex HMAC-SHA256 of the raw body with the secret>``

A 2xx answer delivers it. Anything else (or no answer within the timeout) is retried after
``backoff * 2**(attempt-1)`` seconds (capped at ``backoff_max``) until ``max_attempts``
attempts, then the row is marked failed. Each attempt first claims the row with a
compare-and-set on ``attempts``, so several nodes can run workers on one database without
sending the same attempt twice (delivery is at-least-once: a receiver dedupes on the id).

Configuration (environment, or ``Settings.extra`` with the lower-case names without prefix):
``SESSIONHUB_WEBHOOK_URLS`` (comma-separated http(s) URLs), ``SESSIONHUB_WEBHOOK_SECRET``
(default: generated into ``<data_dir>/webhook-secret``), ``SESSIONHUB_WEBHOOK_MAX_ATTEMPTS``
(8), ``SESSIONHUB_WEBHOOK_BACKOFF`` (seconds, 2), ``SESSIONHUB_WEBHOOK_BACKOFF_MAX`` (3600),
``SESSIONHUB_WEBHOOK_TIMEOUT`` (seconds per attempt, 10), ``SESSIONHUB_WEBHOOK_POLL``
(seconds between scans for due retries, 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .. import __version__
from ..core.model import JSON, iso
from ..store.base import Delivery, DeliveryRow, DeliveryStatus, Store
from ..tasks import stop

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("sessionhub.webhooks")

SIGNATURE_HEADER = "X-Sessionhub-Signature"
EVENT_ID_HEADER = "X-Sessionhub-Event-Id"
EVENT_HEADER = "X-Sessionhub-Event"
TIMESTAMP_HEADER = "X-Sessionhub-Timestamp"
ATTEMPT_HEADER = "X-Sessionhub-Attempt"


def sign(secret: bytes, body: bytes) -> str:
    """The signature header value: ``sha256=`` + hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    urls: tuple[str, ...] = ()
    secret: bytes = b""
    max_attempts: int = 8
    backoff: float = 2.0
    backoff_max: float = 3600.0
    timeout: float = 10.0
    poll: float = 1.0
    batch: int = 50
    concurrency: int = 8

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.backoff_max, self.backoff * 2 ** max(0, attempt - 1)))

    @classmethod
    def load(
        cls,
        *,
        env: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        data_dir: Path | None = None,
    ) -> WebhookConfig:
        """From ``extra`` (``webhook_urls``, ...) first, then ``SESSIONHUB_WEBHOOK_*``."""
        env = os.environ if env is None else env
        extra = extra or {}

        def get(name: str) -> Any:
            if f"webhook_{name}" in extra:
                return extra[f"webhook_{name}"]
            return env.get(f"SESSIONHUB_WEBHOOK_{name.upper()}")

        raw_urls = get("urls") or ()
        if isinstance(raw_urls, str):
            raw_urls = raw_urls.split(",")
        urls = tuple(u.strip() for u in raw_urls if u and u.strip())
        for u in urls:
            if not u.startswith(("http://", "https://")):
                raise ValueError(f"webhook URL {u!r} must start with http:// or https://")
        secret = get("secret") or ""
        if urls and not secret:
            secret = _load_or_create_secret(data_dir or Path("data"))
        base = cls()

        def num(name: str, default: float) -> float:
            value = get(name)
            return default if value in (None, "") else float(value)

        config = cls(
            urls=urls,
            secret=secret.encode() if isinstance(secret, str) else bytes(secret),
            max_attempts=int(num("max_attempts", base.max_attempts)),
            backoff=num("backoff", base.backoff),
            backoff_max=num("backoff_max", base.backoff_max),
            timeout=num("timeout", base.timeout),
            poll=num("poll", base.poll),
        )
        if config.max_attempts < 1 or config.backoff < 0 or config.timeout <= 0:
            raise ValueError("webhook max_attempts must be >= 1, backoff >= 0, timeout > 0")
        return config


def _load_or_create_secret(data_dir: Path) -> str:
    path = data_dir / "webhook-secret"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    path.write_text(value + "\n")
    path.chmod(0o600)
    log.warning("generated a webhook signing secret in %s", path)
    return value


_STATUSES: dict[str, DeliveryStatus] = {s: s for s in ("pending", "delivered", "failed")}


def delivery_id(event_id: str, url: str) -> str:
    return hashlib.blake2b(f"{event_id}\x1f{url}".encode(), digest_size=16).hexdigest()


class WebhookDispatcher:
    """Enqueues deliveries (rows) and sends them from a background task."""

    def __init__(
        self,
        store: Store,
        config: WebhookConfig,
        *,
        clock: Callable[[], datetime],
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self._client = client
        self._own_client = client is None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.attempts = 0
        self.delivered = 0

    @property
    def enabled(self) -> bool:
        return bool(self.config.urls)

    @property
    def engine(self) -> Any:
        """The store's SQLAlchemy engine, if it has one (diagnostics and tests)."""
        return getattr(self.store, "engine", None)

    def rows_for(self, event_id: str, note: JSON, now: datetime) -> list[DeliveryRow]:
        """The delivery rows for one notification (one per URL), to insert idempotently."""
        body = orjson.dumps({"id": event_id, "event": note["event"], "data": note["data"]})
        return [
            DeliveryRow(
                id=delivery_id(event_id, url),
                url=url,
                body=body.decode(),
                next_attempt_at=now,
                created_at=now,
            )
            for url in self.config.urls
        ]

    def wake(self) -> None:
        """Tell the worker new rows are due (called after they are committed)."""
        self._wake.set()

    def _http(self) -> httpx.AsyncClient:
        # httpx is imported on first use: a node without webhooks does not carry it.
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=self.config.timeout, follow_redirects=False)
        return self._client

    async def start(self) -> None:
        if self.enabled:
            self._http()
            self._task = asyncio.create_task(self._run(), name="sessionhub-webhooks")

    async def close(self) -> None:
        await stop([self._task])
        self._task = None
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("webhook pass failed; will retry")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll)
            self._wake.clear()

    async def run_once(self) -> int:
        """Send every due delivery once (one batch); returns the attempts made."""
        async with self._lock:
            rows = await self.store.due_deliveries(self.clock(), self.config.batch)
            if not rows:
                return 0
            sem = asyncio.Semaphore(self.config.concurrency)

            async def one(row: Delivery) -> bool:
                async with sem:
                    return await self._attempt(row)

            done = await asyncio.gather(*(one(r) for r in rows))
            return sum(1 for d in done if d)

    async def _attempt(self, row: Delivery) -> bool:
        cfg = self.config
        attempt = row.attempts + 1
        now = self.clock()
        # Claim: whoever moves ``attempts`` first sends this attempt; the lease covers the
        # request timeout so a node that dies mid-request is retried later by another.
        lease = now + timedelta(seconds=cfg.timeout + cfg.delay(attempt))
        if not await self.store.claim_delivery(row.id, row.attempts, lease):
            return False
        body = row.body.encode()
        parsed = orjson.loads(body)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"sessionhub-webhooks/{__version__}",
            EVENT_ID_HEADER: str(parsed.get("id", row.id)),
            EVENT_HEADER: str(parsed.get("event", "")),
            TIMESTAMP_HEADER: str(int(now.timestamp())),
            ATTEMPT_HEADER: str(attempt),
            SIGNATURE_HEADER: sign(cfg.secret, body),
        }
        error: str | None = None
        import httpx

        try:
            resp = await self._http().post(
                row.url, content=body, headers=headers, timeout=cfg.timeout
            )
            if not 200 <= resp.status_code < 300:
                error = f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        self.attempts += 1
        done_at = self.clock()
        if error is None:
            await self.store.finish_delivery(row.id, last_error=None, delivered_at=done_at)
            self.delivered += 1
        elif attempt >= cfg.max_attempts:
            log.warning("webhook %s to %s failed for good: %s", row.id, row.url, error)
            await self.store.finish_delivery(row.id, last_error=error, failed_at=done_at)
        else:
            retry_at = done_at + timedelta(seconds=cfg.delay(attempt))
            await self.store.finish_delivery(row.id, last_error=error, retry_at=retry_at)
        return True

    async def deliveries(self, *, limit: int = 50, status: str | None = None) -> list[JSON]:
        """Newest deliveries first, for operators: status pending | delivered | failed
        (any other status: all of them)."""
        chosen = _STATUSES.get(status or "")
        out = []
        for d in await self.store.list_deliveries(limit=limit, status=chosen):
            body = orjson.loads(d.body)
            out.append(
                {
                    "id": d.id,
                    "event_id": body.get("id"),
                    "event": body.get("event"),
                    "url": d.url,
                    "attempts": d.attempts,
                    "status": d.status,
                    "next_attempt_at": iso(d.next_attempt_at),
                    "delivered_at": iso(d.delivered_at),
                    "failed_at": iso(d.failed_at),
                    "last_error": d.last_error,
                    "created_at": iso(d.created_at),
                }
            )
        return out

    async def count_pending(self) -> int:
        return await self.store.count_pending_deliveries()
