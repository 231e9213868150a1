"""The hub: the one place where core, kinds, store and broker meet.

A command goes transport -> hub -> core/kind (pure) -> store (one transaction) -> broker.
Per session, commit and publish happen under one lock, so events reach each topic in
version order; across sessions and nodes, the store's compare-and-set on ``version``
decides who wins.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .broker.base import Broker
from .core import engine
from .core.engine import Change
from .core.errors import (
    DuplicateId,
    Forbidden,
    IllegalTransition,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    SessionHubError,
    VersionConflict,
)
from .core.kind import Kind
from .core.model import DELETED, JSON, Event, Session, iso
from .core.principal import SYSTEM_PRINCIPAL, Principal
from .core.query import Due, Page, SessionQuery
from .core.streams import StreamPosition
from .ids import random_hex
from .kinds.registry import Registry
from .outbox import Outbox, encode
from .presence.base import Presence
from .presence.memory import MemoryPresence
from .store.base import Store
from .tasks import stop

log = logging.getLogger("sessionhub.hub")

Clock = Callable[[], datetime]
EventListener = Callable[[Event, Change | None], None]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class HubStats:
    events_published: int = 0
    heartbeats: int = 0
    heartbeat_flushes: int = 0
    republished: int = 0


class Hub:
    """Applies commands to sessions, stores them durably and publishes their events."""

    def __init__(
        self,
        store: Store,
        broker: Broker,
        kinds: Registry,
        *,
        presence: Presence | None = None,
        clock: Clock = utcnow,
        mark_interval: float = 0.2,
    ) -> None:
        self.store = store
        self.broker = broker
        self.presence: Presence = presence if presence is not None else MemoryPresence()
        self.kinds = kinds
        self.clock = clock
        self.stats = HubStats()
        self.outbox = Outbox(store, broker, published=self._published, mark_interval=mark_interval)
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._listeners: list[EventListener] = []
        self._pending_heartbeats: dict[str, datetime] = {}
        # id -> (owner, kind, state) of sessions this node has seen, so a heartbeat costs no read.
        self._hb_cache: dict[str, tuple[str, str, str]] = {}
        # id -> the session as this node last committed it, so a change costs no read first.
        self._written: dict[str, Session] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.start()
        await self.broker.start()
        await self.presence.start()
        # Before serving: what a crashed predecessor committed and never published goes out.
        await self.republish_outbox()
        await self.outbox.start_loops()
        self._started = True

    async def close(self) -> None:
        await stop(self._tasks)
        self._tasks.clear()
        if self._started:
            await self.flush_heartbeats()
            await self.outbox.close()
        await self.presence.close()
        await self.broker.close()
        await self.store.close()
        self._started = False

    def add_listener(self, listener: EventListener) -> Callable[[], None]:
        """Call ``listener(event, change)`` after every event is committed and published.

        ``change`` is None for events republished from the outbox after a restart. Listeners
        run synchronously on the event loop: they must be quick and must not raise.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    # -- publishing ------------------------------------------------------------------------

    @staticmethod
    def encode(event: Event) -> bytes:
        """The publication payload of an event: encoded once, shared by every subscriber."""
        return encode(event)

    async def _publish(self, event: Event, change: Change | None) -> None:
        await self.outbox.publish(event, change)

    def _published(self, event: Event, change: Change | None) -> None:
        self.stats.events_published += 1
        for listener in tuple(self._listeners):
            try:
                listener(event, change)
            except Exception:
                log.exception("event listener failed")

    async def republish_outbox(self) -> int:
        """Publish every committed event not yet marked published (after a crash); one the
        broker already holds is only marked."""
        total = await self.outbox.republish()
        self.stats.republished += total
        return total

    # -- helpers ---------------------------------------------------------------------------

    def _lock(self, session_id: str) -> asyncio.Lock:
        lock = self._locks.get(session_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[session_id] = lock
        return lock

    @staticmethod
    def _event_id() -> str:
        return random_hex(16)

    def kind_of(self, session: Session) -> Kind:
        return self.kinds.get_kind(session.kind)

    #: Sessions whose (owner, kind, state) a heartbeat can check without a read.
    HEARTBEAT_CACHE_SIZE = 100_000

    def _remember(self, s: Session) -> None:
        kind = self.kinds.get(s.kind)
        if kind is not None and s.state in kind.lifecycle.ended:
            # Ended sessions take no heartbeats; forgetting them keeps the cache to live ones
            # (a stray heartbeat for one costs a read and gets its 409 from there).
            self._hb_cache.pop(s.id, None)
            return
        self._hb_cache[s.id] = (s.owner, s.kind, s.state)
        if len(self._hb_cache) > self.HEARTBEAT_CACHE_SIZE:
            self._hb_cache.pop(next(iter(self._hb_cache)))  # the oldest entry

    async def _load(self, principal: Principal, session_id: str) -> Session:
        s = await self.store.get(session_id)
        # A session the caller may not read answers 404, so ids of others do not leak.
        if s is None or not principal.may_read(s.owner):
            raise NotFound(f"no session {session_id[:100]!r}")
        self._remember(s)
        return s

    #: Sessions whose last committed state this node keeps to change them without a read.
    WRITTEN_CACHE_SIZE = 10_000

    def _wrote(self, s: Session) -> None:
        self._written.pop(s.id, None)  # re-insert at the end: eviction takes the oldest
        self._written[s.id] = s
        if len(self._written) > self.WRITTEN_CACHE_SIZE:
            self._written.pop(next(iter(self._written)))

    async def commit(self, change: Change) -> Session:
        """Store a change (compare-and-set) and publish its event, in version order."""
        async with self._lock(change.session.id):
            stored = await self.store.save(change)
            self._remember(change.session)
            self._wrote(change.session)
            await self._publish(stored, change)
        return change.session

    async def _change(
        self,
        principal: Principal,
        session_id: str,
        expected_version: int | None,
        make: Callable[[Session], Change],
    ) -> Session:
        """Load the session, check ``expected_version``, ``make`` the change and commit it.

        The session is taken from what this node last committed when it has it, saving the
        read. The compare-and-set keeps that honest: if another node (or a sweep) changed
        the row since, the entry is stale and every answer computed from it (conflict,
        412, illegal transition, invalid input, a role refused in that state) is decided again on a fresh read, as if the
        request had arrived just after that change. If this node itself committed the
        session meanwhile, the race is a real one and its 409 stands, as without the cache.
        """
        cached = self._written.get(session_id)
        if cached is not None and principal.may_read(cached.owner):
            try:
                return await self.commit(self._make(cached, expected_version, make))
            except (
                VersionConflict,
                PreconditionFailed,
                IllegalTransition,
                InvalidInput,
                Forbidden,
            ):
                if self._written.get(session_id) is not cached:
                    raise
                self._written.pop(session_id, None)
        s = await self._load(principal, session_id)
        return await self.commit(self._make(s, expected_version, make))

    #: Fresh reads a merge (a change without ``If-Match``) tries before it gives up.
    MERGE_ATTEMPTS = 8

    async def _merge(
        self, principal: Principal, session_id: str, make: Callable[[Session], Change]
    ) -> Session:
        """Apply ``make`` onto the session as it is now: a change without ``If-Match``.

        Serialised per session on this node (no two requests here race each other), and a
        change that another node committed in between makes it apply again on a fresh read,
        so a client that never named a version never gets a conflict for one."""
        async with self._lock(session_id):
            for attempt in range(self.MERGE_ATTEMPTS):
                s = self._written.get(session_id) if attempt == 0 else None
                if s is None or not principal.may_read(s.owner):
                    s = await self._load(principal, session_id)
                    fresh = True
                else:
                    fresh = False
                try:
                    change = self._make(s, None, make)
                    stored = await self.store.save(change)
                except VersionConflict:
                    self._written.pop(session_id, None)
                    continue  # changed by another node since that read: apply it again
                except (IllegalTransition, InvalidInput, Forbidden):
                    if fresh:
                        raise
                    self._written.pop(session_id, None)
                    continue  # decided on a stale copy: decide again on a fresh read
                self._remember(change.session)
                self._wrote(change.session)
                await self._publish(stored, change)
                return change.session
        raise VersionConflict(
            f"session {session_id[:100]!r} kept changing under this request; retry it"
        )

    @staticmethod
    def _make(
        s: Session, expected_version: int | None, make: Callable[[Session], Change]
    ) -> Change:
        if expected_version is not None and s.version != expected_version:
            raise PreconditionFailed(
                f"session is at version {s.version}, not {expected_version}", current=s.to_dict()
            )
        try:
            return make(s)
        except IllegalTransition as exc:
            exc.extra.setdefault("current", s.to_dict())
            raise

    # -- commands --------------------------------------------------------------------------

    async def create(
        self,
        principal: Principal,
        kind_name: str,
        *,
        owner: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        fingerprint: str | None = None,
        session_id: str | None = None,
        at: datetime | None = None,
    ) -> tuple[Session, bool]:
        """Create a session; returns (session, created). A repeated idempotency key returns
        the first session and ``created=False`` - unless the key came with another
        ``fingerprint`` (a digest of the request) the first time: then ``IdempotencyConflict``
        (422). ``at`` stamps the change with another time than the clock's (a connector
        replaying an upstream event at its own time)."""
        kind = self.kinds.get_kind(kind_name)
        if idempotency_key is not None and not (0 < len(idempotency_key) <= 200):
            raise InvalidInput("Idempotency-Key must be 1 to 200 characters")
        for _attempt in range(3):
            sid = session_id or f"{kind.id_prefix}_{random_hex(kind.id_bytes)}"
            change = engine.create(
                kind,
                session_id=sid,
                owner=principal.sub if owner is None else owner,
                attributes=attributes or {},
                metadata=metadata or {},
                actor=principal,
                now=at or self.clock(),
                event_id=self._event_id(),
            )
            try:
                async with self._lock(sid):
                    session, stored = await self.store.insert(
                        change, idempotency_key=idempotency_key, fingerprint=fingerprint
                    )
                    self._remember(session)
                    self._wrote(session)
                    if stored is not None:
                        await self._publish(stored, change)
                return session, stored is not None
            except DuplicateId:
                if session_id is None:
                    continue  # a random id collided; draw another
                raise
        raise RuntimeError("could not allocate a session id")

    async def get(self, principal: Principal, session_id: str) -> Session:
        return await self._load(principal, session_id)

    async def list_sessions(self, principal: Principal, query: SessionQuery) -> Page:
        if not principal.is_admin:
            if query.owner not in (None, principal.sub):
                return Page(items=[], next_cursor=None)
            query = SessionQuery(**{**_fields(query), "owner": principal.sub})
        return await self.store.find(query)

    async def count(self, principal: Principal, query: SessionQuery) -> int:
        if not principal.is_admin:
            if query.owner not in (None, principal.sub):
                return 0
            query = SessionQuery(**{**_fields(query), "owner": principal.sub})
        return await self.store.count(query)

    async def act(
        self,
        principal: Principal,
        session_id: str,
        action: str,
        *,
        detail: str | None = None,
        reason: str | None = None,
        expected_version: int | None = None,
        at: datetime | None = None,
    ) -> Session:
        """Apply a lifecycle action. Illegal -> 409; concurrent change -> 409 with current."""

        def make(s: Session) -> Change:
            return engine.act(
                self.kind_of(s),
                s,
                action,
                actor=principal,
                now=at or self.clock(),
                event_id=self._event_id(),
                detail=detail,
                reason=reason,
            )

        return await self._change(principal, session_id, expected_version, make)

    async def update(
        self,
        principal: Principal,
        session_id: str,
        *,
        attributes: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        merge_metadata: bool = False,
        counters: Mapping[str, int] | None = None,
        expected_version: int | None = None,
        internal: bool = False,
        at: datetime | None = None,
    ) -> Session:
        """Change attributes/metadata/counters; ``expected_version`` (If-Match) -> 412 on mismatch.

        Without ``expected_version`` the change is a merge onto the current version, applied
        on a fresh read if another node changed the session meanwhile (never a 409 for a
        version the caller did not name). ``internal`` is for the kind's own services: it may
        write reserved metadata keys, which the generic API may not."""

        def make(s: Session) -> Change:
            return engine.update(
                self.kind_of(s),
                s,
                actor=principal,
                now=at or self.clock(),
                event_id=self._event_id(),
                attributes=attributes,
                metadata=metadata,
                merge_metadata=merge_metadata,
                counters=counters,
                allow_reserved=internal,
            )

        if expected_version is None:
            return await self._merge(principal, session_id, make)
        return await self._change(principal, session_id, expected_version, make)

    async def delete(self, session: Session) -> None:
        """Delete a session and its events (the scheduler's last step); publishes a tombstone."""
        now = self.clock()
        tomb = Event(
            id=self._event_id(),
            type=DELETED,
            session_id=session.id,
            kind=session.kind,
            owner=session.owner,
            actor=SYSTEM_PRINCIPAL.sub,
            at=now,
            version=session.version + 1,
            data={"state": session.state},
        )
        async with self._lock(session.id):
            stored = await self.store.delete(session, tomb)
            self._hb_cache.pop(session.id, None)
            self._written.pop(session.id, None)
            await self._publish(stored, None)

    async def apply_due(
        self, sessions: Iterable[Session], action: str, reason: str | None, before: datetime
    ) -> list[str]:
        """Apply the system action ``action`` to sessions a sweep found due; returns the ids
        changed.

        A session whose coalesced heartbeat (not yet flushed) is newer than ``before`` is
        skipped. Each change is compare-and-set on the version the session was read at, so a
        session changed meanwhile (by its user or another node) is left for the next sweep."""
        done: list[str] = []
        for s in sessions:
            pending = self.pending_activity(s.id)
            if pending is not None and pending >= before:
                continue
            try:
                await self.act(
                    SYSTEM_PRINCIPAL, s.id, action, reason=reason, expected_version=s.version
                )
                done.append(s.id)
            except SessionHubError as exc:
                log.debug("%s skipped for %s: %s", action, s.id, exc.detail)
        return done

    async def sweep_due(self, due: Due, action: str, reason: str | None) -> list[str]:
        """Apply ``action`` to the sessions ``due`` finds (see :meth:`apply_due`)."""
        return await self.apply_due(await self.store.due(due), action, reason, due.before)

    async def drop_inactive(
        self, kinds: Iterable[str], max_idle: timedelta, *, owner: str | None = None
    ) -> list[str]:
        """Drop sessions of ``kinds`` (only ``owner``'s, if given) with no heartbeat for
        ``max_idle``: an on-demand check, beside the scheduler's own timeouts."""
        await self.flush_heartbeats()
        before = self.clock() - max_idle
        out: list[str] = []
        for name in kinds:
            kind = self.kinds.get_kind(name)
            for _page in range(1000):  # bounded: 500,000 sessions per kind and call
                due = Due(name, kind.alive_states(), "last_activity_at", before, owner=owner)
                done = await self.sweep_due(due, kind.heartbeat_action, "heartbeat_timeout")
                out += done
                if len(done) < due.limit:
                    break
        return out

    async def heartbeat(self, principal: Principal, session_id: str) -> datetime:
        """Record that the session is alive. Coalesced in memory; flushed by the scheduler."""
        cached = self._hb_cache.get(session_id)
        if cached is None:
            s = await self._load(principal, session_id)
            cached = (s.owner, s.kind, s.state)
        return self._beat(principal, session_id, cached)

    def heartbeat_known(self, principal: Principal, session_id: str) -> datetime | None:
        """:meth:`heartbeat` without awaiting, for a session this node knows (None: it
        must be read first, call :meth:`heartbeat`). Raises as :meth:`heartbeat` does."""
        cached = self._hb_cache.get(session_id)
        return None if cached is None else self._beat(principal, session_id, cached)

    def _beat(
        self, principal: Principal, session_id: str, cached: tuple[str, str, str]
    ) -> datetime:
        owner, kind_name, state = cached
        if not principal.may_read(owner):
            raise NotFound(f"no session {session_id!r}")
        kind = self.kinds.get_kind(kind_name)
        allowed = (
            kind.heartbeat_states
            if kind.heartbeat_states is not None
            else (frozenset(kind.lifecycle.states) - kind.lifecycle.ended)
        )
        if state not in allowed:
            raise IllegalTransition(
                f"session is {state!r}; heartbeats are accepted only in {sorted(allowed)}"
            )
        now = self.clock()
        self._pending_heartbeats[session_id] = now
        self.stats.heartbeats += 1
        return now

    # -- what transports and services read through the hub ---------------------------------

    async def ping(self) -> None:
        """Raise if the store cannot answer (readiness)."""
        await self.store.ping()

    async def count_by_kind_state(self) -> dict[tuple[str, str], int]:
        return await self.store.count_by_kind_state()

    async def position(self, topic: str) -> StreamPosition:
        """The stream position of ``topic`` now (a snapshot's ``stream``)."""
        return await self.broker.position(topic)

    async def lease(self, name: str, holder: str, *, ttl: float) -> int | None:
        """Take or renew the lease ``name`` for ``holder``: its fencing token, or None while
        another holder has it (leadership of sweeps and consumers across nodes)."""
        return await self.store.acquire_lease(
            name, holder, ttl=timedelta(seconds=ttl), now=self.clock()
        )

    async def release_lease(self, name: str, holder: str) -> None:
        await self.store.release_lease(name, holder)

    def pending_activity(self, session_id: str) -> datetime | None:
        return self._pending_heartbeats.get(session_id)

    async def flush_heartbeats(self) -> int:
        """Write coalesced heartbeats in one batch."""
        if not self._pending_heartbeats:
            return 0
        batch, self._pending_heartbeats = self._pending_heartbeats, {}
        try:
            await self.store.touch(batch)
        except Exception:
            # Keep them for the next flush rather than lose liveness information.
            for sid, ts in batch.items():
                self._pending_heartbeats.setdefault(sid, ts)
            raise
        self.stats.heartbeat_flushes += 1
        return len(batch)

    async def events(
        self, principal: Principal, session_id: str, *, after_version: int = 0, limit: int = 100
    ) -> list[Event]:
        await self._load(principal, session_id)
        return await self.store.events(session_id, after_version=after_version, limit=limit)

    def view(self, session: Session) -> JSON:
        """The REST representation: the record, the kind's extras and ``duration_seconds``."""
        out = session.to_dict()
        pending = self._pending_heartbeats.get(session.id)
        if pending is not None and pending > session.last_activity_at:
            out["last_activity_at"] = iso(pending)
        out["duration_seconds"] = session.duration_seconds(self.clock())
        kind = self.kinds.get(session.kind)
        if kind is not None:
            out.update(kind.view(session))
        return out


def _fields(q: SessionQuery) -> dict[str, Any]:
    return {f: getattr(q, f) for f in q.__slots__}
