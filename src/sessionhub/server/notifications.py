"""``GET /api/notifications`` (per user, paginated), marking them read, webhook deliveries.

The notifier (``consumers/notifications.py``) and the webhook dispatcher
(``consumers/webhooks.py``, configured by ``SESSIONHUB_WEBHOOK_*``) are the runtime's.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from ..core.errors import Forbidden
from ..core.model import JSON
from .deps import PrincipalDep, RuntimeDep
from .problems import NO_NUL, responses

router = APIRouter(prefix="/api", tags=["notifications"])


class MarkRead(BaseModel):
    """``ids`` to mark, or ``all: true``; at least one of them (else a 422)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["ids"], "properties": {"ids": {"minItems": 1}}},
                {"required": ["all"], "properties": {"all": {"const": True}}},
            ]
        },
    )

    ids: list[Annotated[str, Field(max_length=200, pattern=NO_NUL)]] = Field(
        default_factory=list, max_length=500
    )
    all: bool = Field(default=False, strict=True)


@router.get("/notifications", summary="Your notifications, newest first", responses=responses(403))
async def list_notifications(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None,
        Query(max_length=40, pattern="^[0-9]+$", description="`next_cursor` of the previous page"),
    ] = None,
    user: Annotated[
        str | None, Query(max_length=200, description="Another user's (admins)")
    ] = None,
    unread: bool = False,
) -> JSON:
    """``{"notifications": [{"id", "event", "data", ...}], "total", "unread", "next_cursor"}``.

    Admins see their own plus those addressed to all admins (``@admins``), and may pass
    ``?user=`` to read another user's. ``next_cursor`` fetches the next (older) page."""
    return await runtime.notifier.list(
        principal, user=user, limit=limit, cursor=cursor, unread=unread
    )


@router.post("/notifications/read", summary="Mark notifications read")
async def mark_read(body: MarkRead, runtime: RuntimeDep, principal: PrincipalDep) -> JSON:
    n = await runtime.notifier.mark_read(principal, ids=body.ids, everything=body.all)
    return {"success": True, "updated": n}


@router.get(
    "/webhooks/deliveries", summary="Recent webhook deliveries (admins)", responses=responses(403)
)
async def deliveries(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    status: Annotated[str | None, Query(pattern="^(pending|delivered|failed)$")] = None,
) -> JSON:
    if not principal.is_admin:
        raise Forbidden("webhook deliveries are for admins")
    webhooks = runtime.webhooks
    return {
        "urls": list(webhooks.config.urls),
        "deliveries": await webhooks.deliveries(limit=limit, status=status),
        "pending": await webhooks.count_pending(),
    }
