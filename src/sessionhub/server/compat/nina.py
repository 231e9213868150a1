"""The NINA dashboard's REST routes (seed 000), over the connector's service.

- ``GET /api/nina/session-state[?rig=]``: the document's ``unifiedSession`` data object for the
  rig's current night (else its last), plus ``images_by_type``, ``end_reason``, ``activity``
  and ``stream`` (the ``nina:<rig>`` position it reflects).
- ``POST /api/nina/session-state/refresh[?rig=]``: re-seed from the rig's event history
  (idempotent) and answer the same object; ``POST /api/session/refresh`` is the upstream's
  path, answering its ``{success, message, data, timestamp}`` envelope.
- ``GET /api/config/health``: what ``/api/health`` answers, plus ``nina``, the connector's
  state per rig (connected, last event, retries, counters of bad input).

Who sees what: an admin sees every rig; anyone else sees the rigs whose name is their token's
subject (the rig owns its nights, as every owner sees their own sessions) and gets 404 for
the others, so rig names do not leak. With ``SESSIONHUB_NINA_ALLOW_ANONYMOUS=1`` the state is
readable without a token (read-only, as ``/ws/unified``). A refresh needs an admin or the
rig's own subject. Without a configured rig the routes answer 404 "no NINA rig configured".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from ...connectors.nina.service import NinaService
from ...core.errors import NotFound
from ...core.model import JSON
from ...core.principal import Principal
from ...kinds.imaging import js_time
from ..deps import get_runtime
from ..problems import responses
from ..system import health as base_health

router = APIRouter(tags=["NINA (seed 000)"])

#: No rig configured, or none the caller may see (rig names do not leak).
_RIG = responses(404)

RigQuery = Annotated[
    str | None, Query(max_length=64, description="the rig's name (default: the first you may see)")
]


def nina_service(request: Request) -> NinaService | None:
    """The runtime's connector, or None when no rig is configured."""
    service: NinaService | None = getattr(get_runtime(request), "nina", None)
    return service


async def _service(request: Request) -> NinaService:
    service = nina_service(request)
    if service is None:
        raise NotFound("no NINA rig configured (set SESSIONHUB_NINA_URL)")
    return service


async def _reader(request: Request) -> Principal | None:
    """The caller; None for an anonymous reader when the connector allows those."""
    service = nina_service(request)
    has_credentials = request.headers.get("authorization") or request.headers.get("x-api-key")
    if not has_credentials and service is not None and service.config.allow_anonymous:
        return None
    return get_runtime(request).auth.authenticate(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )


ServiceDep = Annotated[NinaService, Depends(_service)]
ReaderDep = Annotated[Principal | None, Depends(_reader)]


def _may_see(principal: Principal | None, rig: str) -> bool:
    return principal is None or principal.is_admin or principal.sub == rig


def _rig(service: NinaService, principal: Principal | None, rig: str | None) -> str:
    """The rig asked for (or the first the caller may see); 404 for one they may not."""
    if rig is None:
        for name in service.rigs:
            if _may_see(principal, name):
                return name
        raise NotFound("no NINA rig you may see")
    if rig not in service.rigs or not _may_see(principal, rig):
        raise NotFound(f"no NINA rig {rig!r}")
    return rig


def _refresher(principal: Principal | None, rig: str) -> None:
    if principal is None or not (principal.is_admin or principal.sub == rig):
        raise NotFound(f"no NINA rig {rig!r} you may refresh")


@router.get(
    "/api/nina/session-state", summary="The rig's unified session (seed 000)", responses=_RIG
)
async def session_state(service: ServiceDep, principal: ReaderDep, rig: RigQuery = None) -> JSON:
    return await service.state(_rig(service, principal, rig))


@router.post(
    "/api/nina/session-state/refresh", summary="Re-seed from the rig's history", responses=_RIG
)
async def refresh_state(service: ServiceDep, principal: ReaderDep, rig: RigQuery = None) -> JSON:
    name = _rig(service, principal, rig)
    _refresher(principal, name)
    return await service.refresh(name)


@router.post(
    "/api/session/refresh",
    summary="Re-seed from the rig's history (upstream path)",
    responses=_RIG,
)
async def refresh_upstream(service: ServiceDep, principal: ReaderDep, rig: RigQuery = None) -> JSON:
    name = _rig(service, principal, rig)
    _refresher(principal, name)
    data = await service.refresh(name)
    return {
        "success": True,
        "message": "Session data refreshed from NINA",
        "data": data,
        "timestamp": js_time(datetime.now(UTC)),
    }


@router.get("/api/config/health", summary="Health, with the NINA connector's state")
async def config_health(request: Request) -> JSON:
    out: dict[str, Any] = dict(await base_health(request))
    service = nina_service(request)
    out["timestamp"] = js_time(datetime.now(UTC))
    out["nina"] = service.health() if service is not None else None
    return out
