"""Workspaces (seed 002): one active workspace per user, recovery, the chat store, clean-up.

The lifecycle is the ``workspace`` kind's; this module adds what spans several sessions or
lives beside them:

* **one active workspace per user** - creating one completes the user's other active ones.
  Creates of one user are serialised by a per-user lock, and the same rule, as a consumer of
  the event log (``consumers/workspaces.py``), applies to workspaces created through the
  generic API or on another node, so the rule holds whichever route created the session.
* **recovery** - the user's active workspace with its chat and metadata, touching activity.
* **chat** - messages kept by the store (``Store.append_message``), content and metadata
  sealed at rest (encrypted when a key is configured), read in pages; deleting a workspace
  deletes its chat in the same transaction (``Store.delete``).
* **clean-up** - the admin sweeps of JamBot (abandon idle, archive abandoned, delete
  archived) with thresholds given per call; the scheduler runs the same with the kind's ages.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from ..consumers.workspaces import WorkspaceRule
from ..core.errors import IllegalTransition, InvalidInput, NotFound
from ..core.model import JSON, Session, iso
from ..core.principal import Principal
from ..core.query import Due, SessionQuery
from ..hub import Hub
from ..kinds.workspace import (
    ABANDONED,
    ACTIVE,
    ARCHIVED,
    COMPLETED,
    STATUSES,
    chat_id_for,
)
from ..store.base import ChatMessage, Store

log = logging.getLogger("sessionhub.workspaces")

KIND = "workspace"
#: Message roles of JamBot's ``MessageRole``.
ROLES = ("user", "assistant", "system", "tool", "status")
MAX_MESSAGE_CHARS = 200_000
# PUT status -> lifecycle action.
_STATUS_ACTIONS = {COMPLETED: "complete", ABANDONED: "abandon", ARCHIVED: "archive"}


def _message_json(m: ChatMessage) -> JSON:
    """A message in JamBot's ``ChatMessage`` shape."""
    return {
        "id": m.id,
        "chat_id": chat_id_for(m.session_id),
        "user_session_id": m.session_id,
        "sequence_order": m.position,
        "role": m.role,
        "content": m.content,
        "message_metadata": m.metadata,
        "created_at": iso(m.created_at),
    }


class ChatStore:
    """A workspace's chat messages, oldest first (kept by the store, sealed at rest)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def append(
        self, session_id: str, *, role: str, content: str, metadata: JSON, now: datetime
    ) -> JSON:
        """Store one message; returns it as read back (with its ``sequence_order``)."""
        message_id = str(uuid.uuid4())
        position = await self._store.append_message(
            session_id, message_id=message_id, role=role, content=content, metadata=metadata, at=now
        )
        return _message_json(
            ChatMessage(
                id=message_id,
                session_id=session_id,
                position=position,
                role=role,
                content=content,
                metadata=metadata,
                created_at=now,
            )
        )

    async def count(self, session_id: str) -> int:
        return await self._store.count_messages(session_id)

    async def read(self, session_id: str, *, offset: int, limit: int) -> list[JSON]:
        """Messages ``offset`` .. ``offset + limit`` in the order they were appended."""
        messages = await self._store.read_messages(session_id, offset=offset, limit=limit)
        return [_message_json(m) for m in messages]

    async def latest(self, session_id: str, limit: int) -> tuple[list[JSON], int]:
        """The newest ``limit`` messages (oldest first) and the total count."""
        total = await self.count(session_id)
        offset = max(0, total - limit)
        return await self.read(session_id, offset=offset, limit=limit), total


class WorkspaceService:
    """The workspace operations of seed 002 over the hub. One per runtime."""

    def __init__(self, hub: Hub, rule: WorkspaceRule | None = None) -> None:
        self.hub = hub
        self.chat = ChatStore(hub.store)
        #: The one-active rule; also a consumer of the event log for workspaces created by
        #: other routes (the runtime runs it with the other consumers).
        self.rule = rule or WorkspaceRule(hub)
        #: Waits until the consumers have read the log to its end (set by the runtime).
        self.settle: Callable[[], Awaitable[None]] | None = None

    async def close(self) -> None:
        await self.drain()

    async def drain(self) -> None:
        """Wait until workspaces created by other routes have been adopted (tests, and an
        orderly shutdown)."""
        if self.settle is not None:
            await self.settle()

    # -- create and the one-active rule --------------------------------------------------

    async def create(
        self,
        principal: Principal,
        *,
        name: str | None = None,
        session_metadata: JSON | None = None,
        owner: str | None = None,
    ) -> Session:
        """A new active workspace (named ``Session N`` if no name is given); the user's
        other active workspaces are completed."""
        owner = owner or principal.sub
        async with self.rule.exclusive(owner):
            if not name:
                name = await self.rule.next_name(owner)
            session, _ = await self.hub.create(
                principal,
                KIND,
                owner=owner,
                attributes={"name": name},
                metadata=session_metadata or {},
            )
            await self.rule.enforce_one_active(owner, keep=session.id)
        return session

    # -- reads ---------------------------------------------------------------------------

    async def get(self, principal: Principal, session_id: str) -> Session:
        s = await self.hub.get(principal, session_id)
        if s.kind != KIND:
            raise NotFound(f"no workspace {session_id!r}")
        return s

    async def list_own(
        self, principal: Principal, *, page: int, per_page: int, status: str | None
    ) -> tuple[list[Session], int]:
        """The caller's own workspaces, newest first, one page; and how many there are."""
        states = (status,) if status else ()
        q = SessionQuery(
            kinds=(KIND,),
            states=states,
            owner=principal.sub,
            limit=per_page,
            offset=(page - 1) * per_page,
        )
        items = (await self.hub.list_sessions(principal, q)).items
        total = await self.hub.count(principal, q)
        return items, total

    def _activity(self, s: Session) -> datetime:
        pending = self.hub.pending_activity(s.id)
        return max(s.last_activity_at, pending) if pending else s.last_activity_at

    async def recover(
        self, principal: Principal, *, message_limit: int
    ) -> tuple[Session, list[JSON], int] | None:
        """The caller's active workspace with the newest activity, touched, with its newest
        ``message_limit`` chat messages and the total count; None if there is none."""
        actives = await self.rule.active_of(principal.sub)
        if not actives:
            return None
        s = max(actives, key=lambda x: (self._activity(x), x.created_at, x.id))
        await self.hub.heartbeat(principal, s.id)
        messages, total = await self.chat.latest(s.id, message_limit)
        return s, messages, total

    # -- changes -------------------------------------------------------------------------

    async def update(
        self,
        principal: Principal,
        session_id: str,
        *,
        name: str | None = None,
        status: str | None = None,
        mission_id: str | None = None,
        session_metadata: JSON | None = None,
        assets: list[Any] | None = None,
    ) -> Session:
        """JamBot's ``PUT``: set the given fields (``session_metadata`` is replaced), then
        move to ``status`` if it differs. ``active`` cannot be re-entered (forward-only)."""
        s = await self.get(principal, session_id)
        if status is not None and status not in STATUSES:
            raise InvalidInput(f"status must be one of {list(STATUSES)}")
        attrs: JSON = {}
        if name is not None:
            attrs["name"] = name
        if mission_id is not None:
            attrs["mission_id"] = mission_id
        if assets is not None:
            attrs["assets"] = assets
        if attrs or session_metadata is not None:
            s = await self.hub.update(
                principal, session_id, attributes=attrs or None, metadata=session_metadata
            )
        if status is not None and status != s.state:
            if status == ACTIVE:
                raise IllegalTransition(
                    f"workspace is {s.state!r}; it cannot become active again (create a new one)",
                    current=self.hub.view(s),
                )
            s = await self.hub.act(principal, session_id, _STATUS_ACTIONS[status])
        return s

    async def link_mission(self, principal: Principal, session_id: str, mission_id: str) -> Session:
        await self.get(principal, session_id)
        return await self.hub.update(principal, session_id, attributes={"mission_id": mission_id})

    async def touch(self, principal: Principal, session_id: str) -> datetime:
        """Record activity (coalesced like a heartbeat; no new version)."""
        await self.get(principal, session_id)
        return await self.hub.heartbeat(principal, session_id)

    async def complete(self, principal: Principal, session_id: str) -> Session:
        await self.get(principal, session_id)
        return await self.hub.act(principal, session_id, "complete", detail="completed by user")

    # -- chat ----------------------------------------------------------------------------

    async def add_message(
        self,
        principal: Principal,
        session_id: str,
        *,
        role: str,
        content: str,
        metadata: JSON | None = None,
    ) -> JSON:
        """Append a chat message; an active workspace's activity is touched."""
        s = await self.get(principal, session_id)
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {list(ROLES)}")
        if len(content) > MAX_MESSAGE_CHARS:
            raise InvalidInput(f"content is longer than {MAX_MESSAGE_CHARS} characters")
        if s.state == ARCHIVED:
            raise IllegalTransition("workspace is archived; its chat is read-only")
        message = await self.chat.append(
            session_id, role=role, content=content, metadata=metadata or {}, now=self.hub.clock()
        )
        if s.state == ACTIVE:
            await self.hub.heartbeat(principal, session_id)
        return message

    async def messages(
        self, principal: Principal, session_id: str, *, page: int, per_page: int
    ) -> tuple[list[JSON], int]:
        await self.get(principal, session_id)
        total = await self.chat.count(session_id)
        items = await self.chat.read(session_id, offset=(page - 1) * per_page, limit=per_page)
        return items, total

    # -- clean-up (admin) ----------------------------------------------------------------

    async def _due(self, states: frozenset[str], column: str, before: datetime) -> list[Session]:
        out: list[Session] = []
        seen: set[str] = set()
        for _ in range(200):  # bounded: 100k sessions per call
            batch = [
                s
                for s in await self.hub.store.due(Due(KIND, states, column, before, limit=500))
                if s.id not in seen
            ]
            if not batch:
                break
            out += batch
            seen.update(s.id for s in batch)
            if len(batch) < 500:
                break
        return out

    async def abandon_inactive(self, older_than: timedelta) -> list[str]:
        """Active workspaces without activity for ``older_than`` -> abandoned (idle_timeout)."""
        await self.hub.flush_heartbeats()
        before = self.hub.clock() - older_than
        due = await self._due(frozenset({ACTIVE}), "last_activity_at", before)
        return await self.hub.apply_due(due, "abandon", "idle_timeout", before)

    async def archive_abandoned(self, older_than: timedelta) -> list[str]:
        """Workspaces abandoned for ``older_than`` -> archived."""
        before = self.hub.clock() - older_than
        due = await self._due(frozenset({ABANDONED}), "updated_at", before)
        return await self.hub.apply_due(due, "archive", None, before)

    async def delete_archived(self, older_than: timedelta) -> list[str]:
        """Workspaces archived for ``older_than`` -> deleted, with their chat."""
        before = self.hub.clock() - older_than
        done: list[str] = []
        for s in await self._due(frozenset({ARCHIVED}), "updated_at", before):
            await self.hub.delete(s)  # the store deletes its chat in the same transaction
            done.append(s.id)
        return done
