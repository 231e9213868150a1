"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
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


_HOME = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sessionhub</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:44rem;margin:3rem auto;padding:0 1rem}
code,textarea{font:13px ui-monospace,monospace}textarea{width:100%;height:5rem}</style></head>
<body><h1>sessionhub <small>__VERSION__</small></h1>
<p>The server is running. Explore and call the API in the <a href="/docs">API docs</a>
(<a href="/openapi.json">OpenAPI</a>, <a href="/api/health">health</a>,
<a href="/metrics">metrics</a>).</p>
<div id="signin" hidden><h2>Your sign-in token</h2>
<p>Press <em>Authorize</em> in the <a href="/docs">API docs</a> and paste it, or send it as
<code>Authorization: Bearer &lt;token&gt;</code>. It is not stored by this page.</p>
<textarea id="token" readonly></textarea></div>
<script>const t=new URLSearchParams(location.search).get("token");
if(t){document.getElementById("token").value=t;document.getElementById("signin").hidden=false;
history.replaceState(null,"",location.pathname);}</script>
</body></html>"""


@router.get("/", include_in_schema=False)
async def home() -> HTMLResponse:
    """Where the printed sign-in link lands: the token (from the query) and where to use it."""
    return HTMLResponse(_HOME.replace("__VERSION__", __version__))
