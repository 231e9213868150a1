"""JamBot's workspace API (seed 002), as a thin adapter over the ``workspace`` kind.

Paths and shapes are JamBot's ``routers/user_session.py``: ``POST|GET /api/sessions/`` (with
the trailing slash; the generic API keeps ``/api/sessions``), ``PUT /api/sessions/{id}``,
``link-mission``, ``activity``, ``complete`` and the admin clean-up routes. ``GET
/api/sessions/{id}`` is the generic route: the kind's ``view`` adds JamBot's record fields.
JamBot's ``GET /api/sessions/active`` (my active workspace) is served at
``GET /api/workspaces/active`` because ``/api/sessions/active`` is seed 004's list.
The mapping is in ``docs/seeds/jambot.md``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal, get_args

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from ...core.errors import Forbidden, InvalidInput
from ...core.model import JSON, Session, iso
from ...core.principal import Principal
from ...kinds.workspace import STATUSES, chat_id_for
from ...workflows.workspaces import MAX_MESSAGE_CHARS, ROLES, WorkspaceService
from ..deps import JsonArray, JsonObject, PrincipalDep, get_runtime
from ..problems import NO_NUL, responses

router = APIRouter(tags=["workspaces (seed 002)"])

Status = Literal["active", "completed", "abandoned", "archived"]
assert set(STATUSES) == set(get_args(Status))  # keep the enum and the kind in step


def get_workspaces(request: Request) -> WorkspaceService:
    return get_runtime(request).workspaces


ServiceDep = Annotated[WorkspaceService, Depends(get_workspaces)]

#: A workspace's status cannot move that way (409), or it is archived (its chat read-only).
_CHANGE = responses(409)
#: The clean-up routes are for admins.
_ADMIN = responses(403)


class CreateWorkspace(BaseModel):
    """JamBot's ``CreateUserSessionRequest``; ``name`` defaults to "Session N"."""

    model_config = ConfigDict(extra="ignore")

    name: str | None = Field(default=None, max_length=255, pattern=NO_NUL)
    session_metadata: JsonObject | None = None


class UpdateWorkspace(BaseModel):
    """JamBot's ``UpdateUserSessionRequest`` (plus ``assets``); absent fields are kept."""

    model_config = ConfigDict(extra="ignore")

    name: str | None = Field(default=None, max_length=255, pattern=NO_NUL)
    status: Status | None = None
    mission_id: str | None = Field(default=None, max_length=64, pattern=NO_NUL)
    session_metadata: JsonObject | None = None
    assets: JsonArray | None = None


class NewMessage(BaseModel):
    """A chat message: ``role`` is one of JamBot's ``MessageRole`` values."""

    model_config = ConfigDict(extra="ignore")

    role: str = Field(
        default="user", description=f"one of {list(ROLES)}", json_schema_extra={"enum": list(ROLES)}
    )
    content: str = Field(max_length=MAX_MESSAGE_CHARS, pattern=NO_NUL)
    message_metadata: JsonObject | None = Field(
        default=None, validation_alias=AliasChoices("message_metadata", "metadata")
    )


def _chat(session: Session, messages: list[JSON] | None = None) -> JSON:
    return {
        "id": chat_id_for(session.id),
        "user_session_id": session.id,
        "title": session.attributes.get("name"),
        "chat_metadata": {},
        "created_at": iso(session.created_at),
        "updated_at": iso(session.updated_at),
        "messages": messages or [],
    }


def _admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("the clean-up routes need the admin role")


@router.post(
    "/api/sessions/",
    summary="Create a workspace (JamBot)",
    responses={
        200: {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Session"}}}}
    },
)
async def create_workspace(
    body: CreateWorkspace, service: ServiceDep, principal: PrincipalDep
) -> JSON:
    """A new active workspace; the caller's other active workspaces are completed.

    The answer is JamBot's ``CreateUserSessionResponse`` (``user_session``, ``chat``) with
    the record's fields also at the top level."""
    s = await service.create(principal, name=body.name, session_metadata=body.session_metadata)
    record = service.hub.view(s)
    chat = _chat(s)
    return {**record, "user_session": {**record, "chat": chat}, "chat": chat}


@router.get("/api/sessions/", summary="List my workspaces (JamBot)")
async def list_workspaces(
    service: ServiceDep,
    principal: PrincipalDep,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 20,
    status_filter: Status | None = None,
) -> JSON:
    """``{sessions, total, page, per_page}``, newest first, the caller's own only."""
    items, total = await service.list_own(
        principal, page=page, per_page=per_page, status=status_filter
    )
    return {
        "sessions": [service.hub.view(s) for s in items],
        "total": total,
        "page": page,
        "per_page": per_page,
    }


@router.get("/api/workspaces/active", summary="Recover my active workspace (JamBot /active)")
async def active_workspace(
    service: ServiceDep,
    principal: PrincipalDep,
    message_limit: Annotated[int, Query(ge=0, le=1000)] = 200,
) -> JSON | None:
    """The caller's active workspace with its chat (the newest ``message_limit`` messages,
    oldest first) and metadata, in one call; its activity is touched. ``null`` if none."""
    found = await service.recover(principal, message_limit=message_limit)
    if found is None:
        return None
    s, messages, total = found
    record = service.hub.view(s)
    mission_id = s.attributes.get("mission_id")
    return {
        **record,
        "chat": {**_chat(s, messages), "message_count": total},
        "mission": {"id": mission_id} if mission_id else None,
    }


@router.put("/api/sessions/{session_id}", summary="Update a workspace (JamBot)", responses=_CHANGE)
async def update_workspace(
    session_id: str, body: UpdateWorkspace, service: ServiceDep, principal: PrincipalDep
) -> JSON:
    """Set ``name``, ``mission_id``, ``assets``; replace ``session_metadata`` (the client's
    auto-save); move to ``status`` (``completed``, ``abandoned`` or ``archived``)."""
    s = await service.update(
        principal,
        session_id,
        name=body.name,
        status=body.status,
        mission_id=body.mission_id,
        session_metadata=body.session_metadata,
        assets=body.assets,
    )
    return service.hub.view(s)


@router.post(
    "/api/sessions/{session_id}/link-mission/{mission_id}",
    summary="Link a mission (JamBot)",
    responses=_CHANGE,
)
async def link_mission(
    session_id: str,
    mission_id: Annotated[str, Path(min_length=1, max_length=64)],
    service: ServiceDep,
    principal: PrincipalDep,
) -> JSON:
    if not 0 < len(mission_id) <= 64:
        raise InvalidInput("mission_id must be 1 to 64 characters")
    return service.hub.view(await service.link_mission(principal, session_id, mission_id))


@router.post(
    "/api/sessions/{session_id}/activity", summary="Record activity (JamBot)", responses=_CHANGE
)
async def activity(session_id: str, service: ServiceDep, principal: PrincipalDep) -> JSON:
    await service.touch(principal, session_id)
    return {"message": "Activity updated"}


@router.post(
    "/api/sessions/{session_id}/complete",
    summary="Complete a workspace (JamBot)",
    responses=_CHANGE,
)
async def complete(session_id: str, service: ServiceDep, principal: PrincipalDep) -> JSON:
    return service.hub.view(await service.complete(principal, session_id))


@router.post(
    "/api/sessions/{session_id}/messages",
    status_code=201,
    summary="Append a message",
    responses=_CHANGE,
)
async def add_message(
    session_id: str, body: NewMessage, service: ServiceDep, principal: PrincipalDep
) -> JSON:
    """Append to the workspace's chat (encrypted at rest when a key is configured)."""
    return await service.add_message(
        principal,
        session_id,
        role=body.role,
        content=body.content,
        metadata=body.message_metadata,
    )


@router.get("/api/sessions/{session_id}/messages", summary="Read the chat, a page at a time")
async def list_messages(
    session_id: str,
    service: ServiceDep,
    principal: PrincipalDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JSON:
    """``{chat_id, messages, total, page, per_page}``, oldest first."""
    items, total = await service.messages(principal, session_id, page=page, per_page=per_page)
    return {
        "chat_id": chat_id_for(session_id),
        "messages": items,
        "total": total,
        "page": page,
        "per_page": per_page,
    }


def _age(value: float | None, default: timedelta | None, unit: timedelta) -> timedelta:
    if value is not None:
        return value * unit
    return default if default is not None else unit * 0


@router.post(
    "/api/sessions/admin/cleanup/abandon",
    summary="Abandon idle workspaces (admin)",
    responses=_ADMIN,
)
async def cleanup_abandon(
    service: ServiceDep,
    principal: PrincipalDep,
    hours_threshold: Annotated[float | None, Query(ge=0, le=1e6)] = None,
) -> JSON:
    """Active workspaces idle longer than ``hours_threshold`` (default: the kind's idle
    timeout, 24 h) become ``abandoned``."""
    _admin(principal)
    kind = service.hub.kinds.get_kind("workspace")
    ids = await service.abandon_inactive(
        _age(hours_threshold, kind.idle_timeout, timedelta(hours=1))
    )
    return {"message": f"Abandoned {len(ids)} inactive sessions", "count": len(ids), "ids": ids}


@router.post(
    "/api/sessions/admin/cleanup/archive",
    summary="Archive abandoned workspaces (admin)",
    responses=_ADMIN,
)
async def cleanup_archive(
    service: ServiceDep,
    principal: PrincipalDep,
    days_threshold: Annotated[float | None, Query(ge=0, le=1e5)] = None,
) -> JSON:
    """Workspaces abandoned longer than ``days_threshold`` (default 7) become ``archived``."""
    _admin(principal)
    kind = service.hub.kinds.get_kind("workspace")
    ids = await service.archive_abandoned(
        _age(days_threshold, kind.archive_after, timedelta(days=1))
    )
    return {"message": f"Archived {len(ids)} abandoned sessions", "count": len(ids), "ids": ids}


@router.delete(
    "/api/sessions/admin/cleanup/delete",
    summary="Delete archived workspaces (admin)",
    responses=_ADMIN,
)
async def cleanup_delete(
    service: ServiceDep,
    principal: PrincipalDep,
    days_threshold: Annotated[float | None, Query(ge=0, le=1e5)] = None,
) -> JSON:
    """Workspaces archived longer than ``days_threshold`` (default 90) are deleted with
    their chat. JamBot uses ``DELETE``; ``POST`` is accepted too."""
    _admin(principal)
    kind = service.hub.kinds.get_kind("workspace")
    ids = await service.delete_archived(_age(days_threshold, kind.delete_after, timedelta(days=1)))
    return {"message": f"Deleted {len(ids)} archived sessions", "count": len(ids), "ids": ids}


@router.post(
    "/api/sessions/admin/cleanup/delete",
    summary="Delete archived workspaces (admin, POST)",
    responses=_ADMIN,
)
async def cleanup_delete_post(
    service: ServiceDep,
    principal: PrincipalDep,
    days_threshold: Annotated[float | None, Query(ge=0, le=1e5)] = None,
) -> JSON:
    """The same as ``DELETE``, for clients that cannot send one."""
    return await cleanup_delete(service, principal, days_threshold)
