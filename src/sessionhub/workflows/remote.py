"""The remote-access command workflow and the owner-scoped drop check (Grace, seed 004).

Commands are kept in the session's metadata under the reserved key ``_commands`` (a list,
oldest first), so they live in the existing sessions table, are encrypted at rest with the
metadata when a key is configured, cannot be set or erased through the generic API
(``RemoteAccess.reserved_metadata``), and
every change to them is one ``session.updated`` event on the session's topics (an agent
subscribed to ``session:<id>`` sees approvals live). Each change is a compare-and-set on
the session version, retried a few times, so concurrent submissions never lose a command.

A command is ``{"id", "command", "writes", "status", "submitted_by", "submitted_at",
"decided_by", "decided_at", "completed_at", "success", "exit_code", "output"}`` with
``status`` one of ``pending_approval`` -> ``approved`` | ``rejected``, ``approved`` ->
``completed``. The session's ``safety_mode`` decides the start: ``supervised`` holds every
command in ``pending_approval`` for the owner or an admin; ``autonomous`` and ``read_only``
approve at once, and ``read_only`` refuses commands that write (403). Completing a command
adds one to the ``commands_executed`` counter in the same update.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import orjson

from ..core.engine import MAX_METADATA_BYTES
from ..core.errors import (
    Forbidden,
    IllegalTransition,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    VersionConflict,
)
from ..core.model import JSON, Session
from ..core.principal import Principal
from ..hub import Hub
from ..kinds.remote_access import naive_iso

COMMANDS_KEY = "_commands"
KIND = "remote_access"
#: Open (pending or approved) commands allowed at once per session.
MAX_OPEN = 50
#: Finished commands kept for the record; older ones are trimmed (the counter keeps the total).
MAX_FINISHED = 50
MAX_COMMAND_CHARS = 2000
MAX_OUTPUT_CHARS = 1000
OPEN = frozenset({"pending_approval", "approved"})
STATUSES = ("pending_approval", "approved", "rejected", "completed")
_ATTEMPTS = 8

# (session, commands) -> (new commands, counter increments, result)
Mutation = Callable[[Session, list[JSON]], tuple[list[JSON], dict[str, int], JSON]]


def commands_of(session: Session) -> list[JSON]:
    """The session's commands, oldest first (a copy)."""
    value = session.metadata.get(COMMANDS_KEY)
    return [dict(c) for c in value] if isinstance(value, list) else []


def public_metadata(session: Session) -> JSON:
    """The metadata without the reserved commands key (what the user gave)."""
    return {k: v for k, v in session.metadata.items() if k != COMMANDS_KEY}


async def _remote(hub: Hub, principal: Principal, session_id: str) -> Session:
    s = await hub.get(principal, session_id)
    if s.kind != KIND:
        raise NotFound(f"no remote access session {session_id!r}")
    return s


def _size(value: Any) -> int:
    return len(orjson.dumps(value))


def _trim(commands: list[JSON], budget: int) -> list[JSON]:
    """Drop the oldest finished commands beyond ``MAX_FINISHED`` or beyond ``budget`` bytes."""
    finished = [c for c in commands if c.get("status") not in OPEN]
    drop = {id(c) for c in finished[: max(0, len(finished) - MAX_FINISHED)]}
    kept = [c for c in commands if id(c) not in drop]
    for c in finished:
        if _size(kept) <= budget:
            break
        if id(c) not in drop:
            kept = [k for k in kept if k is not c]
    if _size(kept) > budget:
        raise InvalidInput(
            "this session's open commands fill its record; complete or reject some first"
        )
    return kept


def _find(commands: list[JSON], command_id: str) -> JSON:
    for c in commands:
        if c.get("id") == command_id:
            return c
    raise NotFound(f"no command {command_id!r} in this session")


async def _mutate(hub: Hub, principal: Principal, session_id: str, fn: Mutation) -> JSON:
    """Apply ``fn`` to the commands under compare-and-set, retrying on a concurrent change."""
    for _ in range(_ATTEMPTS):
        s = await _remote(hub, principal, session_id)
        commands, counters, result = fn(s, commands_of(s))
        # The engine bounds the whole metadata; leave room for what the user stored there.
        budget = MAX_METADATA_BYTES - _size(public_metadata(s)) - 1024
        try:
            await hub.update(
                principal,
                session_id,
                metadata={COMMANDS_KEY: _trim(commands, budget)},
                merge_metadata=True,
                internal=True,
                counters=counters or None,
                expected_version=s.version,
            )
        except (PreconditionFailed, VersionConflict):
            continue  # someone changed the session in between: re-read and re-apply
        return result
    raise VersionConflict("the session changed concurrently too often; retry the request")


def _require_active(s: Session) -> None:
    if s.state != "active":
        raise IllegalTransition(
            f"session is {s.state!r}; commands are accepted only while it is 'active'"
        )


async def submit(
    hub: Hub, principal: Principal, session_id: str, command: str, *, writes: bool
) -> JSON:
    """Submit a command; returns it with its initial status."""
    if not command.strip():
        raise InvalidInput("command must not be empty")
    if len(command) > MAX_COMMAND_CHARS:
        raise InvalidInput(f"command is longer than {MAX_COMMAND_CHARS} characters")

    def fn(s: Session, commands: list[JSON]) -> tuple[list[JSON], dict[str, int], JSON]:
        _require_active(s)
        mode = s.attributes.get("safety_mode")
        if writes and mode == "read_only":
            raise Forbidden("this session is read_only: commands that write are refused")
        if sum(1 for c in commands if c.get("status") in OPEN) >= MAX_OPEN:
            raise InvalidInput(f"this session already has {MAX_OPEN} open commands")
        now = naive_iso(hub.clock())
        supervised = mode == "supervised"
        cmd: JSON = {
            "id": f"cmd_{secrets.token_hex(4)}",
            "command": command,
            "writes": writes,
            "status": "pending_approval" if supervised else "approved",
            "submitted_by": principal.sub,
            "submitted_at": now,
            "decided_by": None if supervised else "policy",
            "decided_at": None if supervised else now,
            "completed_at": None,
            "success": None,
            "exit_code": None,
            "output": None,
        }
        return [*commands, cmd], {}, cmd

    return await _mutate(hub, principal, session_id, fn)


async def decide(
    hub: Hub, principal: Principal, session_id: str, command_id: str, *, approve: bool
) -> JSON:
    """Approve or reject a command held for approval (owner or admin)."""

    def fn(s: Session, commands: list[JSON]) -> tuple[list[JSON], dict[str, int], JSON]:
        _require_active(s)
        cmd = _find(commands, command_id)
        if cmd.get("status") != "pending_approval":
            raise IllegalTransition(
                f"command {command_id!r} is {cmd.get('status')!r}, not 'pending_approval'"
            )
        cmd.update(
            status="approved" if approve else "rejected",
            decided_by=principal.sub,
            decided_at=naive_iso(hub.clock()),
        )
        return commands, {}, cmd

    return await _mutate(hub, principal, session_id, fn)


async def complete(
    hub: Hub,
    principal: Principal,
    session_id: str,
    command_id: str,
    *,
    success: bool = True,
    exit_code: int | None = None,
    output: str | None = None,
) -> JSON:
    """The agent reports that an approved command ran; counts it in ``commands_executed``."""

    def fn(s: Session, commands: list[JSON]) -> tuple[list[JSON], dict[str, int], JSON]:
        _require_active(s)
        cmd = _find(commands, command_id)
        if cmd.get("status") != "approved":
            raise IllegalTransition(
                f"command {command_id!r} is {cmd.get('status')!r}; only an approved command "
                "can be completed"
            )
        cmd.update(
            status="completed",
            completed_at=naive_iso(hub.clock()),
            success=success,
            exit_code=exit_code,
            output=None if output is None else output[:MAX_OUTPUT_CHARS],
        )
        return commands, {"commands_executed": 1}, cmd

    return await _mutate(hub, principal, session_id, fn)


async def list_commands(
    hub: Hub, principal: Principal, session_id: str, *, status: str | None = None
) -> list[JSON]:
    """The session's commands, oldest first, optionally only those with ``status``."""
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {list(STATUSES)}")
    s = await _remote(hub, principal, session_id)
    return [c for c in commands_of(s) if status is None or c.get("status") == status]


async def drop_inactive(
    hub: Hub, principal: Principal, kinds: list[str], max_idle: timedelta
) -> list[str]:
    """Drop sessions of ``kinds`` without activity for ``max_idle``.

    Admins check every user's sessions; anyone else only their own, so a short timeout cannot
    be used to drop other people's sessions.
    """
    owner = None if principal.is_admin else principal.sub
    return await hub.drop_inactive(kinds, max_idle, owner=owner)


def clean_user_metadata(metadata: Any) -> JSON:
    """Metadata a client may set at start: an object without the reserved key."""
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata must be an object")
    if COMMANDS_KEY in metadata:
        raise InvalidInput(f"metadata key {COMMANDS_KEY!r} is reserved")
    return metadata
