"""Fan-out of committed events to topics: offsets, epochs, bounded history."""

from .base import Broker, Listener
from .memory import MemoryBroker


def open_broker(url: str, *, history_size: int = 1000, history_ttl: float = 600.0) -> Broker:
    """The broker for ``url``: ``memory://`` (one node) or ``redis://`` (many nodes)."""
    if url.startswith("memory:"):
        return MemoryBroker(history_size=history_size, history_ttl=history_ttl)
    if url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("the Redis broker is not available in this build yet; use memory://")
    raise ValueError(f"unsupported broker URL {url!r} (use memory:// or redis://)")


__all__ = ["Broker", "Listener", "MemoryBroker", "open_broker"]
