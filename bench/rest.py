"""REST throughput: transitions and heartbeats per second, SQLite and PostgreSQL.

Runs a real ``sessionhub serve`` (uvicorn) as a subprocess and drives it from load
generator *processes* (keep-alive HTTP/1.1, ``--concurrency`` requests in flight). Next to it,
in the same run and under the same load generator, it measures a peer: a minimal plain
FastAPI/uvicorn app that does one ``UPDATE`` of one row per request on the same database
(same driver, same SQLite durability settings). That is the floor of "one durable write per
request"; the ratio column says how sessionhub compares with it. A second peer is the
framework's ceiling: a FastAPI ``PATCH /api/sessions/{id}`` route that takes the same JSON body
as sessionhub's and returns ``{}``, on the same uvicorn configuration as ``sessionhub serve``
(``sessionhub.server.serving.uvicorn_config``), so ``changes (PATCH)`` can be compared with
what FastAPI and uvicorn can do at all on this machine.

A sessionhub transition is one durable change: read the session, compare-and-set the row,
append its event (one transaction), publish. A heartbeat is coalesced in memory and written
in batches by the scheduler, so it costs no write per request.

    .venv/bin/python bench/rest.py [--duration 5] [--concurrency 32] [--processes 2]
                                   [--postgres-url postgresql+asyncpg://...] [--no-postgres]
                                   [--load python,wrk] [--wrk-connections 32]
                                   [--wrk-sessions 300]

``--load wrk`` (on by default when ``wrk`` is installed: ``apt-get install -y wrk``) measures
with Debian's ``wrk`` instead of Python load generators: the server pinned to CPU 0, ``wrk``
(one thread, 32 connections) to CPU 1, a Lua script generated in a temporary directory that
cycles through 300 sessions. It reports req/s, p50 and p99 of ``PATCH /api/sessions/{id}``,
of the FastAPI ceiling and of the bare-UPDATE peer, their ratios, the share of non-2xx
answers (409s), and sessionhub's p99 at an offered rate of half its own maximum (wrk's
``delay()`` paces each connection).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

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


class CeilingBody(BaseModel):
    """The body of sessionhub's PATCH /api/sessions/{id}: attributes and/or metadata."""

    model_config = ConfigDict(extra="forbid")
    attributes: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


def ceiling_app() -> Any:
    """The framework's ceiling: FastAPI validating sessionhub's PATCH body, answering ``{}``."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.patch("/api/sessions/{session_id}")
    async def patch(session_id: str, body: CeilingBody) -> dict[str, Any]:
        return {}

    @app.get("/api/ready")
    async def ready() -> dict[str, Any]:
        return {}

    @app.post("/api/sessions")
    async def create() -> dict[str, str]:  # so the load generators can make "sessions"
        return {"id": f"s{random.randrange(1 << 30)}"}

    return app


def serve_ceiling(port: int) -> None:
    import uvicorn

    from sessionhub.server.serving import uvicorn_config
    from sessionhub.settings import Settings

    settings = Settings(host="127.0.0.1", port=port, log_level="warning")
    uvicorn.Server(uvicorn_config(ceiling_app(), settings)).run()


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


def pinned(cpus: set[int] | None) -> Callable[[], None] | None:
    """A preexec_fn pinning the child (and every thread it starts) to ``cpus``."""
    if not cpus:
        return None

    def setup() -> None:
        os.sched_setaffinity(0, cpus)

    return setup


class Proc:
    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        ready_path: str,
        log: Path,
        cpus: set[int] | None = None,
    ) -> None:
        self.port = int(argv[argv.index("--port") + 1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        self.log_path = log
        self.proc = subprocess.Popen(
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=pinned(cpus)
        )
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


def start_sessionhub(
    data_dir: Path, database_url: str | None, log_level: str, cpus: set[int] | None = None
) -> Proc:
    env = {
        **os.environ,
        "SESSIONHUB_JWT_SECRET": SECRET,
        "SESSIONHUB_LOG_LEVEL": log_level,
        "SESSIONHUB_DATA_DIR": str(data_dir),
    }
    if database_url:
        env["SESSIONHUB_DATABASE_URL"] = database_url
    argv = [sys.executable, "-m", "sessionhub.cli", "serve", "--port", str(free_port())]
    return Proc(argv, env, "/api/ready", data_dir / "server.log", cpus)


def start_peer(data_dir: Path, database_url: str, cpus: set[int] | None = None) -> Proc:
    argv = [sys.executable, __file__, "--serve-peer", database_url, "--port", str(free_port())]
    return Proc(argv, dict(os.environ), "/ready", data_dir / "peer.log", cpus)


def start_ceiling(data_dir: Path, cpus: set[int] | None = None) -> Proc:
    argv = [sys.executable, __file__, "--serve-ceiling", "--port", str(free_port())]
    return Proc(argv, dict(os.environ), "/api/ready", data_dir / "ceiling.log", cpus)


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
        if what in ("heartbeat", "patch"):  # a session per task, made before the clock starts
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
                elif what == "patch":
                    n = res.count + res.errors
                    patch = b'{"attributes":{"label":"bench-%d"}}' % n
                    status, body = await http.request("PATCH", f"/api/sessions/{live[i]}", patch)
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
        rows.append(Row(name, "changes (PATCH)", load.run("patch", args.duration)))
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

    ceiling = start_ceiling(data)
    load = Load(ceiling.url, {}, args.processes, args.concurrency, args.client)
    try:
        load.run("patch", min(1.0, args.duration))  # warm-up
        rows.append(Row(name, "ceiling: FastAPI PATCH {}", load.run("patch", args.duration)))
    finally:
        load.close()
        ceiling.stop()
    return rows


# -- wrk: the server on CPU 0, Debian's wrk on CPU 1 --------------------------------------------

WRK_LUA = r"""
local ids = {@IDS@}
local token = "@TOKEN@"
local method, prefix = "@METHOD@", "@PREFIX@"
local pace_ms = @PACE@
-- Globals: the main state reads each thread's statuses with thread:get().
counter, statuses, threads = 0, {}, {}

function setup(thread) table.insert(threads, thread) end
function init(args) counter = 0; statuses = {} end

function request()
  counter = counter + 1
  local id = ids[(counter % #ids) + 1]
  local body = '{"attributes":{"label":"wrk-' .. counter .. '"}}'
  local headers = {["Content-Type"] = "application/json"}
  if token ~= "" then headers["Authorization"] = "Bearer " .. token end
  return wrk.format(method, prefix .. id, headers, body)
end

if pace_ms > 0 then
  function delay() return pace_ms end
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local merged, parts = {}, {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses") or {}) do merged[k] = (merged[k] or 0) + v end
  end
  for k, v in pairs(merged) do parts[#parts + 1] = '"' .. k .. '":' .. v end
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"socket_errors":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    table.concat(parts, ",")))
end
"""


@dataclass
class WrkRow:
    backend: str
    what: str
    result: dict[str, Any]
    offered: float = 0.0

    @property
    def rate(self) -> float:
        seconds = self.result["duration_us"] / 1e6
        return self.result["requests"] / seconds if seconds else 0.0

    @property
    def non2xx(self) -> float:
        """Share of the answers that were not 2xx."""
        statuses = {int(k): v for k, v in self.result["statuses"].items()}
        total = sum(statuses.values())
        bad = sum(v for k, v in statuses.items() if not 200 <= k < 300)
        return bad / total if total else 0.0

    def codes(self) -> str:
        return ", ".join(
            f"{k}: {v}" for k, v in sorted(self.result["statuses"].items()) if k[0] != "2"
        )


def run_wrk(
    url: str,
    tmp: Path,
    ids: list[str],
    method: str,
    prefix: str,
    args: argparse.Namespace,
    *,
    token: str = "",
    pace_ms: int = 0,
    seconds: float | None = None,
) -> dict[str, Any]:
    """One wrk run (one thread, ``--wrk-connections`` connections, pinned to CPU 1)."""
    script = tmp / f"wrk-{time.monotonic_ns()}.lua"
    lua = (
        WRK_LUA.replace("@IDS@", ",".join(json.dumps(i) for i in ids))
        .replace("@TOKEN@", token)
        .replace("@METHOD@", method)
        .replace("@PREFIX@", prefix)
        .replace("@PACE@", str(pace_ms))
    )
    script.write_text(lua)
    cmd = ["wrk", "-t1", f"-c{args.wrk_connections}", f"-d{seconds or args.duration:g}s"]
    cmd += ["--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=(seconds or args.duration) + 60,
        preexec_fn=pinned(WRK_CPUS),
        check=False,
    )
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            result: dict[str, Any] = json.loads(line[8:])
            return result
    raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout[-500:]}")


SERVER_CPUS: set[int] | None = None
WRK_CPUS: set[int] | None = None


def bench_wrk(
    name: str, database_url: str | None, args: argparse.Namespace, tmp: Path
) -> list[WrkRow]:
    from sessionhub.auth import Authenticator

    rows: list[WrkRow] = []
    data = tmp / f"wrk-{name}"
    data.mkdir()
    if database_url and not database_url.startswith("sqlite"):
        asyncio.run(_reset_postgres(database_url))
    token = Authenticator(secret=SECRET).issue("bench")
    server = start_sessionhub(data, database_url, args.log_level, SERVER_CPUS)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
            ids = [
                c.post("/api/sessions", json={"kind": "generic"}).json()["id"]
                for _ in range(args.wrk_sessions)
            ]
        patch = "PATCH", "/api/sessions/"
        run_wrk(server.url, tmp, ids, *patch, args, token=token, seconds=1)  # warm-up
        full = WrkRow(
            name,
            "PATCH /api/sessions/{id}",
            run_wrk(server.url, tmp, ids, *patch, args, token=token),
        )
        rows.append(full)
        time.sleep(3.0)  # let whatever the changes set off (events, consumers) settle
        # Half the rate it just managed: each connection waits between its requests.
        half = full.rate / 2
        pace = max(1, round(args.wrk_connections * 1000 / half)) if half else 1000
        paced = run_wrk(server.url, tmp, ids, *patch, args, token=token, pace_ms=pace)
        rows.append(WrkRow(name, "PATCH, half that rate offered", paced, offered=half))
    finally:
        server.stop()

    ceiling = start_ceiling(data, SERVER_CPUS)
    try:
        run_wrk(ceiling.url, tmp, ids, "PATCH", "/api/sessions/", args, seconds=1)
        result = run_wrk(ceiling.url, tmp, ids, "PATCH", "/api/sessions/", args)
        rows.append(WrkRow(name, "ceiling: FastAPI PATCH {}", result))
    finally:
        ceiling.stop()

    peer_url = database_url or f"sqlite+aiosqlite:///{data / 'peer.db'}"
    if not peer_url.startswith("sqlite"):
        asyncio.run(_reset_postgres(peer_url))
    peer = start_peer(data, peer_url, SERVER_CPUS)
    try:
        rows_ids = [str(random.randrange(PEER_ROWS)) for _ in range(args.wrk_sessions)]
        run_wrk(peer.url, tmp, rows_ids, "POST", "/write/", args, seconds=1)
        result = run_wrk(peer.url, tmp, rows_ids, "POST", "/write/", args)
        rows.append(WrkRow(name, "peer: 1 UPDATE/request", result))
    finally:
        peer.stop()
    return rows


def print_wrk(rows: list[WrkRow], backends: list[str], args: argparse.Namespace) -> None:
    print()
    pin = (
        f"server on CPU {sorted(SERVER_CPUS)}, wrk on CPU {sorted(WRK_CPUS or [])}"
        if SERVER_CPUS
        else "not pinned (fewer than 2 CPUs)"
    )
    print(
        f"wrk (Debian's), 1 thread, {args.wrk_connections} connections, {pin}, "
        f"{args.wrk_sessions} sessions, {args.duration:g} s each, {os.cpu_count()} CPU cores, "
        f"sessionhub log level {args.log_level}"
    )
    print()
    print("| backend | operation | req/s | p50 ms | p99 ms | non-2xx | × ceiling | × UPDATE peer |")
    print("|---|---|---|---|---|---|---|---|")
    for b in backends:
        mine = [r for r in rows if r.backend == b]
        ceiling = next((r for r in mine if r.what.startswith("ceiling")), None)
        peer = next((r for r in mine if r.what.startswith("peer")), None)
        for r in mine:
            what = r.what + (f" ({r.offered:,.0f}/s)" if r.offered else "")
            xc = f"{r.rate / ceiling.rate:.2f}" if ceiling and ceiling.rate else "-"
            xp = f"{r.rate / peer.rate:.2f}" if peer and peer.rate else "-"
            codes = f"{r.non2xx:.1%}" + (f" ({r.codes()})" if r.codes() else "")
            print(
                f"| {b} | {what} | {r.rate:,.0f} | {r.result['p50_us'] / 1000:.1f} "
                f"| {r.result['p99_us'] / 1000:.1f} | {codes} | {xc} | {xp} |"
            )
    print()
    for b in backends:
        by_what = {r.what: r for r in rows if r.backend == b}
        full = by_what.get("PATCH /api/sessions/{id}")
        half = by_what.get("PATCH, half that rate offered")
        ceiling = by_what.get("ceiling: FastAPI PATCH {}")
        peer = by_what.get("peer: 1 UPDATE/request")
        if not (full and ceiling and peer):
            continue
        line = (
            f"{b}: PATCH at {full.rate / ceiling.rate:.2f}× the FastAPI ceiling "
            f"({full.rate:,.0f} vs {ceiling.rate:,.0f} req/s; issue target ≥ 0.5× on SQLite), "
            f"{full.rate / peer.rate:.2f}× the bare-UPDATE peer (target ≥ 1.0× on PostgreSQL)"
        )
        if half:
            line += (
                f"; p99 {half.result['p99_us'] / 1000:.1f} ms at {half.rate:,.0f} req/s "
                "(half its rate; target ≤ 20 ms)"
            )
        print(line)


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
    p.add_argument(
        "--load",
        default="python,wrk",
        help="python (the load generator processes), wrk (Debian's wrk, pinned), or both",
    )
    p.add_argument("--wrk-connections", type=int, default=32)
    p.add_argument("--wrk-sessions", type=int, default=300, help="sessions wrk cycles through")
    p.add_argument("--serve-peer", help=argparse.SUPPRESS)
    p.add_argument("--serve-ceiling", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_peer:
        serve_peer(args.serve_peer, args.port)
        return 0
    if args.serve_ceiling:
        serve_ceiling(args.port)
        return 0
    global SERVER_CPUS, WRK_CPUS
    loads = set(args.load.split(","))
    if "wrk" in loads and shutil.which("wrk") is None:
        print(
            "wrk not installed (apt-get install -y wrk): the wrk runs are skipped", file=sys.stderr
        )
        loads.discard("wrk")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        SERVER_CPUS, WRK_CPUS = {cpus[0]}, {cpus[1]}

    backends: list[tuple[str, str | None]] = [("sqlite", None)]
    if not args.no_postgres:
        try:
            asyncio.run(_reset_postgres(args.postgres_url))
            backends.append(("postgresql", args.postgres_url))
        except Exception as exc:
            print(f"PostgreSQL skipped ({type(exc).__name__}: {exc})", file=sys.stderr)

    rows: list[Row] = []
    wrk_rows: list[WrkRow] = []
    with tempfile.TemporaryDirectory(prefix="sessionhub-bench-") as tmp:
        for name, url in backends:
            if "python" in loads:
                print(f"measuring {name} ...", file=sys.stderr, flush=True)
                rows += bench_backend(name, url, args, Path(tmp))
            if "wrk" in loads:
                print(f"measuring {name} with wrk ...", file=sys.stderr, flush=True)
                wrk_rows += bench_wrk(name, url, args, Path(tmp))
    if wrk_rows:
        print_wrk(wrk_rows, [b for b, _ in backends], args)
    if not rows:
        return 0

    print()
    print(
        f"sessionhub REST bench: {os.cpu_count()} CPU cores (server, database and load "
        f"generator share them), {args.concurrency} requests in flight from "
        f"{args.processes} processes ({args.client} HTTP/1.1 keep-alive), "
        f"{args.duration:g} s each, log level {args.log_level}"
    )
    print()
    header = (
        f"{'backend':<11} {'operation':<26} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>7} {'vs peer':>8} {'vs ceiling':>10}"
    )
    print(header)
    print("-" * len(header))
    for name, _ in backends:
        mine = [r for r in rows if r.backend == name]
        peer = next(r for r in mine if r.what.startswith("peer"))
        ceiling = next(r for r in mine if r.what.startswith("ceiling"))
        for r in mine:
            ratio = r.rate / peer.rate if peer.rate else 0.0
            xc = r.rate / ceiling.rate if ceiling.rate else 0.0
            print(
                f"{r.backend:<11} {r.what:<26} {r.rate:>9.0f} {r.pct(0.5):>8.1f} "
                f"{r.pct(0.99):>8.1f} {r.result.errors:>7} {ratio:>7.2f}x {xc:>9.2f}x"
            )
    print()
    print(
        "vs peer = rate / the peer's rate on the same backend, measured in this run "
        "(1.00x = as fast as one bare UPDATE per request); vs ceiling = rate / that of a "
        "FastAPI PATCH route returning {} on the same uvicorn configuration."
    )
    if any(r.result.errors for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
