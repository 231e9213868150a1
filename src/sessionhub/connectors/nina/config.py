"""Settings of the NINA connector: ``SESSIONHUB_NINA_*`` in the environment, or
``Settings.extra["nina_<name>"]`` (which wins), as ``KatoConfig`` reads its own."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ENV_PREFIX = "SESSIONHUB_NINA_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class RigConfig:
    """One rig: its name (the owner of its sessions) and the Advanced API base URL."""

    name: str
    url: str

    @property
    def socket_url(self) -> str:
        """The live event socket, ``ws://host:port/v2/socket``."""
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/v2/socket"

    @property
    def source(self) -> str:
        """The raw-event log's source name and the broker topic of this rig."""
        return f"nina:{self.name}"


def parse_rigs(value: str) -> tuple[RigConfig, ...]:
    """``http://host:1888`` or ``name=http://host:1888,name2=http://other:1888``.

    A bare URL's rig is named after its host; name rigs explicitly for a stable owner."""
    rigs: list[RigConfig] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        name, sep, url = part.partition("=")
        if not sep or "://" in name:
            name, url = "", part
        url = url.strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{ENV_PREFIX}URL: {url!r} is not an http(s) URL")
        name = name.strip() or parts.hostname
        if not _NAME.match(name):
            raise ValueError(f"{ENV_PREFIX}URL: bad rig name {name!r} (letters, digits, _.-)")
        if any(r.name == name for r in rigs):
            raise ValueError(f"{ENV_PREFIX}URL: rig {name!r} is named twice")
        rigs.append(RigConfig(name, url))
    return tuple(rigs)


def local_zone() -> tzinfo:
    """The server's time zone: ``TZ``, else ``/etc/localtime``'s zone, else its fixed offset."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text().strip())
    try:
        target = str(Path("/etc/localtime").resolve())
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for name in candidates:
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    from datetime import datetime

    zone = datetime.now().astimezone().tzinfo
    assert zone is not None
    return zone


def zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{ENV_PREFIX}TIMEZONE: unknown IANA time zone {name!r}") from None


@dataclass(slots=True)
class NinaConfig:
    """Every setting of the connector; each is ``SESSIONHUB_NINA_<NAME>``."""

    #: ``http://host:1888`` or ``name=url,name2=url2``. Empty: the connector is off.
    url: str = ""
    #: IANA zone of the rig, for its naive local times (default: the server's zone).
    timezone: str = ""
    #: Seconds without any rig event before a night ends (``idle_timeout``). 0: the
    #: ``imaging`` kind's own timeout (8 h, or SESSIONHUB_KIND_TIMEOUTS).
    idle_timeout: float = 0.0
    #: Seconds between guider polls while the rig guides (RMS is not on the socket).
    guider_poll_interval: float = 10.0
    #: Smallest change of guiding RMS (arcseconds) worth a write.
    rms_min_delta: float = 0.05
    #: Raw events kept per rig in the store (0: keep none).
    raw_retention: int = 50_000
    #: Largest socket frame accepted, bytes (larger ones are counted and the socket reopened).
    max_frame_bytes: int = 1 << 20
    #: Reconnect backoff: first delay and cap, seconds (exponential, with jitter).
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    #: Seconds allowed for opening the socket and for each HTTP request.
    connect_timeout: float = 10.0
    http_timeout: float = 15.0
    #: Seconds within which a history item and a live event of the same type and fields are
    #: taken as the same event (the live one is stamped on receipt). Also the clock skew
    #: between rig and server that a reconnect tolerates.
    dedupe_window: float = 2.0
    #: Live events processed together in one commit at most (under load).
    batch_max: int = 500
    #: Seconds between ``heartbeat`` messages on ``/ws/unified``.
    heartbeat_interval: float = 20.0
    #: Serve ``GET /api/nina/session-state`` and ``/ws/unified`` read-only without a token.
    allow_anonymous: bool = False
    rigs: tuple[RigConfig, ...] = field(default=())
    tz: tzinfo | None = None

    @classmethod
    def load(cls, env: Mapping[str, str], extra: Mapping[str, Any]) -> NinaConfig | None:
        """The configuration, or None when no rig URL is set."""
        cfg = cls()
        for f in fields(cls):
            if f.name in ("rigs", "tz"):
                continue
            raw: Any = extra.get(f"nina_{f.name}")
            if raw is None:
                raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            setattr(cfg, f.name, _convert(getattr(cfg, f.name), raw, f.name))
        if not cfg.url.strip():
            return None
        cfg.rigs = parse_rigs(cfg.url)
        if not cfg.rigs:
            return None
        cfg.tz = zone(cfg.timezone) if cfg.timezone else local_zone()
        cfg.check()
        return cfg

    def check(self) -> None:
        positive = ("guider_poll_interval", "backoff_initial", "backoff_max", "connect_timeout")
        for name in (*positive, "http_timeout", "dedupe_window", "heartbeat_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{ENV_PREFIX}{name.upper()} must be positive")
        if self.backoff_max < self.backoff_initial:
            raise ValueError(f"{ENV_PREFIX}BACKOFF_MAX must be at least BACKOFF_INITIAL")
        if self.raw_retention < 0 or self.idle_timeout < 0 or self.rms_min_delta < 0:
            raise ValueError(f"{ENV_PREFIX}RAW_RETENTION/IDLE_TIMEOUT/RMS_MIN_DELTA >= 0")
        if self.max_frame_bytes < 1024 or self.batch_max < 1:
            raise ValueError(f"{ENV_PREFIX}MAX_FRAME_BYTES >= 1024 and BATCH_MAX >= 1")

    @property
    def zone(self) -> tzinfo:
        return self.tz if self.tz is not None else local_zone()

    def rig(self, name: str) -> RigConfig | None:
        return next((r for r in self.rigs if r.name == name), None)


def _convert(current: Any, raw: Any, name: str) -> Any:
    try:
        if isinstance(current, bool):
            return raw if isinstance(raw, bool) else str(raw).strip().lower() in _TRUE
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{ENV_PREFIX}{name.upper()}: bad value {raw!r}") from None
    return str(raw)


_TRUE = ("1", "true", "yes", "on")
