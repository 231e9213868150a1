"""Queries over stored sessions: filters for listing and counting, pages, sweep requests."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from .model import Session


@dataclass(frozen=True, slots=True)
class SessionQuery:
    """Filters for listing and counting. Empty tuples mean "any"."""

    kinds: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    owner: str | None = None
    limit: int = 50
    cursor: str | None = None
    offset: int | None = None
    #: Case-insensitive text that the session's id, owner or attributes (JSON) must
    #: contain, as a plain substring (``%`` and ``_`` are no wildcards).
    text: str | None = None

    def replace(self, **changes: Any) -> SessionQuery:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return SessionQuery(**values)


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Session]
    next_cursor: str | None
    total: int | None = None


@dataclass(frozen=True, slots=True)
class Due:
    """A sweep request: sessions of ``kind`` in ``states`` whose ``column`` is before ``before``."""

    kind: str
    states: frozenset[str]
    column: str  # "last_activity_at" | "ended_at" | "updated_at"
    before: datetime
    limit: int = 500
    #: Only this owner's sessions (None: everyone's).
    owner: str | None = None
