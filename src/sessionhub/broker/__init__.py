"""Fan-out of committed events to topics: offsets, epochs, bounded history."""

from .base import Broker, Listener
from .memory import MemoryBroker

#: URL schemes of the Redis broker (``rediss://`` is TLS; the URL may name a db and password).
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def open_broker(url: str, *, history_size: int = 1000, history_ttl: float = 600.0) -> Broker:
    """The broker for ``url``: ``memory://`` (one node) or ``redis://`` (many nodes)."""
    if url.startswith("memory:"):
        return MemoryBroker(history_size=history_size, history_ttl=history_ttl)
    if url.startswith(REDIS_SCHEMES):
        # Imported here: redis is an optional extra, needed only by those who use it.
        try:
            from .redis import RedisBroker
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise ValueError(
                "the Redis broker needs the redis extra: pip install 'sessionhub[redis]'"
            ) from exc
        return RedisBroker(url, history_size=history_size, history_ttl=history_ttl)
    raise ValueError(f"unsupported broker URL {url!r} (use memory:// or redis://)")


__all__ = ["Broker", "Listener", "MemoryBroker", "open_broker"]
