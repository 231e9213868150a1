"""Fixtures of the cluster tests: private Redis (and PostgreSQL) processes, databases on the
machine's PostgreSQL, and clusters of three nodes behind nginx.

Needs ``redis-server``, ``nginx`` and PostgreSQL (the machine's, ``SESSIONHUB_TEST_POSTGRES_
URL``); the PostgreSQL restart test also needs ``initdb``. Without them the tests skip with
the reason, or fail under ``SESSIONHUB_REQUIRE_SERVICES=1``.

Redis is always a private ``redis-server``: the nodes use sessionhub's default key prefix and
pub/sub channels are shared by every database of a server, so nodes on the machine's Redis
would hear other test runs' servers.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tests.conftest import POSTGRES_URL, service_unavailable

from .harness import Cluster, cluster_env, create_database, drop_database
from .services import PostgresServer, RedisServer, missing_tools

_names = itertools.count()
T = TypeVar("T")


def _tools(*tools: str) -> None:
    why = missing_tools(*tools)
    if why is not None:
        service_unavailable("cluster tools", why)


def _blocking(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to its end from synchronous code, even when that code is called from
    a running event loop (``make_cluster`` inside an async test): in a thread of its own."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(asyncio.wait_for(make(), 15))).result()


def _database() -> str:
    """A new empty database on the machine's PostgreSQL, for one cluster."""
    name = f"sessionhub_cluster_{os.getpid()}_{next(_names)}"
    try:
        return _blocking(lambda: create_database(POSTGRES_URL, name))
    except Exception as exc:
        service_unavailable("PostgreSQL", f"{type(exc).__name__}: {exc}")
        raise


def _drop(url: str) -> None:
    try:
        _blocking(lambda: drop_database(url))
    except Exception as exc:  # a database left behind must not fail the run
        print(f"note: could not drop {url}: {exc}")


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster shared by the tests that leave it as they found it (no kills, no
    restarts): private Redis, a database of its own, three nodes, nginx."""
    _tools()
    work = tmp_path_factory.mktemp("cluster")
    database = _database()
    redis = RedisServer(work / "redis").start()
    made = Cluster(work, database, redis.url, cluster_env())
    try:
        made.start()
        yield made
    finally:
        made.stop()
        redis.stop()
        _drop(database)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis the test may stop and start again (same port)."""
    _tools("redis-server")
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL the test may stop and start again (same port)."""
    why = PostgresServer.available()
    if why is not None:
        service_unavailable("a private PostgreSQL", why)
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Awaitable[Cluster]]]:
    """``await make_cluster(redis_url, database_url=None, staggered=False, redis_urls={},
    **env)``: a cluster of the test's own (a new database on the machine's PostgreSQL unless
    one is given), stopped afterwards. Started in a thread: the test's event loop keeps
    running meanwhile (a proxy on it may stand between a node and Redis)."""
    _tools()
    made: list[Cluster] = []
    databases: list[str] = []

    async def make(
        redis_url: str,
        database_url: str | None = None,
        *,
        staggered: bool = False,
        redis_urls: dict[int, str] | None = None,
        **env: str,
    ) -> Cluster:
        if database_url is None:
            database_url = await asyncio.to_thread(_database)
            databases.append(database_url)
        c = Cluster(
            tmp_path / f"cluster-{len(made)}",
            database_url,
            redis_url,
            cluster_env(**env),
            redis_urls=dict(redis_urls or {}),
        )
        made.append(c)
        return await asyncio.to_thread(c.start, staggered=staggered)

    yield make
    for c in made:
        c.stop()
    for url in databases:
        _drop(url)
