"""A sessionhub cluster for tests: three real ``sessionhub serve`` processes (``tests/
processes.py``) on one PostgreSQL database and one Redis, behind a real nginx configured by
``deploy/nginx/`` - the same pieces ``deploy/cluster.sh`` starts.

Starting is synchronous (so a fixture of any scope can do it); what tests await is async.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tests.processes import SECRET, Server, free_port

from sessionhub.auth import Authenticator

from .services import Nginx

NAMES = ("node-a", "node-b", "node-c")
_AUTH = Authenticator(secret=SECRET)


def token(sub: str, *roles: str) -> str:
    return _AUTH.issue(sub, list(roles))


def bearer(sub: str, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, *roles)}"}


async def until(
    check: Callable[[], bool | Awaitable[bool]], *, within: float = 10.0, what: str = "it"
) -> float:
    """Wait (bounded) until ``check()`` holds; returns the seconds it took."""
    start = time.monotonic()
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > within:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> ``{'name{labels}': value}`` (labels as written)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[key] = float(value)
    return out


# -- databases on the machine's PostgreSQL -----------------------------------------------------


async def create_database(admin_url: str, name: str) -> str:
    """Create (empty) database ``name`` on the server of ``admin_url``; its URL."""
    import asyncpg
    from sqlalchemy.engine import make_url

    base = make_url(admin_url)
    dsn = base.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return base.set(database=name).render_as_string(hide_password=False)


async def drop_database(url: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    target = make_url(url)
    dsn = target.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
    finally:
        await conn.close()


async def pg_fetchval(url: str, query: str) -> Any:
    """One value from the cluster's database (what the nodes stored, read directly)."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"), timeout=5)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


# -- the cluster -------------------------------------------------------------------------------


def wait_ready(server: Server, within: float = 30.0) -> None:
    """Until the node answers ``/api/ready`` (synchronous twin of ``Server.wait_ready``)."""
    end = time.monotonic() + within
    with httpx.Client(base_url=server.url) as c:
        while time.monotonic() < end:
            if server.proc.poll() is not None:
                raise AssertionError(f"node exited early:\n{server.log()[-5000:]}")
            with contextlib.suppress(httpx.TransportError):
                if c.get("/api/ready", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
    raise AssertionError(f"node not ready in {within} s:\n{server.log()[-5000:]}")


@dataclass
class Cluster:
    """Three nodes and nginx. ``nodes[i]`` is None while node ``i`` is down."""

    workdir: Path
    database_url: str
    redis_url: str
    #: SESSIONHUB_* settings every node gets (besides database, broker, id and secret).
    env: dict[str, str]
    #: Per node, a Redis URL to use instead of ``redis_url`` (a proxy a test can cut).
    redis_urls: dict[int, str] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    nodes: list[Server | None] = field(default_factory=list)
    nginx: Nginx | None = None
    _runs: dict[int, int] = field(default_factory=dict)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, *, staggered: bool = False) -> Cluster:
        """Start the nodes (``staggered``: node 0 alone first, so it takes every lease) and
        nginx in front of them."""
        self.ports = [free_port() for _ in NAMES]
        self.nginx = Nginx(self.workdir / "nginx", self.ports)
        self.nodes = [None] * len(NAMES)
        try:
            if staggered:
                self.launch(0)
                wait_ready(self._node(0))
                for i in range(1, len(NAMES)):
                    self.launch(i)
            else:
                for i in range(len(NAMES)):
                    self.launch(i)
            for server in self.nodes:
                assert server is not None
                wait_ready(server)
            self.nginx.start()
        except BaseException:
            self.stop()
            raise
        return self

    def launch(self, i: int) -> Server:
        """Start node ``i`` (again, after a kill: same port, data dir and node id)."""
        assert self.nginx is not None
        run = self._runs[i] = self._runs.get(i, 0) + 1
        env = {
            "SESSIONHUB_BROKER_URL": self.redis_urls.get(i, self.redis_url),
            "SESSIONHUB_NODE_ID": NAMES[i],
            "SESSIONHUB_PUBLIC_URL": self.nginx.url,
            "SESSIONHUB_LOG_LEVEL": "info",
            **self.env,
        }
        server = Server(
            self.workdir / NAMES[i],
            self.database_url,
            self.workdir / f"{NAMES[i]}-{run}.log",
            env=env,
            port=self.ports[i],
        )
        self.nodes[i] = server
        return server

    def kill(self, i: int) -> None:
        """SIGKILL node ``i``: no shutdown step runs (leases, presence, outbox stay as
        they were)."""
        self._node(i).kill()
        self._node(i).stop()  # closes its log file; the process is gone already
        self.nodes[i] = None

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for server in self.nodes:
            if server is not None:
                server.stop()

    def logs(self) -> str:
        """Every node log of this cluster, for a failing assertion's message."""
        out = []
        for path in sorted(self.workdir.glob("node-*.log")):
            out.append(f"==== {path.name}\n" + path.read_text(errors="replace")[-4000:])
        if self.nginx is not None:
            out.append("==== nginx\n" + self.nginx.errors())
        return "\n".join(out)

    # -- addresses -------------------------------------------------------------------------

    def _node(self, i: int) -> Server:
        server = self.nodes[i]
        assert server is not None, f"node {i} is down"
        return server

    @property
    def url(self) -> str:
        """The load balancer: what users are given."""
        assert self.nginx is not None
        return self.nginx.url

    def node_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def ws(self, i: int | None, path: str = "/connection/websocket") -> str:
        """A WebSocket URL of node ``i``, or of the load balancer for None."""
        base = self.url if i is None else self.node_url(i)
        return "ws" + base.removeprefix("http") + path

    def live(self) -> list[int]:
        return [i for i, s in enumerate(self.nodes) if s is not None]

    # -- what the nodes say ----------------------------------------------------------------

    async def metrics(self, i: int) -> dict[str, float]:
        async with httpx.AsyncClient(base_url=self.node_url(i), timeout=5) as c:
            r = await c.get("/metrics")
            r.raise_for_status()
            return parse_metrics(r.text)

    async def leaders(self, role: str) -> list[int]:
        """The live nodes whose ``sessionhub_leader{role}`` gauge is 1."""
        out = []
        for i in self.live():
            with contextlib.suppress(httpx.HTTPError):
                if (await self.metrics(i)).get(f'sessionhub_leader{{role="{role}"}}') == 1.0:
                    out.append(i)
        return out

    async def health(self, base: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=base, timeout=5) as c:
            r = await c.get("/api/health")
            r.raise_for_status()
            body: dict[str, Any] = r.json()
            return body


def cluster_env(**overrides: str) -> dict[str, str]:
    """Settings for test clusters: sweeps every second (a dead node's unpublished events are
    found quickly), short leases, and whatever the test adds."""
    env = {
        "SESSIONHUB_SWEEP_INTERVAL": "1",
        "SESSIONHUB_LEADER_LEASE_SECONDS": "2",
        "SESSIONHUB_PING_INTERVAL": "2",
    }
    env.update(overrides)
    return env
