"""One rig's connector: its inbox, the fold, the hub commands and the publications.

Everything that changes a rig's state goes through one queue and one consumer task, in
arrival order: history seeds, live frames, guider polls and sessions changed elsewhere (the
scheduler's idle timeout, an admin). Under load the consumer takes many items at once and
turns them into one commit; an idle rig's event is committed and published at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ...core.errors import IllegalTransition, Unavailable
from ...core.model import JSON, Session
from ...core.principal import SYSTEM_PRINCIPAL
from ...core.query import SessionQuery
from ...core.streams import StreamPosition
from ...kinds.imaging import empty_unified_session, unified_session
from ...tasks import stop
from .config import RigConfig
from .dedupe import NEW, Deduper
from .health import RigStatus
from .messages import nina_event_message, session_update_message, topic, unified_message
from .normalize import (
    POLL,
    SOCKET,
    BadInput,
    NinaEvent,
    guider_event,
    parse_frame,
    parse_history,
)
from .rawlog import RawLog, history_record, poll_record
from .state import CARRY, Command, End, Night, RigState, Start, Update, apply, merge

if TYPE_CHECKING:
    from .client import RigClient
    from .service import NinaService

log = logging.getLogger("sessionhub.nina")

KIND = "imaging"
#: Frames queued before the socket reader waits for the consumer (back-pressure to TCP).
BACKLOG = 20_000


@dataclass(slots=True)
class _Frame:
    data: str | bytes
    at: datetime


@dataclass(slots=True)
class _Seed:
    history: Any
    images: list[JSON]
    at: datetime
    done: asyncio.Future[None] | None = None


@dataclass(slots=True)
class _Poll:
    body: Any
    at: datetime


@dataclass(slots=True)
class _Synced:
    session: Session


_Item = _Frame | _Seed | _Poll | _Synced
_Arrival = tuple[NinaEvent, str, datetime]  # event, raw payload kept, received at


class RigRunner:
    """The connector of one rig (``NinaService`` holds one per configured rig)."""

    def __init__(self, service: NinaService, rig: RigConfig) -> None:
        self.service = service
        self.hub = service.hub
        self.config = service.config
        self.rig = rig
        self.name = rig.name
        self.topic = topic(rig.name)
        self.status = RigStatus(rig.name, rig.url)
        self.dedupe = Deduper(timedelta(seconds=self.config.dedupe_window))
        self.raw = RawLog(self.hub, rig.source, self.config.raw_retention)
        self.state = RigState(rig.name)
        #: The rig's newest night as the hub last returned it.
        self.session: Session | None = None
        #: (night, topic position of the publication that reflects it): what readers get.
        self.snapshot: tuple[Session | None, StreamPosition] = (None, StreamPosition(0, ""))
        self.inbox: asyncio.Queue[_Item] = asyncio.Queue()
        self.client: RigClient | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._pulse = asyncio.Event()
        #: A batch is being processed (``idle`` is the opposite, with nothing queued).
        self.busy = False
        self._committing = False
        self._during: list[Session] = []
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being processed."""
        return not self.busy and self.inbox.empty()

    async def restore(self) -> None:
        """Take up the rig's newest stored night (after a restart: where it was left)."""
        page = await self.hub.list_sessions(
            SYSTEM_PRINCIPAL, SessionQuery(kinds=(KIND,), owner=self.name, limit=1)
        )
        session = page.items[0] if page.items else None
        self.session = session
        self.state = RigState.restore(self.name, session)
        self.dedupe = Deduper(timedelta(seconds=self.config.dedupe_window))
        self.dedupe.remember_ids((*self.state.book.ids, *self.state.book.image_ids))
        self.snapshot = (session, await self.hub.position(self.topic))

    def start(self) -> None:
        # Imported here: the rig client brings httpx and the websockets client, which a node
        # that follows no rig should not carry in memory.
        from .client import RigClient

        self.client = RigClient(self.rig, self.config, self, self.status, rng=self.service.rng)
        self._tasks = [
            asyncio.create_task(self._consume(), name=f"nina-{self.name}-consume"),
            asyncio.create_task(self.client.follow(), name=f"nina-{self.name}-socket"),
            asyncio.create_task(self.client.poll_guider(), name=f"nina-{self.name}-guider"),
        ]

    async def stop(self) -> None:
        await stop(self._tasks)
        self._tasks = []
        while not self.inbox.empty():  # what was not applied comes back with the next seed
            item = self.inbox.get_nowait()
            if isinstance(item, _Seed) and item.done is not None and not item.done.done():
                item.done.cancel()
        self._room.set()
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        self.status.connected = False
        with contextlib.suppress(Exception):
            await self.raw.flush()
        self.changed()

    # -- what the rig client delivers (client.Sink) -----------------------------------------

    def clock(self) -> datetime:
        return self.hub.clock()

    async def seed(self, history: Any, images: list[JSON], at: datetime) -> None:
        await self.inbox.put(_Seed(history, images, at))

    async def frame(self, data: str | bytes, at: datetime) -> None:
        self.status.count("frames")
        self.changed()
        if self.inbox.qsize() >= BACKLOG:
            self._room.clear()
            await self._room.wait()
        self.inbox.put_nowait(_Frame(data, at))

    async def guider(self, body: Any, at: datetime) -> None:
        self.inbox.put_nowait(_Poll(body, at))

    def guiding(self) -> bool:
        st = self.state
        regs = st.night.attrs if st.night is not None and st.night.active else st.regs
        return regs.get("guiding_state") not in (None, "Stopped")

    def changed(self) -> None:
        pulse, self._pulse = self._pulse, asyncio.Event()
        pulse.set()

    async def wait_for(self, predicate: Callable[[RigRunner], bool], within: float) -> None:
        """Until ``predicate(self)`` holds, re-checked after every batch and connection change;
        ``TimeoutError`` after ``within`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not predicate(self):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"nina {self.name}: condition not met in {within} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._pulse.wait(), remaining)

    def hub_changed(self, session: Session) -> None:
        """The hub committed a change to one of this rig's nights (hub listener, sync)."""
        if self._committing:
            self._during.append(session)  # ours, or racing ours: sorted out after the call
        else:
            self.inbox.put_nowait(_Synced(session))

    # -- refresh ---------------------------------------------------------------------------

    async def refresh(self) -> JSON:
        """Seed again from the rig's history now (idempotent) and return the state."""
        client = self.client
        if client is None or not self.running:
            raise Unavailable(f"the connector of rig {self.name!r} is not running")
        try:
            history, images = await client.fetch_seed()
        except Exception as exc:  # any failure to reach the rig is the same answer
            self.status.count("seed_errors")
            raise Unavailable(f"rig {self.name!r} did not answer: {type(exc).__name__}") from None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inbox.put_nowait(_Seed(history, images, self.clock(), done))
        await done
        return self.state_data()

    # -- reading ---------------------------------------------------------------------------

    def state_data(self) -> JSON:
        """The unified session the snapshot holds, with the stream position it reflects."""
        session, pos = self.snapshot
        data = unified_session(session, self.clock()) if session else empty_unified_session()
        data["stream"] = {"topic": self.topic, "offset": pos.offset, "epoch": pos.epoch}
        return data

    def health(self) -> JSON:
        out = self.status.to_json()
        session = self.session
        out["session_id"] = session.id if session else None
        out["session_state"] = session.state if session else None
        out["raw_kept"] = self.raw.appended
        return out

    # -- the consumer ----------------------------------------------------------------------

    async def _consume(self) -> None:
        while True:
            batch = [await self.inbox.get()]
            while len(batch) < self.config.batch_max and not self.inbox.empty():
                batch.append(self.inbox.get_nowait())
            if self.inbox.qsize() < BACKLOG // 2:
                self._room.set()
            self.busy = True
            try:
                await self._process(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad batch must not end the connector
                log.exception("nina %s: processing a batch failed", self.name)
            finally:
                self.busy = False
                for item in batch:
                    if isinstance(item, _Seed) and item.done is not None and not item.done.done():
                        item.done.set_result(None)
                self.changed()

    async def _process(self, batch: list[_Item]) -> None:
        pending: list[_Arrival] = []
        for item in batch:
            if isinstance(item, _Synced):
                await self._apply(pending)
                pending = []
                await self._sync(item.session)
            else:
                pending.extend(self._arrivals(item))
        await self._apply(pending)

    def _arrivals(self, item: _Frame | _Seed | _Poll) -> list[_Arrival]:
        local = self.config.zone
        try:
            if isinstance(item, _Frame):
                text = (
                    item.data
                    if isinstance(item.data, str)
                    else item.data.decode("utf-8", "replace")
                )
                return [(parse_frame(item.data, item.at, local), text, item.at)]
            if isinstance(item, _Poll):
                return [(guider_event(item.body, item.at), poll_record(item.body), item.at)]
            pairs, bad = parse_history(item.history, item.images, local)
        except BadInput as exc:
            if exc.reason == "message":
                self.status.count("messages")
            else:
                self.status.bad(exc.reason, exc.detail)
            return []
        self.status.count("seeds")
        self.status.count("history_items", len(pairs))
        for b in bad:
            self.status.bad(b.reason, b.detail)
        return [(ev, history_record(raw), item.at) for ev, raw in pairs]

    async def _apply(self, arrivals: list[_Arrival]) -> None:
        if not arrivals:
            return
        st = self.state
        before = st
        commands: list[Command] = []
        notable: list[NinaEvent] = []
        changed = False
        live: datetime | None = None  # the newest live event: a sign of life, even a repeat
        kept: list[tuple[datetime, str]] = []
        for ev, payload, at in arrivals:
            self.status.count("events")
            if ev.bad_values:
                self.status.bad("bad_values", f"{ev.type}: {ev.bad_values} dropped", ev.bad_values)
            if ev.source != POLL:
                last = self.status.last_event_at
                self.status.last_event_at = ev.time if last is None else max(last, ev.time)
            if ev.source == SOCKET:
                live = ev.time if live is None else max(live, ev.time)
            if not ev.known:
                self.status.bad("unknown_events", f"unknown event {ev.type}")
                continue
            verdict = self.dedupe.verdict(ev, st.book)
            if verdict != NEW:
                self.status.count(verdict)
                continue
            step = apply(st, ev, self.service.rules)
            self.dedupe.record(ev)
            st = step.state
            self.status.count("applied")
            commands.extend(step.commands)
            changed = changed or step.changed
            if step.notable:
                notable.append(ev)
            kept.append((at, payload))
        self.state = st
        merged = merge(commands)
        try:
            await self._execute(before, merged)
        except Exception as exc:
            await self._failed(exc)
            return
        for ev in notable:
            await self._publish(nina_event_message(self.name, ev, self.clock()))
        self.status.count("notable", len(notable))
        if changed:
            await self._publish_state()
        session = self.session
        if (
            live is not None
            and self.state.active
            and session is not None
            and live > session.last_activity_at
        ):
            await self._heartbeat()  # repeats feed the idle timer without a write
        for at, payload in kept:
            self.raw.add(at, payload)
        await self.raw.flush()

    async def _execute(self, before: RigState, commands: list[Command]) -> None:
        if not commands:
            return
        sid = before.night.session_id if before.night is not None else None
        session = self.session
        self._committing = True
        try:
            for cmd in commands:
                session = await self._run(cmd, sid)
                sid = session.id
                self.status.count("commits")
        finally:
            self._committing = False
            during, self._during = self._during, []
        assert session is not None
        newest = max(
            (s for s in during if s.id == session.id and s.version > session.version),
            key=lambda s: s.version,
            default=session,
        )
        self._adopt(newest)

    async def _run(self, cmd: Command, sid: str | None) -> Session:
        hub = self.hub
        if isinstance(cmd, Start):
            session, created = await hub.create(
                SYSTEM_PRINCIPAL,
                KIND,
                owner=self.name,
                attributes=cmd.attributes,
                metadata=cmd.metadata,
                idempotency_key=f"nina:{self.name}:{cmd.at.isoformat()}",
                at=cmd.at,
            )
            if not created:
                log.warning(
                    "nina %s: night %s existed already; taking it up", self.name, session.id
                )
            return session
        if sid is None:
            raise RuntimeError("no night to change")
        if isinstance(cmd, Update):
            return await hub.update(
                SYSTEM_PRINCIPAL,
                sid,
                attributes=cmd.attributes,
                metadata=cmd.metadata,
                merge_metadata=True,
                internal=True,
                at=cmd.at,
            )
        assert isinstance(cmd, End)
        try:
            return await hub.act(SYSTEM_PRINCIPAL, sid, cmd.action, reason=cmd.reason, at=cmd.at)
        except IllegalTransition:
            return await hub.get(SYSTEM_PRINCIPAL, sid)  # ended meanwhile (idle sweep)

    def _adopt(self, session: Session) -> None:
        """Make the fold's night agree with what the hub holds for it."""
        self.session = session
        night = self.state.night
        if night is None or night.session_id not in (None, session.id):
            return
        regs = self.state.carry()  # the registers as they stand, whether it ended or not
        night = replace(
            night,
            session_id=session.id,
            version=session.version,
            state=session.state,
            ended_at=session.ended_at,
            end_reason=session.end_reason,
        )
        self.state = RigState(self.name, night, regs, self.state.book)

    async def _failed(self, exc: Exception) -> None:
        """A commit failed: forget the batch, take up the stored state, and reconnect so the
        next seed brings the lost events back (they were never recorded as applied)."""
        self.status.count("commit_errors")
        log.error("nina %s: storing a change failed (%s); re-seeding", self.name, exc)
        with contextlib.suppress(Exception):
            await self.restore()
        if self.client is not None:
            await self.client.drop()

    async def _sync(self, session: Session) -> None:
        """A night of this rig changed elsewhere (idle timeout, an admin): take it up."""
        cur = self.session
        if cur is not None and session.id == cur.id and session.version <= cur.version:
            return
        if cur is not None and session.id != cur.id and session.created_at < cur.created_at:
            return
        self.session = session
        night = Night.of(session)
        regs = {k: night.attrs.get(k) for k in CARRY}
        self.state = RigState(self.name, night, regs, self.state.book)
        await self._publish_state()

    async def _heartbeat(self) -> None:
        assert self.session is not None
        try:
            await self.hub.heartbeat(SYSTEM_PRINCIPAL, self.session.id)
            self.status.count("heartbeats")
        except IllegalTransition:
            pass  # ended meanwhile; the listener brings the change

    async def _publish(self, data: bytes) -> StreamPosition:
        positions = await self.hub.broker.publish([self.topic], data)
        self.status.count("published")
        return positions[self.topic]

    async def _publish_state(self) -> None:
        session = self.session
        now = self.clock()
        data = unified_session(session, now) if session else empty_unified_session()
        await self._publish(unified_message(data, now))
        pos = await self._publish(session_update_message(data, now))
        self.snapshot = (session, pos)
