"""Builds the running pieces (store, broker, hub, scheduler, auth) from settings."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..auth import Authenticator, load_or_create_secret, parse_api_keys
from ..hub import Hub, open_hub, utcnow
from ..scheduler import Scheduler
from ..settings import Settings

log = logging.getLogger("sessionhub")


@dataclass
class Runtime:
    """Everything one server process runs; transports reach the hub through it."""

    settings: Settings
    hub: Hub
    scheduler: Scheduler
    auth: Authenticator
    secret_created: bool = False
    #: Extra objects that adapters attach (relay, notifier, ...), by name.
    services: dict[str, Any] = field(default_factory=dict)
    #: Async callables run at start / close, in order (close in reverse).
    on_start: list[Callable[[], Any]] = field(default_factory=list)
    on_close: list[Callable[[], Any]] = field(default_factory=list)

    async def start(self) -> None:
        await self.hub.start()
        for fn in self.on_start:
            await fn()
        self.scheduler.start()

    async def close(self) -> None:
        await self.scheduler.stop()
        for fn in reversed(self.on_close):
            try:
                await fn()
            except Exception:
                log.exception("shutdown step failed")
        await self.hub.close()


def build_runtime(settings: Settings, *, clock: Callable[[], datetime] = utcnow) -> Runtime:
    """Wire the store, broker, hub, scheduler and authenticator for ``settings``."""
    created = False
    secret = settings.jwt_secret
    public_key = settings.public_key_pem()
    if not secret and not public_key:
        secret, created = load_or_create_secret(settings.data_dir)
    auth = Authenticator(
        secret=secret or None, public_key=public_key, api_keys=parse_api_keys(settings.api_keys)
    )
    hub = open_hub(settings, clock=clock)
    scheduler = Scheduler(hub, interval=settings.sweep_interval or None)
    return Runtime(
        settings=settings, hub=hub, scheduler=scheduler, auth=auth, secret_created=created
    )
