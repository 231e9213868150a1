"""Pure commands: (kind, session, command, now) -> (new session, event).

The hub calls these, stores the result in one transaction and publishes the event.
Every function returns exactly one event and a session whose ``version`` is one higher.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import Forbidden, IllegalTransition, InvalidInput
from .kind import Kind
from .model import CREATED, JSON, STATE_CHANGED, UPDATED, Event, Session
from .principal import Principal

MAX_METADATA_BYTES = 64 * 1024
#: Deepest nesting accepted in metadata and attributes.
MAX_JSON_DEPTH = 32


@dataclass(frozen=True, slots=True)
class Change:
    """The result of one command: the session after it and the one event it produced."""

    before: Session | None
    session: Session
    event: Event


def _event(
    kind: Kind,
    session: Session,
    type_: str,
    actor: Principal,
    now: datetime,
    event_id: str,
    data: JSON,
) -> Event:
    data = dict(data)
    data["session"] = session.to_dict()
    return Event(
        id=event_id,
        type=type_,
        session_id=session.id,
        kind=kind.name,
        owner=session.owner,
        actor=actor.sub,
        at=now,
        version=session.version,
        data=data,
    )


def _check_reserved(kind: Kind, given: JSON, allow_reserved: bool) -> None:
    taken = sorted(kind.reserved_metadata & given.keys())
    if taken and not allow_reserved:
        raise InvalidInput(f"metadata key(s) {taken} are reserved by kind {kind.name!r}")


def _check_metadata(metadata: Any) -> JSON:
    if not isinstance(metadata, Mapping):
        raise InvalidInput("metadata must be an object")
    return dict(metadata)


#: Numbers beyond this magnitude are refused whether written as integers or as floats: JSON
#: Schema (and so the OpenAPI document) cannot tell ``1e19`` from ``10000000000000000000``,
#: and neither can most JSON clients, so the limit is one on the value. It is the largest
#: double below 2^63, so a float and an integer of the same value agree, and every integer
#: it lets through fits in 64 bits (the store and the encoders take it).
MAX_NUMBER = 2**63 - 1024
MIN_NUMBER = -MAX_NUMBER


def _bad_text(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate, which no UTF-8 encoder can write (the
    publication of the change would fail after it was stored)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def json_fault(value: Any, what: str = "value") -> str | None:
    """What makes ``value`` something JSON clients and the server's encoders cannot carry
    faithfully, in words naming ``what`` (None: nothing): nesting deeper than
    ``MAX_JSON_DEPTH``, numbers beyond ±``MAX_NUMBER`` or not finite, keys that are not
    strings, text that is not valid Unicode, values that are not JSON. Walks iteratively,
    so a hostile value cannot exhaust the stack. The REST edge (``server/deps.py``) and
    every command (``check_json``) ask the same question."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, str):
            if _bad_text(item):
                return f"{what} holds a string that is not valid Unicode"
        elif isinstance(item, int | float):
            # Integers exactly (as JSON Schema validators compare them), floats as doubles.
            if item != item or not MIN_NUMBER <= item <= MAX_NUMBER:
                return f"{what} holds a number outside ±2^63 (or not finite)"
        elif isinstance(item, Mapping | list | tuple):
            if depth > MAX_JSON_DEPTH:
                return f"{what} is nested deeper than {MAX_JSON_DEPTH} levels"
            if isinstance(item, Mapping):
                for key in item:
                    if not isinstance(key, str) or _bad_text(key):
                        return f"{what} has a key that is not a valid Unicode string"
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)
        else:
            return f"{what} must be plain JSON (objects, arrays, strings, numbers)"
    return None


def check_json(value: Any, what: str) -> None:
    """``InvalidInput`` if ``value`` is not plain JSON a client can read back (``json_fault``)."""
    fault = json_fault(value, what)
    if fault is not None:
        raise InvalidInput(fault)


def _check_metadata_size(metadata: JSON) -> None:
    # Bounded so one session cannot bloat every event and snapshot that carries it.
    check_json(metadata, "metadata")
    try:
        size = len(
            json.dumps(
                metadata, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            ).encode()
        )
    except (TypeError, ValueError):
        raise InvalidInput(
            "metadata must be plain JSON (objects, arrays, strings, numbers)"
        ) from None
    if size > MAX_METADATA_BYTES:
        raise InvalidInput(
            f"metadata is {size} bytes encoded; at most {MAX_METADATA_BYTES} are allowed"
        )


def create(
    kind: Kind,
    *,
    session_id: str,
    owner: str,
    attributes: Mapping[str, Any],
    metadata: Mapping[str, Any],
    actor: Principal,
    now: datetime,
    event_id: str,
    allow_reserved: bool = False,
) -> Change:
    """A new session in the kind's initial state, version 1.

    ``allow_reserved`` lets the kind's own services set its reserved metadata keys."""
    if not owner or len(owner) > 200:
        raise InvalidInput("owner must be a non-empty string of at most 200 characters")
    if owner != actor.sub and not actor.is_admin:
        raise Forbidden("only an admin may create a session for another user")
    attrs = kind.validate_attributes(attributes)
    check_json(attrs, "attributes")
    state = kind.initial_state(attrs)
    if state not in kind.lifecycle.initial:
        raise IllegalTransition(f"kind {kind.name!r} cannot start in state {state!r}")
    session = Session(
        id=session_id,
        kind=kind.name,
        owner=owner,
        state=state,
        version=1,
        created_at=now,
        updated_at=now,
        last_activity_at=now,
        started_at=now if state not in kind.lifecycle.ended else None,
        attributes=attrs,
        metadata=_check_metadata(metadata),
    )
    _check_reserved(kind, session.metadata, allow_reserved)
    _check_metadata_size(session.metadata)
    return Change(
        None, session, _event(kind, session, CREATED, actor, now, event_id, {"state": state})
    )


def act(
    kind: Kind,
    session: Session,
    action: str,
    *,
    actor: Principal,
    now: datetime,
    event_id: str,
    detail: str | None = None,
    reason: str | None = None,
) -> Change:
    """Apply the lifecycle action ``action``; raises if illegal or not allowed to ``actor``.

    ``reason`` overrides the transition's end reason (the scheduler uses it for timeouts);
    ``detail`` is free text from the caller (for example "User requested").
    """
    if not actor.may_read(session.owner):
        raise Forbidden("not your session")
    t = kind.lifecycle.resolve(session.state, action, actor.roles_on(session.owner))
    ends = t.target in kind.lifecycle.ended
    already_ended = session.state in kind.lifecycle.ended
    new = session.evolve(
        state=t.target,
        version=session.version + 1,
        updated_at=now,
        last_activity_at=now,
        started_at=session.started_at or (now if not ends else None),
        ended_at=session.ended_at if already_ended else (now if ends else None),
        end_reason=(reason or t.reason) if ends and not already_ended else session.end_reason,
        end_detail=detail if ends and not already_ended else session.end_detail,
    )
    data: JSON = {"from": session.state, "to": t.target, "action": action}
    if ends:
        data["reason"] = new.end_reason
    if detail is not None:
        data["detail"] = detail
    return Change(session, new, _event(kind, new, STATE_CHANGED, actor, now, event_id, data))


def update(
    kind: Kind,
    session: Session,
    *,
    actor: Principal,
    now: datetime,
    event_id: str,
    attributes: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    merge_metadata: bool = False,
    allow_reserved: bool = False,
    counters: Mapping[str, int] | None = None,
) -> Change:
    """Change attributes, metadata and/or counters (increments) of a session."""
    if not actor.may_read(session.owner):
        raise Forbidden("not your session")
    if session.state in kind.lifecycle.terminal and not actor.is_system:
        raise IllegalTransition(
            f"session is {session.state!r}, a terminal state, and cannot be changed"
        )
    changes: JSON = {}
    attrs = session.attributes
    if attributes is not None:
        attrs = kind.validate_attributes(attributes, base=session.attributes)
        check_json(attrs, "attributes")
        changes["attributes"] = {k: v for k, v in attrs.items() if session.attributes.get(k) != v}
    meta = session.metadata
    if metadata is not None:
        given = _check_metadata(metadata)
        _check_reserved(kind, given, allow_reserved)
        if merge_metadata:
            meta = {**session.metadata, **given}
        else:
            # Replacing keeps what the kind's services keep under reserved keys.
            kept = {k: v for k, v in session.metadata.items() if k in kind.reserved_metadata}
            meta = {**kept, **given}
        _check_metadata_size(meta)
        changes["metadata"] = sorted(given)
    ctrs = session.counters
    if counters:
        ctrs = dict(session.counters)
        for name, inc in counters.items():
            if not isinstance(inc, int) or isinstance(inc, bool):
                raise InvalidInput(f"counter {name!r} increment must be an integer")
            ctrs[name] = ctrs.get(name, 0) + inc
        changes["counters"] = dict(counters)
    new = session.evolve(
        attributes=attrs,
        metadata=meta,
        counters=ctrs,
        version=session.version + 1,
        updated_at=now,
        last_activity_at=now,
    )
    return Change(
        session, new, _event(kind, new, UPDATED, actor, now, event_id, {"changes": changes})
    )
