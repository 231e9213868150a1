"""Run the app in-process behind an httpx client (used by fixtures and tests alike)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from sessionhub.server.app import create_app
from sessionhub.server.runtime import Runtime


@asynccontextmanager
async def serve_in_process(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app for ``runtime`` (lifespan included) behind an in-process httpx client."""
    app = create_app(runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c
