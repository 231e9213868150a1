"""Presence: who follows a topic, as leases that lapse when their node stops renewing them."""

from .base import Presence, PresenceListener
from .memory import MemoryPresence


def open_presence(url: str) -> Presence:
    """The presence service for ``url``: ``memory://`` (one node) or ``redis://`` (many)."""
    if url.startswith("memory:"):
        return MemoryPresence()
    if url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("Redis presence is not available in this build yet; use memory://")
    raise ValueError(f"unsupported presence URL {url!r} (use memory:// or redis://)")


__all__ = ["MemoryPresence", "Presence", "PresenceListener", "open_presence"]
