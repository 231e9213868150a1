"""What the Redis broker and the Redis presence share: a bounded connection pool, one
bounded call (tried once more after a broken connection where that is harmless), Lua
scripts by EVALSHA with an EVAL fallback, and the error a caller sees.

Presence may not import the broker's code (docs/architecture.md), and both talk to Redis
the same way, so this is a leaf both import: it knows Redis and ``core.errors``, nothing
of topics or leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from .core.errors import Unavailable

T = TypeVar("T")


def redis_pool(
    url: str,
    *,
    name: str,
    socket_timeout: float,
    socket_connect_timeout: float,
    health_check_interval: float,
    max_connections: int,
) -> BlockingConnectionPool:
    """A bounded pool for ``url`` (``redis://``, ``rediss://`` or ``unix://``, with db and
    password): calls wait at most ``socket_timeout`` for a free connection, and no call is
    retried by redis-py (a publish or a script that timed out may have run: the caller
    decides whether running it twice is harmless)."""
    return BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=socket_timeout,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
        health_check_interval=health_check_interval,
        retry=Retry(NoBackoff(), 0),
        client_name=name,
        decode_responses=False,
    )


async def forget_idle(pool: BlockingConnectionPool) -> None:
    """Close the pool's idle connections (they reconnect when next used). Called when one
    connection broke: after a Redis restart every pooled connection is dead, and each would
    otherwise fail one call of its own before being replaced."""
    with contextlib.suppress(Exception):
        await pool.disconnect(inuse_connections=False)


def describe(pool: BlockingConnectionPool) -> str:
    """Where the pool connects to, for error messages (never the password)."""
    kw = pool.connection_kwargs
    if "path" in kw:
        return f"unix:{kw['path']}"
    return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


class Calls:
    """Calls on one pool, each bounded by ``timeout`` seconds; ``Unavailable`` when Redis
    does not answer."""

    def __init__(self, pool: BlockingConnectionPool, timeout: float) -> None:
        self.pool = pool
        self.timeout = timeout
        self.where = describe(pool)

    async def __call__(
        self, what: str, make: Callable[[], Awaitable[T]], *, idempotent: bool = False
    ) -> T:
        """Run ``make()``. One that may run twice without harm (``idempotent``) is tried
        once more after a broken connection, most likely one Redis closed as it restarted."""
        for attempt in (1, 2):
            try:
                return await asyncio.wait_for(make(), self.timeout)
            except RedisConnectionError as exc:
                await forget_idle(self.pool)
                if idempotent and attempt == 1:
                    continue
                raise self.unavailable(what, exc) from exc
            except (RedisError, OSError) as exc:  # TimeoutError is an OSError
                raise self.unavailable(what, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def unavailable(self, what: str, exc: BaseException) -> Unavailable:
        return Unavailable(
            f"Redis at {self.where} is unavailable ({what}: {exc or type(exc).__name__})"
        )


class Script:
    """A Lua script run by EVALSHA, and by EVAL when Redis does not know it (NOSCRIPT: after
    a restart or SCRIPT FLUSH). EVAL also caches it again, so the fallback costs one extra
    round trip once, and a call is one round trip otherwise.

    Not redis-py's ``register_script``: its fallback is SCRIPT LOAD plus a second EVALSHA.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, client: Redis, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)
