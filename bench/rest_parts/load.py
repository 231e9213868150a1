"""The Python load generators: ``--processes`` processes (spawned), each with its share of
``--concurrency`` requests in flight over a minimal keep-alive HTTP/1.1 client (or httpx),
running one phase at a time (create, transition, heartbeat, patch, write) on command; and
one backend (SQLite or PostgreSQL) measured with them: sessionhub, then the peer, then
the ceiling."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import random
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import httpx

from rest_parts.apps import PEER_ROWS
from rest_parts.servers import SECRET, reset_postgres, start_ceiling, start_peer, start_sessionhub

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


# -- a backend measured with them ------------------------------------------------------------


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


def bench_backend(
    name: str, database_url: str | None, args: argparse.Namespace, tmp: Path
) -> list[Row]:
    from sessionhub.auth import Authenticator

    rows: list[Row] = []
    data = tmp / name
    data.mkdir()
    if database_url and not database_url.startswith("sqlite"):
        asyncio.run(reset_postgres(database_url))
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
        asyncio.run(reset_postgres(peer_url))
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
