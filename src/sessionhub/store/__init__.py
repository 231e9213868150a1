"""Durable storage of sessions and their events (the event table is the outbox), and the
side tables of the services above the hub. Backends are chosen by URL scheme."""

from collections.abc import Sequence

from .base import Page, SessionQuery, Store
from .sealing import Sealer

__all__ = ["Page", "SessionQuery", "Store", "open_store"]


def open_store(url: str, *, encryption_keys: Sequence[str] = ()) -> Store:
    """The store for ``url``: ``sqlite+aiosqlite:///path`` (embedded, the default) or
    ``postgresql+asyncpg://...`` (many nodes; the ``postgres`` extra); without the driver
    (``sqlite:``, ``postgresql:``) these drivers are meant. ``ValueError`` for any other
    scheme."""
    scheme, _, rest = url.partition(":")
    sealer = Sealer(encryption_keys)
    if scheme in ("sqlite", "sqlite+aiosqlite"):
        from .sqlite import SqliteStore

        return SqliteStore(f"sqlite+aiosqlite:{rest}", sealer=sealer)
    if scheme in ("postgresql", "postgresql+asyncpg"):
        # Imported only here: asyncpg is an optional extra.
        from .postgres import PostgresStore

        return PostgresStore(f"postgresql+asyncpg:{rest}", sealer=sealer)
    raise ValueError(
        f"unsupported database URL {url!r} (use sqlite+aiosqlite:/// or postgresql+asyncpg://)"
    )
