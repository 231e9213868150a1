"""Health, readiness, Prometheus metrics, the API docs (served offline) and the dashboard.

``/docs`` (Swagger UI) and ``/redoc`` load their JavaScript and CSS from this server: the
files come from the ``fastapi-offline`` package installed with sessionhub, never from a
CDN, so the docs work on a machine without internet access. The OpenAPI document declares
the two ways to authenticate (a bearer JWT and the ``X-API-Key`` header), which gives
Swagger UI its *Authorize* button. ``install`` puts both in place on the app.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.routing import Route

from .. import __version__
from ..core.errors import NotFound
from ..core.model import JSON
from . import dashboard, problems, rest_schema
from .deps import RuntimeDep, resolve_json_refs
from .observe import Metrics
from .problems import problem
from .runtime import Runtime

router = APIRouter(tags=["system"])
# The dashboard owns "/" (where the printed sign-in link lands) and its static files.
router.include_router(dashboard.router)


@router.get("/api/health", summary="Liveness, with what this node runs")
async def health(request: Request) -> JSON:
    """Cheap on purpose (memory only, no store query): it must answer at once however busy
    the node is. ``node``: this node's name, whether it leads the consumers, its realtime
    connections; ``nina``: the NINA connector's state when one is configured."""
    out: JSON = {"status": "ok", "version": __version__}
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is not None:
        rt = runtime.realtime.stats()
        out["node"] = {
            "id": runtime.consumers.node_id,
            "leads_consumers": runtime.consumers.leading,
            "connections": rt["connections"],
            "sse_streams": rt["sse_streams"],
        }
        if runtime.nina is not None:
            out["nina"] = runtime.nina.health()
    return out


@router.get("/api/ready", summary="Readiness (checks the store)", responses=problems.responses(503))
async def ready(runtime: RuntimeDep) -> JSONResponse:
    try:
        await runtime.hub.ping()
    except Exception as exc:
        return problem(503, "Not ready", f"store unavailable: {type(exc).__name__}")
    return JSONResponse({"status": "ready", "store": "ok"})


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request, runtime: RuntimeDep) -> Response:
    m: Metrics = request.app.state.metrics
    m.sessions.clear()
    for (kind, state), n in (await runtime.hub.count_by_kind_state()).items():
        m.sessions.labels(kind, state).set(n)
    m.heartbeats.set(runtime.hub.stats.heartbeats)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


# -- API docs without a CDN ------------------------------------------------------------------

DOCS_ASSETS_PACKAGE = "fastapi-offline"
#: The asset files the docs pages use, and their media types.
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
_ASSETS_URL = "/docs/assets"
OPENAPI_URL = "/openapi.json"


def docs_assets_dir() -> Path | None:
    """Where the installed package keeps Swagger UI and ReDoc (None: not installed). Found
    without importing it: only its files are used."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "static"
    return folder if folder.is_dir() else None


def _missing_assets() -> HTMLResponse:
    # Better a page that says what to install than a blank one, or one that quietly loads
    # the assets from the internet.
    return HTMLResponse(
        "<!doctype html><title>sessionhub API docs</title><h1>API docs unavailable</h1>"
        f"<p>The docs' assets come from the <code>{DOCS_ASSETS_PACKAGE}</code> package, which "
        f"is not installed: <code>pip install {DOCS_ASSETS_PACKAGE}</code>. The OpenAPI "
        f'document is at <a href="{OPENAPI_URL}">{OPENAPI_URL}</a>.</p>',
        status_code=503,
    )


@router.get("/docs", include_in_schema=False)
async def swagger_ui() -> HTMLResponse:
    if docs_assets_dir() is None:
        return _missing_assets()
    return get_swagger_ui_html(
        openapi_url=OPENAPI_URL,
        title="sessionhub - Swagger UI",
        swagger_js_url=f"{_ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{_ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{_ASSETS_URL}/favicon.png",
        # No OAuth flows here; and no spec validator badge, which swagger.io would serve.
        oauth2_redirect_url=None,
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get("/redoc", include_in_schema=False)
async def redoc() -> HTMLResponse:
    if docs_assets_dir() is None:
        return _missing_assets()
    return get_redoc_html(
        openapi_url=OPENAPI_URL,
        title="sessionhub - ReDoc",
        redoc_js_url=f"{_ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{_ASSETS_URL}/favicon.png",
        with_google_fonts=False,
    )


#: ReDoc's bundle shows Redocly's logo from their CDN beside "API docs by Redocly", with no
#: option to turn it off. It is served with that one URL pointing nowhere (an empty data URL,
#: which ReDoc's own error handler then hides), so the page fetches nothing from elsewhere.
_REWRITES = {"redoc.standalone.js": [(b"https://cdn.redoc.ly/redoc/logo-mini.svg", b"data:,")]}


@cache
def _rewritten(path: Path) -> tuple[bytes, str]:
    body = path.read_bytes()
    for old, new in _REWRITES.get(path.name, []):
        body = body.replace(old, new)
    return body, hashlib.sha256(body).hexdigest()[:16]


@router.get(_ASSETS_URL + "/{name}", include_in_schema=False)
async def docs_asset(name: str) -> Response:
    folder = docs_assets_dir()
    media_type = DOCS_ASSETS.get(name)  # only the named files: no path is ever built from input
    if folder is None or media_type is None:
        raise NotFound(f"no docs asset {name!r}")
    headers = {"Cache-Control": "public, max-age=86400"}
    if name not in _REWRITES:
        return FileResponse(folder / name, media_type=media_type, headers=headers)
    body, etag = _rewritten(folder / name)
    return Response(body, media_type=media_type, headers={**headers, "ETag": f'"{etag}"'})


# -- the OpenAPI document's security schemes ---------------------------------------------------

SECURITY_SCHEMES: JSON = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A token from `sessionhub token create` (or the sign-in link "
        "`sessionhub serve` prints: the part after `?token=`).",
    },
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "A service key from `SESSIONHUB_API_KEYS` (16+ characters).",
    },
}
#: Operations anyone may call: the probes, and the rooms' lookup (seed 003: rooms are
#: anonymous, as Aesthetic Computer's are).
PUBLIC_PATHS = frozenset({"/api/health", "/api/ready", "/api/config/health", "/session/{slug}"})


def add_security(schema: JSON) -> JSON:
    """Declare the schemes and require one of them everywhere but on ``PUBLIC_PATHS``."""
    schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    schema["security"] = [{"bearer": []}, {"apiKey": []}]
    for path in PUBLIC_PATHS:
        for operation in schema.get("paths", {}).get(path, {}).values():
            operation["security"] = []
    return schema


def install(app: FastAPI, runtime: Runtime | None = None) -> None:
    """Serve the docs from local assets and complete the OpenAPI document: the security
    schemes, the problems every operation can answer (``problems.document``), the free-JSON
    schemas and what depends on ``runtime``'s kinds (``rest_schema.describe``).

    FastAPI registers its own ``/docs`` and ``/redoc`` when the app is constructed, and
    those load their assets from a CDN; they are removed here so this module's pages answer.
    """
    cdn_pages = {app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url} - {None}
    app.router.routes[:] = [
        r
        for r in app.router.routes
        if not (
            isinstance(r, Route)
            and r.path in cdn_pages
            and getattr(r.endpoint, "__module__", "").startswith("fastapi.")
        )
    ]
    app.docs_url = app.redoc_url = app.swagger_ui_oauth2_redirect_url = None
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = problems.document(add_security(generate()))
            if runtime is not None:
                schema = rest_schema.describe(schema, runtime.hub.kinds)
            app.openapi_schema = resolve_json_refs(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
