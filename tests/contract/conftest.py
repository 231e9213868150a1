"""Fixtures of the contract suites that need Redis (``SESSIONHUB_TEST_REDIS_URL``, db 15).

Sync on purpose: the parametrised suites ask for them with ``getfixturevalue``.

Each test names its keys and channels with a prefix of its own (``redis_prefix``) and deletes
them afterwards, instead of flushing the database: pub/sub channels are shared by every
database of a server, and other test runs may use the same server at the same time (a
FLUSHDB of theirs in the middle of one of ours, or the reverse, made both flaky). A prefix
no one else uses is a clean Redis for the test; only the test of a flushed Redis flushes.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from tests.conftest import REDIS_URL, service_unavailable


@pytest.fixture
def redis_url() -> str:
    """``SESSIONHUB_TEST_REDIS_URL`` once Redis answers (skips, or fails with
    ``SESSIONHUB_REQUIRE_SERVICES=1``, when it does not)."""
    try:
        import redis
    except ImportError as exc:
        service_unavailable("Redis", f"the redis package is not installed: {exc}")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_unavailable("Redis", f"{type(exc).__name__}: {exc}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key and channel prefix no other test (or test run) uses; its keys are deleted after
    the test."""
    import redis

    prefix = f"test-{secrets.token_hex(6)}"
    yield prefix
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
