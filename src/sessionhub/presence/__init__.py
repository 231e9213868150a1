"""Presence: who follows a topic, as leases that lapse when their node stops renewing them."""

from .base import Presence, PresenceListener
from .memory import MemoryPresence


def open_presence(url: str) -> Presence:
    """The presence service for ``url``: ``memory://`` (one node) or ``redis://`` (many;
    ``rediss://`` is TLS, and the URL may name a db and password)."""
    if url.startswith("memory:"):
        return MemoryPresence()
    if url.startswith(("redis://", "rediss://", "unix://")):
        # Imported here: redis is an optional extra, needed only by those who use it.
        try:
            from .redis import RedisPresence
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise ValueError(
                "Redis presence needs the redis extra: pip install 'sessionhub[redis]'"
            ) from exc
        return RedisPresence(url)
    raise ValueError(f"unsupported presence URL {url!r} (use memory:// or redis://)")


__all__ = ["MemoryPresence", "Presence", "PresenceListener", "open_presence"]
