"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .. import __version__
from ..core.model import JSON
from .deps import RuntimeDep
from .observe import Metrics
from .problems import problem

router = APIRouter(tags=["system"])


@router.get("/api/health", summary="Liveness")
async def health() -> JSON:
    return {"status": "ok", "version": __version__}


@router.get("/api/ready", summary="Readiness (checks the store)")
async def ready(runtime: RuntimeDep) -> JSONResponse:
    try:
        await runtime.hub.store.ping()
    except Exception as exc:
        return problem(503, "Not ready", f"store unavailable: {type(exc).__name__}")
    return JSONResponse({"status": "ready", "store": "ok"})


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request, runtime: RuntimeDep) -> Response:
    m: Metrics = request.app.state.metrics
    m.sessions.clear()
    for (kind, state), n in (await runtime.hub.store.count_by_kind_state()).items():
        m.sessions.labels(kind, state).set(n)
    m.heartbeats.set(runtime.hub.stats.heartbeats)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
