"""Was this event applied before? Pure decisions over bounded memory.

The same rig event can reach the connector twice: in every re-seed from the event history
(after a reconnect, a refresh, a restart of sessionhub) and once live on the socket. Events
are told apart by identity - (type, normalised time, payload) - never by "same type in the
same second", so two real events of one type in one second both count.

An event is a repeat of one already applied when:

1. its identity was applied (this process remembers the newest ``memory`` identities; the
   night's metadata keeps the last few across restarts);
2. it is the *twin* of an event from the other channel: same type, compatible fields, times
   within ``window``. A live event is stamped on receipt, its history twin carries the rig's
   time a little earlier, and history may have lost nested values (``[]`` leaves), so twins
   are matched by proximity, one to one;
3. it is a history item older than the newest event applied (``Book.through``): history is
   applied oldest first and the socket delivers in order, so everything older was seen -
   this is what keeps a re-seed after a sessionhub restart from double counting.

Images are exact: an ``IMAGE-SAVE`` with statistics is identified by the image's own
``Date`` and file, the same on the socket and in the image history, and images are counted
only past ``Book.images_through`` (the rig's clock, never the receipt time).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .normalize import HISTORY, IMAGE_SAVE, POLL, SOCKET, NinaEvent
from .state import Book

NEW = "new"
DUPLICATE = "duplicate"  # its identity was applied
TWIN = "twin"  # the same event, seen on the other channel
STALE = "stale"  # a history item older than what was applied


def flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"New": {"Name": "Ha"}}`` -> ``{"New.Name": "Ha"}`` (scalars only)."""
    out: dict[str, Any] = {}
    if isinstance(value, Mapping):
        for k, v in value.items():
            out.update(flat(v, f"{prefix}{k}."))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.update(flat(v, f"{prefix}{i}."))
    elif prefix:
        number = isinstance(value, int) and not isinstance(value, bool)
        out[prefix[:-1]] = float(value) if number else value
    return out


def compatible(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Fields agree wherever both know a value (history may have lost some)."""
    for key, value in a.items():
        other = b.get(key)
        if value is not None and other is not None and value != other:
            return False
    return True


@dataclass(slots=True)
class _Seen:
    ev: NinaEvent
    consumed: bool = False
    _flat: dict[str, Any] | None = None

    @property
    def flat(self) -> dict[str, Any]:
        if self._flat is None:  # only when a twin is looked for: rare, and not cheap
            self._flat = flat(self.ev.fields)
        return self._flat


@dataclass(slots=True)
class _Channel:
    """Recently applied events of one channel, by type, for twin matching."""

    per_type: int
    by_type: dict[str, deque[_Seen]] = field(default_factory=dict)

    def add(self, ev: NinaEvent) -> None:
        q = self.by_type.get(ev.type)
        if q is None:
            q = self.by_type[ev.type] = deque(maxlen=self.per_type)
        q.append(_Seen(ev))

    def twin(self, ev: NinaEvent, window: timedelta) -> bool:
        q = self.by_type.get(ev.type)
        if not q:
            return False
        fields: dict[str, Any] | None = None
        best: _Seen | None = None
        for seen in q:
            gap = abs(seen.ev.time - ev.time)
            if seen.consumed or gap > window:
                continue
            if fields is None:
                fields = flat(ev.fields)
            if not compatible(fields, seen.flat):
                continue
            if best is None or gap < abs(best.ev.time - ev.time):
                best = seen  # the nearest in time: flats a second apart pair up right
        if best is None:
            return False
        best.consumed = True
        return True


class Deduper:
    """Remembers what one rig's connector applied and judges each new arrival."""

    def __init__(self, window: timedelta, *, memory: int = 8192, per_type: int = 64) -> None:
        self.window = window
        self.memory = memory
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._live = _Channel(per_type)
        self._history = _Channel(per_type)

    def remember_ids(self, ids: Iterable[str]) -> None:
        for i in ids:
            self._remember(i)

    def _remember(self, ident: str) -> None:
        self._ids[ident] = None
        self._ids.move_to_end(ident)
        while len(self._ids) > self.memory:
            self._ids.popitem(last=False)

    def verdict(self, ev: NinaEvent, book: Book) -> str:
        """``NEW`` or why it is a repeat (``DUPLICATE``, ``TWIN``, ``STALE``)."""
        if ev.source == POLL:
            return NEW  # a poll's answer is a reading, not an event that can repeat
        if ev.identity in self._ids or ev.identity in book.ids or ev.identity in book.image_ids:
            return DUPLICATE
        other = self._live if ev.source == HISTORY else self._history
        if other.twin(ev, self.window):
            return TWIN
        if ev.type == IMAGE_SAVE:
            it = ev.image_time or ev.time
            if book.images_through is not None and it < book.images_through:
                return STALE
            return NEW
        if ev.source == HISTORY and book.through is not None and ev.time < book.through:
            return STALE
        return NEW

    def record(self, ev: NinaEvent) -> None:
        """``ev`` was applied (or judged new and found to change nothing)."""
        if ev.source == POLL:
            return
        self._remember(ev.identity)
        (self._live if ev.source == SOCKET else self._history).add(ev)
