"""FastAPI dependencies shared by the routers: the runtime, the hub and the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..core.principal import Principal
from ..hub import Hub
from .runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_hub(request: Request) -> Hub:
    return get_runtime(request).hub


def get_principal(request: Request) -> Principal:
    """The authenticated caller (401 problem if missing or invalid)."""
    principal = get_runtime(request).auth.authenticate(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )
    request.state.principal = principal
    return principal


HubDep = Annotated[Hub, Depends(get_hub)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
