"""Grace's session API (seed 004): remote access, screen share and the session routes.

Paths and JSON as the document shows them; timestamps in its style (naive UTC ISO, whole
seconds). Requests carry ``user_id``: it is accepted, but the owner is the authenticated
caller unless the caller is an admin (then ``user_id`` names the owner). Beyond the
document: ``/api/remote/deny/{id}``, the command workflow under ``/api/remote/{id}/commands``
and viewer admission under ``/api/screen_share/{id}/viewers`` (see ``docs/seeds/grace.md``).
This router must come before the generic one, whose ``GET /api/sessions/{id}`` would
otherwise answer ``/api/sessions/active`` and ``/api/sessions/history``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from ...core.errors import Forbidden, IllegalTransition, NotFound, SessionHubError
from ...core.model import JSON, Session
from ...core.principal import Principal
from ...core.query import SessionQuery
from ...hub import Hub
from ...kinds.remote_access import SAFETY_MODES, naive_iso, stop_reason
from ...kinds.screen_share import QUALITY, stream_url
from ...relay import frames as relay_feature
from ...workflows import remote
from ..deps import HubDep, JsonObject, PrincipalDep, RuntimeDep
from ..problems import NO_NUL, responses
from ..runtime import Runtime

router = APIRouter(prefix="/api", tags=["grace (seed 004)"])

REMOTE = "remote_access"
SCREEN = "screen_share"
KINDS = [REMOTE, SCREEN]
LIVE_STATES = ("pending_approval", "active")
ENDED_STATES = ("stopped", "denied", "dropped")


class NotPending(SessionHubError):
    """Approving or denying a session that is not waiting for it (Grace answers 400)."""

    status = 400
    title = "Not pending approval"


def _started(*fields: str) -> dict[int | str, Any]:
    """The answer to a start: the new session's id (which the other routes take)."""
    props: dict[str, Any] = {"success": {"const": True}, "session_id": {"type": "string"}}
    props.update({f: {"type": "string"} for f in fields})
    schema = {
        "type": "object",
        "required": ["success", "session_id", "status"],
        "properties": props,
    }
    return {200: {"content": {"application/json": {"schema": schema}}}}


_REASON = Field(default=None, max_length=1000, pattern=NO_NUL)
_USER = Field(default=None, max_length=200, pattern=NO_NUL)


# -- request bodies (lenient: the real client may send more) -----------------------------


class StartRemote(BaseModel):
    model_config = ConfigDict(extra="ignore")

    user_id: str | None = _USER
    safety_mode: str = Field(
        default="supervised", max_length=32, json_schema_extra={"enum": list(SAFETY_MODES)}
    )
    metadata: JsonObject = Field(
        default_factory=dict,
        json_schema_extra={"propertyNames": {"not": {"const": remote.COMMANDS_KEY}}},
    )


class StopRemote(BaseModel):
    model_config = ConfigDict(extra="ignore")

    reason: str | None = _REASON


class Decision(BaseModel):
    model_config = ConfigDict(extra="ignore")

    reason: str | None = _REASON


class StartScreen(BaseModel):
    model_config = ConfigDict(extra="ignore")

    user_id: str | None = _USER
    quality: str = Field(default="medium", max_length=16, json_schema_extra={"enum": list(QUALITY)})
    metadata: JsonObject = Field(default_factory=dict)
    viewers: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=relay_feature.MAX_VIEWERS
    )


class StopScreen(BaseModel):
    model_config = ConfigDict(extra="ignore")

    session_id: str = Field(max_length=64)
    reason: str | None = _REASON


class SubmitCommand(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: str = Field(min_length=1, max_length=remote.MAX_COMMAND_CHARS)
    writes: bool = Field(
        default=False, strict=True, description="Whether the command changes anything."
    )


class CompleteCommand(BaseModel):
    model_config = ConfigDict(extra="forbid")

    success: bool = Field(default=True, strict=True)
    exit_code: int | None = Field(default=None, ge=-(2**31), le=2**31 - 1)
    output: str | None = Field(default=None, max_length=1_000_000)


class Admit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=200, pattern=NO_NUL)


# -- views ---------------------------------------------------------------------------------


def _owner(principal: Principal, user_id: str | None) -> str:
    return user_id if principal.is_admin and user_id else principal.sub


def _last_activity(hub: Hub, s: Session) -> str | None:
    pending = hub.pending_activity(s.id)
    last = max(s.last_activity_at, pending) if pending else s.last_activity_at
    return naive_iso(last)


def _ended(hub: Hub, s: Session) -> bool:
    return s.state in hub.kind_of(s).lifecycle.ended


def remote_status(hub: Hub, s: Session) -> JSON:
    """The document's two shapes: live (active or pending) and stopped (any end)."""
    duration = s.duration_seconds(hub.clock())
    if _ended(hub, s):
        return {
            "session_id": s.id,
            "status": s.state,
            "stopped_at": naive_iso(s.ended_at),
            "stop_reason": stop_reason(s),
            "duration_seconds": duration,
        }
    return {
        "session_id": s.id,
        "status": s.state,
        "type": s.kind,
        "user_id": s.owner,
        "safety_mode": s.attributes.get("safety_mode"),
        "started_at": naive_iso(s.started_at or s.created_at),
        "duration_seconds": duration,
        "commands_executed": s.counters.get("commands_executed", 0),
        "last_activity": _last_activity(hub, s),
    }


def screen_status(runtime: Runtime, s: Session) -> JSON:
    hub = runtime.hub
    frames = s.counters.get("frames_captured", 0) + runtime.relay.unflushed(s.id)
    out: JSON = {
        "session_id": s.id,
        "status": s.state,
        "type": s.kind,
        "user_id": s.owner,
        "quality": s.attributes.get("quality"),
        "stream_url": stream_url(s.id),
        "started_at": naive_iso(s.started_at or s.created_at),
        "duration_seconds": s.duration_seconds(hub.clock()),
        "frames_captured": frames,
    }
    if _ended(hub, s):
        out["stopped_at"] = naive_iso(s.ended_at)
        out["stop_reason"] = stop_reason(s)
    return out


def _status(runtime: Runtime, s: Session) -> JSON:
    return remote_status(runtime.hub, s) if s.kind == REMOTE else screen_status(runtime, s)


async def _listing(
    runtime: Runtime,
    principal: Principal,
    states: Iterable[str],
    limit: int,
    shape: Callable[[Runtime, Session], JSON],
) -> tuple[list[JSON], int]:
    """Both kinds' sessions in ``states`` the caller may see, newest first, in ``shape``;
    and how many there are in all."""
    q = SessionQuery(kinds=tuple(KINDS), states=tuple(states), limit=limit)
    page = await runtime.hub.list_sessions(principal, q)
    return [shape(runtime, s) for s in page.items], await runtime.hub.count(principal, q)


def _history_item(runtime: Runtime, s: Session) -> JSON:
    item: JSON = {
        "session_id": s.id,
        "type": s.kind,
        "status": s.state,
        "started_at": naive_iso(s.started_at or s.created_at),
        "stopped_at": naive_iso(s.ended_at),
        "stop_reason": stop_reason(s),
        "duration_seconds": s.duration_seconds(runtime.hub.clock()),
    }
    if s.kind == REMOTE:
        item["commands_executed"] = s.counters.get("commands_executed", 0)
    else:
        item["frames_captured"] = s.counters.get("frames_captured", 0)
    return item


async def _get(hub: Hub, principal: Principal, session_id: str, kind: str) -> Session:
    s = await hub.get(principal, session_id)
    if s.kind != kind:
        label = "remote access session" if kind == REMOTE else "screen share"
        raise NotFound(f"no {label} {session_id!r}")
    return s


# -- remote access ---------------------------------------------------------------------------


@router.post("/remote/start", summary="Start a remote access session", responses=_started("status"))
async def remote_start(body: StartRemote, hub: HubDep, principal: PrincipalDep) -> JSON:
    """``autonomous`` waits for an admin (``pending_approval``); the other modes start active."""
    s, _ = await hub.create(
        principal,
        REMOTE,
        owner=_owner(principal, body.user_id),
        attributes={"safety_mode": body.safety_mode},
        metadata=remote.clean_user_metadata(body.metadata),
    )
    return {
        "success": True,
        "session_id": s.id,
        "status": s.state,
        "requires_approval": s.state == "pending_approval",
        "message": "Session created successfully",
    }


@router.post(
    "/remote/stop/{session_id}",
    summary="Stop a remote access session",
    responses=responses(409),
)
async def remote_stop(
    session_id: str, hub: HubDep, principal: PrincipalDep, body: StopRemote | None = None
) -> JSON:
    await _get(hub, principal, session_id, REMOTE)
    reason = (body.reason if body else None) or "User requested"
    s = await hub.act(principal, session_id, "stop", detail=reason)
    return {
        "success": True,
        "session_id": s.id,
        "status": s.state,
        "commands_executed": s.counters.get("commands_executed", 0),
        "duration_seconds": s.duration_seconds(hub.clock()),
    }


@router.get("/remote/status/{session_id}", summary="A remote access session's status")
async def remote_status_route(session_id: str, hub: HubDep, principal: PrincipalDep) -> JSON:
    return remote_status(hub, await _get(hub, principal, session_id, REMOTE))


async def _decide(
    hub: Hub, principal: Principal, session_id: str, action: str, reason: str | None
) -> Session:
    s = await _get(hub, principal, session_id, REMOTE)
    if not principal.is_admin:
        # Another role is refused whatever the session's state (403 before Grace's 400).
        raise Forbidden("only admins approve or deny remote access")
    if s.state != "pending_approval":
        raise NotPending(f"session {session_id!r} is {s.state!r}, not pending approval")
    try:
        return await hub.act(principal, session_id, action, detail=reason)
    except IllegalTransition as exc:  # decided concurrently by someone else
        raise NotPending(exc.detail) from None


#: Deciding a session that waits for nobody is Grace's 400 (``NotPending``).
_DECISION = responses(400, 403)


@router.post(
    "/remote/approve/{session_id}",
    summary="Approve an autonomous session (admin)",
    responses=_DECISION,
)
async def remote_approve(session_id: str, hub: HubDep, principal: PrincipalDep) -> JSON:
    """Admins only (403). A session not waiting for approval is Grace's 400."""
    s = await _decide(hub, principal, session_id, "approve", None)
    return {"success": True, "session_id": s.id, "status": s.state}


@router.post(
    "/remote/deny/{session_id}", summary="Deny an autonomous session (admin)", responses=_DECISION
)
async def remote_deny(
    session_id: str, hub: HubDep, principal: PrincipalDep, body: Decision | None = None
) -> JSON:
    """Admins only (403). A session not waiting for approval is Grace's 400."""
    s = await _decide(hub, principal, session_id, "deny", body.reason if body else None)
    return {"success": True, "session_id": s.id, "status": s.state}


#: Commands: another role (403), a session or command in the wrong state (409).
_COMMAND = responses(403, 409)


@router.post("/remote/{session_id}/commands", summary="Submit a command", responses=_COMMAND)
async def command_submit(
    session_id: str, body: SubmitCommand, hub: HubDep, principal: PrincipalDep
) -> JSON:
    """Supervised: held for approval. Read-only: writes refused (403). Autonomous: approved."""
    cmd = await remote.submit(hub, principal, session_id, body.command, writes=body.writes)
    return {"success": True, "session_id": session_id, "command": cmd}


@router.get("/remote/{session_id}/commands", summary="A session's commands")
async def command_list(
    session_id: str,
    hub: HubDep,
    principal: PrincipalDep,
    status: Annotated[
        str | None, Query(max_length=32, json_schema_extra={"enum": list(remote.STATUSES)})
    ] = None,
) -> JSON:
    cmds = await remote.list_commands(hub, principal, session_id, status=status)
    return {"session_id": session_id, "commands": cmds, "total": len(cmds)}


@router.post(
    "/remote/{session_id}/commands/{command_id}/approve",
    summary="Approve a command",
    responses=_COMMAND,
)
async def command_approve(
    session_id: str, command_id: str, hub: HubDep, principal: PrincipalDep
) -> JSON:
    cmd = await remote.decide(hub, principal, session_id, command_id, approve=True)
    return {"success": True, "session_id": session_id, "command": cmd}


@router.post(
    "/remote/{session_id}/commands/{command_id}/reject",
    summary="Reject a command",
    responses=_COMMAND,
)
async def command_reject(
    session_id: str, command_id: str, hub: HubDep, principal: PrincipalDep
) -> JSON:
    cmd = await remote.decide(hub, principal, session_id, command_id, approve=False)
    return {"success": True, "session_id": session_id, "command": cmd}


@router.post(
    "/remote/{session_id}/commands/{command_id}/complete",
    summary="Report a command's result",
    responses=_COMMAND,
)
async def command_complete(
    session_id: str,
    command_id: str,
    hub: HubDep,
    principal: PrincipalDep,
    body: CompleteCommand | None = None,
) -> JSON:
    body = body or CompleteCommand()
    cmd = await remote.complete(
        hub,
        principal,
        session_id,
        command_id,
        success=body.success,
        exit_code=body.exit_code,
        output=body.output,
    )
    s = await hub.get(principal, session_id)
    return {
        "success": True,
        "session_id": session_id,
        "command": cmd,
        "commands_executed": s.counters.get("commands_executed", 0),
    }


# -- screen share ----------------------------------------------------------------------------


@router.post(
    "/screen_share/start",
    summary="Start a screen share",
    responses=_started("status", "stream_url", "quality"),
)
async def screen_start(body: StartScreen, hub: HubDep, principal: PrincipalDep) -> JSON:
    attributes: JSON = {"quality": body.quality}
    if body.viewers:
        attributes["viewers"] = sorted(set(body.viewers))
    s, _ = await hub.create(
        principal,
        SCREEN,
        owner=_owner(principal, body.user_id),
        attributes=attributes,
        metadata=body.metadata,
    )
    return {
        "success": True,
        "session_id": s.id,
        "status": s.state,
        "stream_url": stream_url(s.id),
        "quality": s.attributes.get("quality"),
    }


@router.post("/screen_share/stop", summary="Stop a screen share", responses=responses(404, 409))
async def screen_stop(body: StopScreen, runtime: RuntimeDep, principal: PrincipalDep) -> JSON:
    hub = runtime.hub
    await _get(hub, principal, body.session_id, SCREEN)
    # Count every frame received so far into the session before it ends, whichever node
    # holds the sharer.
    await runtime.relay.count_everywhere(body.session_id)
    s = await hub.act(principal, body.session_id, "stop", detail=body.reason)
    return {
        "success": True,
        "session_id": s.id,
        "status": s.state,
        "frames_captured": s.counters.get("frames_captured", 0),
        "duration_seconds": s.duration_seconds(hub.clock()),
    }


@router.get("/screen_share/status/{session_id}", summary="A screen share's status")
async def screen_status_route(
    session_id: str, runtime: RuntimeDep, principal: PrincipalDep
) -> JSON:
    s = await _get(runtime.hub, principal, session_id, SCREEN)
    if s.state == "active" and await runtime.relay.count_everywhere(session_id):
        s = await _get(runtime.hub, principal, session_id, SCREEN)  # counted elsewhere: reread
    return screen_status(runtime, s)


@router.post(
    "/screen_share/{session_id}/viewers",
    summary="Admit a viewer (owner or admin)",
    responses=responses(403, 409),
)
async def screen_admit(session_id: str, body: Admit, hub: HubDep, principal: PrincipalDep) -> JSON:
    viewers = await relay_feature.set_admitted(
        hub, principal, session_id, body.user_id, admitted=True
    )
    return {"success": True, "session_id": session_id, "viewers": viewers}


@router.delete(
    "/screen_share/{session_id}/viewers/{user_id}",
    summary="Remove a viewer (owner or admin)",
    responses=responses(403, 409),
)
async def screen_dismiss(
    session_id: str, user_id: str, hub: HubDep, principal: PrincipalDep
) -> JSON:
    viewers = await relay_feature.set_admitted(hub, principal, session_id, user_id, admitted=False)
    return {"success": True, "session_id": session_id, "viewers": viewers}


# -- sessions --------------------------------------------------------------------------------


@router.get("/sessions/active", summary="Live remote access and screen share sessions")
async def sessions_active(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> JSON:
    """Yours (admins: everyone's), newest first, each in its status shape."""
    items, total = await _listing(runtime, principal, LIVE_STATES, limit, _status)
    return {"active_sessions": items, "total": total}


@router.post(
    "/sessions/heartbeat/{session_id}", summary="Keep a session alive", responses=responses(409)
)
async def sessions_heartbeat(session_id: str, hub: HubDep, principal: PrincipalDep) -> JSON:
    await hub.heartbeat(principal, session_id)
    return {"success": True}


@router.post("/sessions/check_dropped", summary="Drop sessions without heartbeats")
async def sessions_check_dropped(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    timeout_minutes: Annotated[float, Query(gt=0, le=10080)] = 5,
) -> JSON:
    """Admins check everyone's sessions; others only their own."""
    ids = await remote.drop_inactive(
        runtime.hub, principal, KINDS, timedelta(minutes=timeout_minutes)
    )
    return {"dropped_sessions": ids, "count": len(ids)}


@router.get("/sessions/history", summary="Ended remote access and screen share sessions")
async def sessions_history(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JSON:
    items, total = await _listing(runtime, principal, ENDED_STATES, limit, _history_item)
    return {"history": items, "total": total}
