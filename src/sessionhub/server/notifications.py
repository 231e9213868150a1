"""``GET /api/notifications`` (per user, paginated), marking them read, webhook deliveries.

The installer wires the ``Notifier`` (``features/notifications.py``) and the webhook
dispatcher (``features/webhooks.py``, configured by ``SESSIONHUB_WEBHOOK_*``) into the
runtime: both start and stop with the app.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field

from ..consumers.notifications import Notifier
from ..consumers.webhooks import WebhookConfig, WebhookDispatcher
from ..core.errors import Forbidden
from ..core.model import JSON
from .deps import PrincipalDep, RuntimeDep
from .runtime import Runtime

router = APIRouter(prefix="/api", tags=["notifications"])

NOTIFIER = "notifier"
WEBHOOKS = "webhooks"


def notifier_of(runtime: Runtime) -> Notifier:
    notifier: Notifier = runtime.services[NOTIFIER]
    return notifier


def webhooks_of(runtime: Runtime) -> WebhookDispatcher:
    webhooks: WebhookDispatcher = runtime.services[WEBHOOKS]
    return webhooks


def install(_app: FastAPI, runtime: Runtime) -> None:
    """Create the notifier and webhook dispatcher; run them with the runtime."""
    extra = runtime.settings.extra
    config = WebhookConfig.load(extra=extra, data_dir=runtime.settings.data_dir)
    hours = float(
        extra.get("notification_catchup_hours")
        or os.environ.get("SESSIONHUB_NOTIFICATION_CATCHUP_HOURS")
        or 24
    )
    notifier = Notifier.with_webhooks(runtime.hub, config, catchup=timedelta(hours=hours))
    webhooks = notifier.webhooks
    assert webhooks is not None
    notifier.install()
    runtime.services[NOTIFIER] = notifier
    runtime.services[WEBHOOKS] = webhooks
    # Webhooks start first and stop last, so the notifier can still wake them while closing.
    runtime.on_start.append(webhooks.start)
    runtime.on_start.append(notifier.start)
    runtime.on_close.append(webhooks.close)
    runtime.on_close.append(notifier.close)


class MarkRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(default_factory=list, max_length=500)
    all: bool = False


@router.get("/notifications", summary="Your notifications, newest first")
async def list_notifications(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
    user: Annotated[str | None, Query(max_length=200)] = None,
    unread: bool = False,
) -> JSON:
    """``{"notifications": [{"id", "event", "data", ...}], "total", "unread", "next_cursor"}``.

    Admins see their own plus those addressed to all admins (``@admins``), and may pass
    ``?user=`` to read another user's. ``next_cursor`` fetches the next (older) page."""
    return await notifier_of(runtime).list(
        principal, user=user, limit=limit, cursor=cursor, unread=unread
    )


@router.post("/notifications/read", summary="Mark notifications read")
async def mark_read(body: MarkRead, runtime: RuntimeDep, principal: PrincipalDep) -> JSON:
    n = await notifier_of(runtime).mark_read(principal, ids=body.ids, everything=body.all)
    return {"success": True, "updated": n}


@router.get("/webhooks/deliveries", summary="Recent webhook deliveries (admins)")
async def deliveries(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    status: Annotated[str | None, Query(pattern="^(pending|delivered|failed)$")] = None,
) -> JSON:
    if not principal.is_admin:
        raise Forbidden("webhook deliveries are for admins")
    webhooks = webhooks_of(runtime)
    return {
        "urls": list(webhooks.config.urls),
        "deliveries": await webhooks.deliveries(limit=limit, status=status),
        "pending": await webhooks.count_pending(),
    }
