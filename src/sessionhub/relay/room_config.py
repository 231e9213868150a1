"""Limits and timers of rooms and their data channels, and the per-connection rate bucket."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..settings import load_section

ENV_PREFIX = "SESSIONHUB_ROOMS_"
#: Types the upstream server consumes without relaying them.
SILENT = frozenset({"code-channel:sub", "dev-log", "logout:broadcast:subscribe"})
#: World pieces one player may be in at once (bounds the replica: a piece's entry is at
#: most one message, ``max_message`` bytes).
MAX_PIECES = 4


@dataclass(slots=True)
class RoomConfig:
    """Limits and timers of rooms and their data channels; each is
    ``SESSIONHUB_ROOMS_<NAME>`` in the environment, or ``Settings.extra["rooms_<name>"]``."""

    #: Require a token (``?token=`` or ``Authorization``) on room sockets and data channels.
    require_token: bool = False
    #: Largest frame a client may send (bytes); larger ones close the socket with 1009.
    max_message: int = 16 * 1024
    #: Messages per second per connection (sustained) and the burst above it.
    rate: float = 40.0
    burst: int = 80
    #: Messages dropped within one second that count as a flood (close 3013).
    flood: int = 200
    #: Distinct rooms one address may be in at once, on one node (beyond: close 3504).
    rooms_per_address: int = 16
    #: Seconds between server pings; a client that answers none is closed (3012).
    ping_interval: float = 15.0
    #: Seconds a dropped ``@handle`` stays a ghost before it is kicked.
    ghost_seconds: float = 5.0
    #: Seconds an empty room's session lives on: sets the ``room`` kind's idle timeout
    #: (0: keep the kind's, 60 s unless ``SESSIONHUB_KIND_TIMEOUTS`` says otherwise).
    grace: float = 0.0
    #: Seconds between writes of the room sessions' counts.
    flush_interval: float = 2.0
    #: Frames a client may send before it has joined (the upstream client queues them).
    pending: int = 256
    #: Seconds a node waits for the other nodes' world entries when it starts a room.
    sync_wait: float = 0.5
    #: Data channels: largest datagram (bytes), rate and burst per peer.
    max_datagram: int = 8192
    datagram_rate: float = 60.0
    datagram_burst: int = 120
    #: Data-channel peers on one node, and per address.
    max_peers: int = 512
    peers_per_address: int = 16
    #: Addresses ICE gathers host candidates on (comma-separated); empty: the machine's
    #: addresses and 127.0.0.1.
    ice_addresses: str = ""
    #: Seconds a peer may take to answer and connect before it is closed.
    answer_timeout: float = 30.0

    @classmethod
    def load(cls, env: Mapping[str, str], extra: Mapping[str, Any]) -> RoomConfig:
        cfg = load_section(cls(), env, extra, env_prefix=ENV_PREFIX, extra_prefix="rooms_")
        for name in ("ping_interval", "flush_interval", "rate", "datagram_rate"):
            if getattr(cfg, name) <= 0:
                raise ValueError(f"{ENV_PREFIX}{name.upper()} must be positive")
        if cfg.grace < 0:
            raise ValueError(f"{ENV_PREFIX}GRACE must not be negative")
        return cfg


class Bucket:
    """A token bucket (``rate`` per second, ``burst`` deep) that also counts what it refused
    in the current one-second window, so a flood can be told from a burst."""

    __slots__ = ("at", "burst", "dropped", "rate", "tokens", "window_at", "window_drops")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, float(max(burst, 1))
        self.tokens, self.at = self.burst, now
        self.dropped = 0
        self.window_at, self.window_drops = now, 0

    def take(self, now: float) -> bool:
        """Whether one message may pass now (else it is counted as dropped)."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.dropped += 1
        if now - self.window_at >= 1.0:
            self.window_at, self.window_drops = now, 0
        self.window_drops += 1
        return False
