"""Server settings: defaults, ``SESSIONHUB_*`` environment variables, then CLI flags."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

ENV_PREFIX = "SESSIONHUB_"


@dataclass(slots=True)
class Settings:
    """Everything the server can be told. Each field is also ``SESSIONHUB_<NAME>``."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("data")
    #: Default: ``sqlite+aiosqlite:///<data_dir>/sessionhub.db``.
    database_url: str = ""
    broker_url: str = "memory://"
    #: HS256 secret; default: generated into ``<data_dir>/jwt-secret`` on first start.
    jwt_secret: str = ""
    #: RS256 public key (PEM text or a path to a PEM file) to verify tokens from elsewhere.
    jwt_public_key: str = ""
    #: ``name:key[:role+role],...``
    api_keys: str = ""
    #: Fernet keys, comma-separated, newest first: session metadata is encrypted at rest.
    encryption_keys: str = ""
    #: The URL printed in the sign-in link and the room lookup's answers (default
    #: http://host:port, https:// with TLS).
    public_url: str = ""
    #: TLS for clients that always use ``wss://`` (the Aesthetic Computer client): a PEM
    #: certificate (chain) and its key; both or neither.
    tls_cert: str = ""
    tls_key: str = ""
    #: This node's name among several (leases, metrics). Default: kept in
    #: ``<data_dir>/node-id``, so a node that restarts after a crash takes its leases back
    #: at once instead of waiting for them to lapse.
    node_id: str = ""
    #: Seconds a leadership lease lasts (sweeps, consumers, connectors): another node takes
    #: over within about this long after the leader dies.
    leader_lease_seconds: float = 6.0
    log_level: str = "info"
    #: Seconds between scheduler sweeps (default: a sixth of the shortest timeout, at most 5).
    sweep_interval: float = 0.0
    #: JSON: {"kind": {"heartbeat_timeout": seconds, ...}}
    kind_timeouts: str = ""
    #: Server ping interval on realtime connections, seconds.
    ping_interval: float = 25.0
    #: Bytes queued for one realtime connection before it is disconnected as too slow (3008).
    realtime_queue_bytes: int = 1 << 20
    #: Subscriptions one realtime connection may hold.
    realtime_max_subscriptions: int = 128
    #: Seconds to wait for a client's close frame before dropping the connection.
    realtime_close_timeout: float = 5.0
    #: Topics connected admins may publish to over the WebSocket protocol: comma-separated
    #: fnmatch patterns (``bench:*,chat:*``). None by default: events come from the hub.
    realtime_publish_topics: str = ""
    #: Open sockets and SSE streams one peer address may hold at once (beyond: 429).
    realtime_max_per_address: int = 4096
    #: Publications kept per topic for recovery, and for how long (seconds).
    history_size: int = 1000
    history_ttl: float = 600.0
    #: Largest request body accepted, bytes.
    max_body_bytes: int = 1_048_576
    #: Seconds an idle HTTP keep-alive connection stays open. Longer than clients' and load
    #: balancers' own idle limits (httpx and Node: 5 s, AWS ALB: 60 s), so the server is never
    #: the side that closes a connection a client is about to reuse (a reset request).
    http_keep_alive: float = 75.0
    #: Seconds a request head may take from its first byte to its blank line (beyond: 408);
    #: a client dribbling a head byte by byte cannot hold a connection longer.
    http_head_timeout: float = 10.0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = dict(os.environ if env is None else env)
        s = cls()
        for f in fields(cls):
            if f.name == "extra":
                continue
            name = ENV_PREFIX + f.name.upper()
            raw = env.get(name)
            if raw is not None:
                setattr(s, f.name, _convert(getattr(s, f.name), raw, name))
        for k, v in overrides.items():
            if v is not None:
                setattr(s, k, _convert(getattr(s, k), v, k) if isinstance(v, str) else v)
        return s

    def resolved_database_url(self) -> str:
        return (
            self.database_url or f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'sessionhub.db'}"
        )

    def resolved_node_id(self) -> str:
        if self.node_id:
            return self.node_id
        path = self.data_dir / "node-id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        self.data_dir.mkdir(parents=True, exist_ok=True)
        value = f"node-{secrets.token_hex(4)}"
        path.write_text(value + "\n")
        return value

    def resolved_public_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{host}:{self.port}"

    def timeout_overrides(self) -> dict[str, dict[str, float]]:
        if not self.kind_timeouts:
            return {}
        try:
            value = json.loads(self.kind_timeouts)
        except ValueError:
            raise ValueError("SESSIONHUB_KIND_TIMEOUTS is not valid JSON") from None
        if not isinstance(value, dict) or not all(
            isinstance(v, dict)
            and all(isinstance(n, int | float) and not isinstance(n, bool) for n in v.values())
            for v in value.values()
        ):
            raise ValueError(
                'SESSIONHUB_KIND_TIMEOUTS must be a JSON object like {"generic": '
                '{"heartbeat_timeout": 60}}'
            )
        return value

    def public_key_pem(self) -> str | None:
        if not self.jwt_public_key:
            return None
        if self.jwt_public_key.lstrip().startswith("-----BEGIN"):
            return self.jwt_public_key
        return Path(self.jwt_public_key).read_text()

    def encryption_key_list(self) -> list[str]:
        return [k.strip() for k in self.encryption_keys.split(",") if k.strip()]


T = TypeVar("T")


def load_section(
    config: T,
    env: Mapping[str, str],
    extra: Mapping[str, Any],
    *,
    env_prefix: str,
    extra_prefix: str,
) -> T:
    """Fill a settings dataclass of one feature (``config``, its defaults) from
    ``<env_prefix><NAME>`` environment variables and ``extra["<extra_prefix><name>"]`` (which
    wins: tests and benchmarks set it), converted to each field's type. A value that does
    not convert is a ``ValueError`` naming the variable."""
    for f in fields(config):  # type: ignore[arg-type]
        raw: Any = extra.get(f"{extra_prefix}{f.name}")
        if raw is None:
            raw = env.get(env_prefix + f.name.upper())
        if raw is None:
            continue
        current = getattr(config, f.name)
        try:
            if isinstance(current, bool):
                value: Any = (
                    raw
                    if isinstance(raw, bool)
                    else str(raw).strip().lower() in ("1", "true", "yes", "on")
                )
            elif isinstance(current, int):
                value = int(raw)
            elif isinstance(current, float):
                value = float(raw)
            else:
                value = str(raw)
        except ValueError:
            raise ValueError(f"{env_prefix}{f.name.upper()}: bad value {raw!r}") from None
        setattr(config, f.name, value)
    return config


def _convert(current: Any, raw: str, name: str = "value") -> Any:
    if isinstance(current, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    try:
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
    except ValueError:
        what = "an integer" if isinstance(current, int) else "a number"
        raise ValueError(f"{name} must be {what}, not {raw!r}") from None
    if isinstance(current, Path):
        return Path(raw)
    return raw
