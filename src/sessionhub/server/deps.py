"""FastAPI dependencies shared by the routers: the runtime, the hub and the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..core.principal import Principal
from ..hub import Hub
from .runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    """The runtime of the app serving ``request`` (plain function; call it anywhere)."""
    runtime: Runtime = request.app.state.runtime
    return runtime


# The dependencies below are ``async def`` on purpose: FastAPI runs plain ``def``
# dependencies in a worker thread, a thread hop per dependency per request that cost more
# than a whole heartbeat.


async def runtime_dependency(request: Request) -> Runtime:
    return get_runtime(request)


async def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.runtime.hub
    return hub


async def get_principal(request: Request) -> Principal:
    """The authenticated caller (401 problem if missing or invalid)."""
    runtime: Runtime = request.app.state.runtime
    principal = runtime.auth.authenticate(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )
    request.state.principal = principal
    return principal


HubDep = Annotated[Hub, Depends(get_hub)]
RuntimeDep = Annotated[Runtime, Depends(runtime_dependency)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
