"""The one-active-workspace rule (seed 002), as a consumer of the event log.

A user has at most one active workspace: creating one completes the user's other active
ones. JamBot's own route applies the rule at once, under a per-user lock, so its answer
already reflects it (``workflows/workspaces.py``). Workspaces created any other way (the
generic ``POST /api/sessions``, another node) are caught here, from the log: each creation
names the workspace ``Session N`` if it has no name and completes the owner's other active
workspaces. Every step is a compare-and-set transition, and a creation that another
creation superseded meanwhile is left alone, so handling an event twice (a crash before the
position was stored, two nodes) changes nothing the second time.

Across nodes, one user's workspace changes take turns through ``exclusive``: a lock on this
node and a short lease (``workspaces:<owner>``) in the store, so two nodes creating at the
same instant cannot both hand out ``Session N``. Which workspace stays is decided by the
order of the creations in the event log (the seq of their ``session.created``), never by
which node asks first: a newer active workspace always wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta

from ..core.errors import SessionHubError, Unavailable
from ..core.model import CREATED, Event, Session
from ..core.principal import SYSTEM_PRINCIPAL
from ..core.query import SessionQuery
from ..hub import Hub
from ..ids import random_hex
from ..kinds.workspace import ACTIVE

log = logging.getLogger("sessionhub.workspaces")

KIND = "workspace"
_NAME = re.compile(r"^Session (\d+)$")
#: The per-user lease across nodes: held for one creation (a crashed holder's lapses).
LEASE_TTL = timedelta(seconds=10)
LEASE_TRIES = 40


class WorkspaceRule:
    """Names new workspaces and keeps one active per user; shared by the JamBot route."""

    name = "workspaces"
    kinds: frozenset[str] | None = frozenset({KIND})

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        #: This node's name as the holder of the per-user leases.
        self._holder = f"workspaces-{random_hex(8)}"
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def lock(self, owner: str) -> asyncio.Lock:
        """Serialises one user's workspace creations on this node."""
        lock = self._locks.get(owner)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[owner] = lock
        return lock

    @asynccontextmanager
    async def exclusive(self, owner: str) -> AsyncIterator[None]:
        """One user's workspace changes, one at a time: on this node and across nodes."""
        store = self.hub.store
        name = f"workspaces:{owner}"
        async with self.lock(owner):
            for attempt in range(LEASE_TRIES):
                token = await store.acquire_lease(
                    name, self._holder, ttl=LEASE_TTL, now=self.hub.clock()
                )
                if token is not None:
                    break
                await asyncio.sleep(min(0.005 * 2**attempt, 0.2))
            else:
                raise Unavailable("another node keeps changing this user's workspaces; retry")
            try:
                yield
            finally:
                with contextlib.suppress(SessionHubError):
                    await store.release_lease(name, self._holder)

    # -- the consumer ------------------------------------------------------------------------

    async def begin(self) -> None:
        return None  # durable: the runner reads the stored position

    async def handle(self, events: Sequence[Event], start: int | None, position: int) -> bool:
        for event in events:
            if event.type == CREATED:
                await self.adopt(event.session_id, event.owner, after=event.seq)
        stored = await self.hub.store.commit_consumer(self.name, expected=start, position=position)
        return stored is not None

    async def end(self) -> None:
        return None

    async def adopt(self, session_id: str, owner: str, *, after: int | None = None) -> None:
        """Name the workspace if it has no name; complete its owner's other active ones -
        unless the owner created another workspace after it (``after``: the seq of its
        creation), whose own adoption decides: the newest workspace is the one that stays."""
        try:
            async with self.exclusive(owner):
                s = await self.hub.store.get(session_id)
                if s is None:
                    return
                if not s.attributes.get("name") and s.state == ACTIVE:
                    await self.hub.update(
                        SYSTEM_PRINCIPAL,
                        session_id,
                        attributes={"name": await self.next_name(owner)},
                        expected_version=s.version,
                    )
                if after is not None and await self._created_later(owner, after):
                    return
                await self.enforce_one_active(owner, keep=session_id)
        except SessionHubError as exc:
            log.debug("adopting workspace %s: %s", session_id, exc.detail)

    async def _created_later(self, owner: str, seq: int) -> bool:
        """Whether the log holds a workspace creation of ``owner`` after ``seq``."""
        last = seq
        for _ in range(20):  # bounded: 10,000 later workspace events
            later = await self.hub.store.events_after(last, limit=500, kinds=[KIND])
            if any(e.type == CREATED and e.owner == owner for e in later):
                return True
            if len(later) < 500:
                return False
            last = later[-1].seq or last
        return True  # too far behind to tell: leave it to the newer creations' turn

    # -- the rule ----------------------------------------------------------------------------

    async def next_name(self, owner: str) -> str:
        """``Session N`` with N one more than the highest N among the user's workspaces."""
        highest = 0
        cursor: str | None = None
        for _ in range(1000):  # bounded: 500k workspaces per user is far beyond real use
            page = await self.hub.store.find(
                SessionQuery(kinds=(KIND,), owner=owner, limit=500, cursor=cursor)
            )
            for s in page.items:
                m = _NAME.match(str(s.attributes.get("name") or ""))
                if m:
                    highest = max(highest, int(m.group(1)))
            cursor = page.next_cursor
            if cursor is None:
                break
        return f"Session {highest + 1}"

    async def _created_seq(self, session_id: str) -> int:
        """Where the session's creation stands in the event log (0 if it is not there)."""
        first = await self.hub.store.events(session_id, limit=1)
        return first[0].seq or 0 if first and first[0].type == CREATED else 0

    async def active_of(self, owner: str) -> list[Session]:
        page = await self.hub.store.find(
            SessionQuery(kinds=(KIND,), states=(ACTIVE,), owner=owner, limit=500)
        )
        return page.items

    async def enforce_one_active(self, owner: str, *, keep: str) -> list[str]:
        """Complete every active workspace of ``owner`` except ``keep`` (if it is active)."""
        actives = await self.active_of(owner)
        if keep not in {s.id for s in actives}:
            return []  # ``keep`` was itself superseded meanwhile: the newer one rules
        order = {s.id: await self._created_seq(s.id) for s in actives}
        if any(order[s.id] > order[keep] for s in actives):
            return []  # a workspace created after ``keep`` is active: its turn decides
        done: list[str] = []
        for s in actives:
            if s.id == keep:
                continue
            try:
                await self.hub.act(
                    SYSTEM_PRINCIPAL,
                    s.id,
                    "complete",
                    detail=f"superseded by {keep}",
                    expected_version=s.version,
                )
                done.append(s.id)
            except SessionHubError as exc:
                log.debug("could not complete %s: %s", s.id, exc.detail)
        return done
