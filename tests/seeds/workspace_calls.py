"""HTTP calls the workspace tests share."""

from __future__ import annotations

from typing import Any

import httpx


async def create(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    """Create a workspace through JamBot's ``POST /api/sessions/``."""
    r = await client.post("/api/sessions/", json=body, headers=headers)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def get(client: httpx.AsyncClient, sid: str, headers: dict[str, str]) -> dict[str, Any]:
    """Read one session through the generic ``GET /api/sessions/{id}``."""
    r = await client.get(f"/api/sessions/{sid}", headers=headers)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out
