"""REST throughput: transitions and heartbeats per second, SQLite and PostgreSQL.

Runs a real ``sessionhub serve`` (uvicorn) as a subprocess and drives it from load
generator *processes* (keep-alive HTTP/1.1, ``--concurrency`` requests in flight). Next to it,
in the same run and under the same load generator, it measures a peer: a minimal plain
FastAPI/uvicorn app that does one ``UPDATE`` of one row per request on the same database
(same driver, same SQLite durability settings). That is the floor of "one durable write per
request"; the ratio column says how sessionhub compares with it.

A sessionhub transition is one durable change: read the session, compare-and-set the row,
append its event (one transaction), publish. A heartbeat is coalesced in memory and written
in batches by the scheduler, so it costs no write per request.

    .venv/bin/python bench/rest.py [--duration 5] [--concurrency 32] [--processes 2]
                                   [--postgres-url postgresql+asyncpg://...] [--no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

SECRET = "bench-secret-0123456789abcdef0123456789"
PEER_ROWS = 1000
DEFAULT_PG = os.environ.get(
    "SESSIONHUB_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/sessionhub_bench"
)


# -- the peer: one UPDATE of one row per request -----------------------------------------------


def peer_app(database_url: str) -> Any:
    """A plain FastAPI app whose one route does exactly one durable write."""
    from fastapi import FastAPI
    from sqlalchemy import event, text
    from sqlalchemy.ext.asyncio import create_async_engine

    sqlite = database_url.startswith("sqlite")
    if sqlite:
        engine = create_async_engine(database_url, connect_args={"timeout": 30})

        def pragmas(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # same durability as sessionhub
            cur.close()

        event.listen(engine.sync_engine, "connect", pragmas)
    else:
        engine = create_async_engine(database_url, pool_size=10, max_overflow=10)
    # SQLite has one writer: queue in-process rather than spin on SQLITE_BUSY (as sessionhub).
    lock = asyncio.Lock() if sqlite else None

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS bench_peer"))
            await conn.execute(
                text("CREATE TABLE bench_peer (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
            )
            await conn.execute(
                text("INSERT INTO bench_peer (id, n) VALUES (:id, 0)"),
                [{"id": i} for i in range(PEER_ROWS)],
            )
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)
    stmt = text("UPDATE bench_peer SET n = n + 1 WHERE id = :id")

    @app.post("/write/{row}")
    async def write(row: int) -> dict[str, bool]:
        if lock is not None:
            async with lock, engine.begin() as conn:
                await conn.execute(stmt, {"id": row})
        else:
            async with engine.begin() as conn:
                await conn.execute(stmt, {"id": row})
        return {"ok": True}

    @app.get("/ready")
    async def ready() -> dict[str, bool]:
        return {"ok": True}

    return app


def serve_peer(database_url: str, port: int) -> None:
    import uvicorn

    uvicorn.run(
        peer_app(database_url), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )


# -- servers as subprocesses -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Proc:
    def __init__(self, argv: list[str], env: dict[str, str], ready_path: str, log: Path) -> None:
        self.port = int(argv[argv.index("--port") + 1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        self.log_path = log
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(self.url + ready_path, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise SystemExit(f"server not ready:\n{log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def start_sessionhub(data_dir: Path, database_url: str | None, log_level: str) -> Proc:
    env = {
        **os.environ,
        "SESSIONHUB_JWT_SECRET": SECRET,
        "SESSIONHUB_LOG_LEVEL": log_level,
        "SESSIONHUB_DATA_DIR": str(data_dir),
    }
    if database_url:
        env["SESSIONHUB_DATABASE_URL"] = database_url
    argv = [sys.executable, "-m", "sessionhub.cli", "serve", "--port", str(free_port())]
    return Proc(argv, env, "/api/ready", data_dir / "server.log")


def start_peer(data_dir: Path, database_url: str) -> Proc:
    argv = [sys.executable, __file__, "--serve-peer", database_url, "--port", str(free_port())]
    return Proc(argv, dict(os.environ), "/ready", data_dir / "peer.log")


# -- load generator processes ----------------------------------------------------------------


@dataclass
class Result:
    count: int = 0
    errors: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)


# Per-process state kept between phases: sessions created, to be transitioned later.
_created: list[str] = []


class RawClient:
    """A minimal HTTP/1.1 keep-alive client: one connection per task, one request at a time.

    The default load generator. httpx spends more CPU per request than the server spends
    on a heartbeat, and the load generator shares the machine's cores with the server, so
    with httpx the bench would mostly measure httpx. ``--client httpx`` uses httpx instead.
    """

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        hostport = base.split("//", 1)[1]
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head = f"Host: {hostport}\r\n{extra}"
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self._conn is None:
            self._conn = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._conn
        ctype = "Content-Type: application/json\r\n" if body else ""
        head = f"{method} {path} HTTP/1.1\r\n{self._head}{ctype}Content-Length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body)
        response = await reader.readuntil(b"\r\n\r\n")
        status = int(response[9:12])
        length = 0
        for line in response.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await reader.readexactly(length)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None


class HttpxClient:
    """The same interface over one shared ``httpx.AsyncClient`` (keep-alive pool)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body else None
        r = await self._client.request(method, path, content=body or None, headers=headers)
        return r.status_code, r.content

    async def close(self) -> None:
        return None


async def _phase(
    base: str, headers: dict[str, str], tasks: int, what: str, seconds: float, client: str
) -> Result:
    res = Result()
    limits = httpx.Limits(max_connections=tasks, max_keepalive_connections=tasks)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as c:
        clients: list[RawClient | HttpxClient] = [
            RawClient(base, headers) if client == "raw" else HttpxClient(c) for _ in range(tasks)
        ]
        live: list[str] = []
        if what == "heartbeat":  # one live session per task, created before the clock starts
            for _ in range(tasks):
                r = await c.post("/api/sessions", json={"kind": "generic"})
                live.append(r.json()["id"])
        start = time.perf_counter()
        end = start + seconds
        create_body = b'{"kind": "generic"}'

        async def one(i: int) -> None:
            rng = random.Random(i)
            http = clients[i]
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                if what == "create":
                    status, body = await http.request("POST", "/api/sessions", create_body)
                elif what == "transition":
                    if not _created:
                        return
                    sid = _created.pop()
                    status, body = await http.request("POST", f"/api/sessions/{sid}/actions/end")
                elif what == "heartbeat":
                    status, body = await http.request("POST", f"/api/sessions/{live[i]}/heartbeat")
                else:
                    status, body = await http.request("POST", f"/write/{rng.randrange(PEER_ROWS)}")
                res.latencies.append(time.perf_counter() - t0)
                if status < 300:
                    res.count += 1
                    if what == "create":
                        _created.append(json.loads(body)["id"])
                else:
                    res.errors += 1

        try:
            await asyncio.gather(*(one(i) for i in range(tasks)))
        finally:
            for http in clients:
                await http.close()
        res.elapsed = time.perf_counter() - start
    return res


def _worker(conn: Connection, base: str, headers: dict[str, str], tasks: int, client: str) -> None:
    while True:
        msg = conn.recv()
        if msg is None:
            return
        what, seconds = msg
        if what == "reset":
            _created.clear()
            conn.send(Result())
            continue
        conn.send(asyncio.run(_phase(base, headers, tasks, what, seconds, client)))


class Load:
    """``processes`` load generators sharing ``concurrency`` requests in flight."""

    def __init__(
        self,
        base: str,
        headers: dict[str, str],
        processes: int,
        concurrency: int,
        client: str = "raw",
    ) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs = []
        per = max(1, concurrency // processes)
        for _ in range(processes):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(child, base, headers, per, client), daemon=True)
            p.start()
            self.pipes.append(parent)
            self.procs.append(p)

    def run(self, what: str, seconds: float) -> Result:
        for pipe in self.pipes:
            pipe.send((what, seconds))
        parts: list[Result] = [pipe.recv() for pipe in self.pipes]
        return Result(
            count=sum(p.count for p in parts),
            errors=sum(p.errors for p in parts),
            elapsed=max(p.elapsed for p in parts),
            latencies=[x for p in parts for x in p.latencies],
        )

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(None)
        for p in self.procs:
            p.join(timeout=10)


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Row:
    backend: str
    what: str
    result: Result

    @property
    def rate(self) -> float:
        return self.result.count / self.result.elapsed if self.result.elapsed else 0.0

    def pct(self, q: float) -> float:
        lat = sorted(self.result.latencies)
        if not lat:
            return 0.0
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000


async def _reset_postgres(url: str) -> None:
    """Create the bench database if needed and empty it (never the test database)."""
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    base, _, dbname = dsn.rpartition("/")
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except asyncpg.InvalidCatalogNameError:
        admin = await asyncpg.connect(base + "/postgres", timeout=5)
        try:
            await admin.execute(f'CREATE DATABASE "{dbname}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()


def bench_backend(
    name: str, database_url: str | None, args: argparse.Namespace, tmp: Path
) -> list[Row]:
    from sessionhub.auth import Authenticator

    rows: list[Row] = []
    data = tmp / name
    data.mkdir()
    if database_url and not database_url.startswith("sqlite"):
        asyncio.run(_reset_postgres(database_url))
    headers = {"Authorization": f"Bearer {Authenticator(secret=SECRET).issue('bench')}"}
    server = start_sessionhub(data, database_url, args.log_level)
    load = Load(server.url, headers, args.processes, args.concurrency, args.client)
    try:
        load.run("create", args.duration)  # sessions for the transition phase (warms up too)
        rows.append(Row(name, "transitions", load.run("transition", args.duration)))
        rows.append(Row(name, "heartbeats", load.run("heartbeat", args.duration)))
    finally:
        load.close()
        server.stop()

    peer_url = database_url or f"sqlite+aiosqlite:///{data / 'peer.db'}"
    if not peer_url.startswith("sqlite"):
        asyncio.run(_reset_postgres(peer_url))
    peer = start_peer(data, peer_url)
    load = Load(peer.url, {}, args.processes, args.concurrency, args.client)
    try:
        load.run("write", min(1.0, args.duration))  # warm-up
        rows.append(Row(name, "peer: 1 UPDATE/request", load.run("write", args.duration)))
    finally:
        load.close()
        peer.stop()
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight in total")
    p.add_argument("--processes", type=int, default=2, help="load generator processes")
    p.add_argument("--postgres-url", default=DEFAULT_PG, help="a database the bench may empty")
    p.add_argument("--no-postgres", action="store_true")
    p.add_argument("--log-level", default="info", help="sessionhub's log level (default info)")
    p.add_argument(
        "--client",
        choices=["raw", "httpx"],
        default="raw",
        help="load generator HTTP client (default: a minimal keep-alive HTTP/1.1 client)",
    )
    p.add_argument("--serve-peer", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_peer:
        serve_peer(args.serve_peer, args.port)
        return 0

    backends: list[tuple[str, str | None]] = [("sqlite", None)]
    if not args.no_postgres:
        try:
            asyncio.run(_reset_postgres(args.postgres_url))
            backends.append(("postgresql", args.postgres_url))
        except Exception as exc:
            print(f"PostgreSQL skipped ({type(exc).__name__}: {exc})", file=sys.stderr)

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="sessionhub-bench-") as tmp:
        for name, url in backends:
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            rows += bench_backend(name, url, args, Path(tmp))

    print()
    print(
        f"sessionhub REST bench: {os.cpu_count()} CPU cores (server, database and load "
        f"generator share them), {args.concurrency} requests in flight from "
        f"{args.processes} processes ({args.client} HTTP/1.1 keep-alive), "
        f"{args.duration:g} s each, log level {args.log_level}"
    )
    print()
    header = f"{'backend':<11} {'operation':<24} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'vs peer':>8}"
    print(header)
    print("-" * len(header))
    for name, _ in backends:
        mine = [r for r in rows if r.backend == name]
        peer = next(r for r in mine if r.what.startswith("peer"))
        for r in mine:
            ratio = r.rate / peer.rate if peer.rate else 0.0
            print(
                f"{r.backend:<11} {r.what:<24} {r.rate:>9.0f} {r.pct(0.5):>8.1f} "
                f"{r.pct(0.99):>8.1f} {r.result.errors:>7} {ratio:>7.2f}x"
            )
    print()
    print(
        "vs peer = rate / the peer's rate on the same backend, measured in this run "
        "(1.00x = as fast as one bare UPDATE per request)."
    )
    if any(r.result.errors for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
