"""The peers' apps, each run by ``rest.py --serve-peer URL`` or ``--serve-ceiling``: the
floor of "one durable write per request" (a plain FastAPI app doing one ``UPDATE`` of one
row, same driver and SQLite durability as sessionhub) and the framework's ceiling (FastAPI
validating sessionhub's PATCH body and answering ``{}``, on sessionhub's uvicorn
configuration). ``--serve-floor`` runs what is under that framework: uvicorn on the same
configuration with a bare ASGI app answering ``{}`` (``bench/heartbeats.py``'s floor)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pydantic import BaseModel, ConfigDict

PEER_ROWS = 1000


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

    @app.post("/api/sessions/{session_id}/heartbeat")
    async def heartbeat(session_id: str) -> dict[str, Any]:  # bench/heartbeats.py's peer
        return {}

    @app.post("/api/sessions")
    async def create() -> dict[str, str]:  # so the load generators can make "sessions"
        return {"id": f"s{random.randrange(1 << 30)}"}

    return app


async def floor_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Below the framework: a bare ASGI app answering ``{}`` to every request."""
    if scope["type"] != "http":
        return
    more = True
    while more:  # read the body, as any route that takes one does
        message = await receive()
        more = message.get("more_body", False)
    head = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    await send({"type": "http.response.body", "body": b"{}"})


def serve_floor(port: int) -> None:
    import uvicorn

    from sessionhub.server.serving import uvicorn_config
    from sessionhub.settings import Settings

    settings = Settings(host="127.0.0.1", port=port, log_level="warning")
    uvicorn.Server(uvicorn_config(floor_app, settings, lifespan="off")).run()


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
