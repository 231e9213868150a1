"""Opening a node's backends from its settings: the store, broker and presence chosen by the
schemes of their URLs (``sqlite+aiosqlite:///``, ``postgresql+asyncpg://``, ``memory://``,
``redis://``), and the one-off database commands of the CLI."""

from __future__ import annotations

from .broker import open_broker
from .hub import Clock, Hub, utcnow
from .kinds.registry import default_registry
from .presence import open_presence
from .settings import Settings
from .store import open_store


def open_hub(settings: Settings, *, clock: Clock = utcnow) -> Hub:
    """The hub for ``settings``: store, broker and presence chosen by their URLs' schemes."""
    store = open_store(
        settings.resolved_database_url(), encryption_keys=settings.encryption_key_list()
    )
    broker = open_broker(
        settings.broker_url, history_size=settings.history_size, history_ttl=settings.history_ttl
    )
    kinds = default_registry(settings.timeout_overrides())
    return Hub(store, broker, kinds, presence=open_presence(settings.broker_url), clock=clock)


async def migrate(settings: Settings) -> None:
    """Open the store (applying migrations) and close it again."""
    store = open_store(
        settings.resolved_database_url(), encryption_keys=settings.encryption_key_list()
    )
    try:
        await store.start()
    finally:
        await store.close()


async def rotate_keys(settings: Settings) -> int:
    """Re-encrypt every sealed value with the newest key; returns the rows rewritten."""
    store = open_store(
        settings.resolved_database_url(), encryption_keys=settings.encryption_key_list()
    )
    try:
        await store.start()
        return await store.rotate_keys()
    finally:
        await store.close()
