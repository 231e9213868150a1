"""The raw-event log: every new event a rig sent, as it came, bounded, and replayable.

The connector keeps (in the store's raw-event table, source ``nina:<rig>``) each event it
applied: a socket frame as received (stamped with its receipt time), a history item with
its joined image-history entry under ``_image``, a guider poll as ``{"_poll": "guider",
...}``. Repeats and junk are not kept. ``replay`` folds such records from scratch into the
state they describe, so a night can be rebuilt and compared, or played again elsewhere.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, tzinfo

import orjson

from ...core.model import JSON
from ...hub import Hub
from ...store.base import RawRecord
from .dedupe import NEW, Deduper
from .normalize import (
    BadInput,
    NinaEvent,
    from_envelope,
    from_history_item,
    guider_event,
)
from .state import RigState, Rules, apply

log = logging.getLogger("sessionhub.nina")

#: Appends between two trims of the log to its retention.
TRIM_EVERY = 1000


def poll_record(body: object) -> str:
    return orjson.dumps({"_poll": "guider", "body": body}).decode()


def history_record(item: JSON) -> str:
    return orjson.dumps(item).decode()


def event_of(payload: str, received_at: datetime, local: tzinfo) -> NinaEvent:
    """The event a raw record holds (its shape tells socket frame, history item, poll)."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise BadInput("bad_json", f"raw record is not JSON: {exc}") from None
    if isinstance(obj, dict) and obj.get("_poll") == "guider":
        return guider_event(obj.get("body"), received_at)
    if isinstance(obj, dict) and "Response" in obj:
        return from_envelope(obj, received_at, local)
    return from_history_item(obj, local)


class RawLog:
    """Buffered appends of one rig's raw events, trimmed to ``retention`` records."""

    def __init__(self, hub: Hub, source: str, retention: int) -> None:
        self.hub = hub
        self.source = source
        self.retention = retention
        self.pending: list[tuple[datetime, str]] = []
        self.appended = 0
        self.failures = 0
        self._since_trim = 0

    def add(self, received_at: datetime, payload: str) -> None:
        if self.retention > 0:
            self.pending.append((received_at, payload))

    async def flush(self) -> None:
        """Write what was added; a failure keeps at most ``retention`` records for later."""
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        try:
            await self.hub.store.append_raw(self.source, batch)
        except Exception:
            self.failures += 1
            log.exception("keeping raw events of %s failed; will retry", self.source)
            self.pending = (batch + self.pending)[-self.retention :]
            return
        self.appended += len(batch)
        self._since_trim += len(batch)
        if self._since_trim >= TRIM_EVERY:
            self._since_trim = 0
            try:
                await self.hub.store.trim_raw(self.source, self.retention)
            except Exception:
                log.exception("trimming raw events of %s failed", self.source)

    async def records(self, *, limit: int = 1_000_000) -> list[RawRecord]:
        """Every kept record of the source, oldest first (at most ``limit``)."""
        out: list[RawRecord] = []
        after = 0
        while len(out) < limit:
            page = await self.hub.store.read_raw(
                self.source, after_seq=after, limit=min(1000, limit - len(out))
            )
            if not page:
                break
            out.extend(page)
            after = page[-1].seq
        return out


def replay(
    rig: str,
    records: Iterable[RawRecord] | Sequence[tuple[datetime, str]],
    rules: Rules,
    *,
    window: timedelta = timedelta(seconds=2),
) -> tuple[RigState, list[NinaEvent]]:
    """Fold raw records from an empty state: the rig's state they describe and the events
    applied (repeats skipped as the live connector skips them). Pure."""
    st = RigState(rig)
    dedupe = Deduper(window)
    applied: list[NinaEvent] = []
    for rec in records:
        at, payload = (rec.received_at, rec.payload) if isinstance(rec, RawRecord) else rec
        try:
            ev = event_of(payload, at, rules.local)
        except BadInput:
            continue
        if dedupe.verdict(ev, st.book) != NEW:
            continue
        st = apply(st, ev, rules).state
        dedupe.record(ev)
        applied.append(ev)
    return st, applied
