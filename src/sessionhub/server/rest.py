"""The REST API over sessions: create, list, read, change, act, heartbeat, events.

What each route accepts is what its OpenAPI entry says (``describe`` fills in what depends
on the registered kinds: their names, states and attributes), and each route declares the
problems it can answer (``problems.responses``); ``problems.document`` adds the ones every
route shares (401, 422, 503, ...).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..core.errors import InvalidInput
from ..core.kind import TIMEOUTS
from ..core.model import JSON, Session, iso
from ..core.query import SessionQuery
from ..core.streams import StreamPosition
from ..core.topics import ALL as ALL_TOPIC
from ..hub import Hub
from .deps import HubDep, JsonAttributes, JsonObject, PrincipalDep
from .problems import NO_NUL, responses

router = APIRouter(prefix="/api", tags=["sessions"])

#: The largest version a session can have (the column is a 32-bit integer).
MAX_VERSION = 2**31 - 1


_OWNER = Field(
    default=None,
    min_length=1,
    max_length=200,
    pattern=NO_NUL,
    description="Owner; admins only may name another user (others: 403).",
)


class CreateSession(BaseModel):
    """The body of ``POST /api/sessions``. In the OpenAPI document it is one variant per
    kind (``describe``): each kind's attributes, required ones and reserved metadata keys."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(
        default="generic", max_length=64, description="The session's kind (see GET /api/kinds)."
    )
    owner: str | None = _OWNER
    attributes: JsonAttributes = Field(
        default_factory=dict, description="Validated against the kind's schema."
    )
    metadata: JsonObject = Field(
        default_factory=dict,
        description="Free JSON kept with the session (at most 64 KiB encoded).",
    )


class PatchSession(BaseModel):
    """Send ``attributes`` (merged into the current ones), ``metadata`` (replaces the
    object), or both; at least one of them. Which attributes a session has depends on its
    kind (``GET /api/kinds``): an unknown or immutable one is a 422. So is a metadata key
    the kind reserves for itself (``GET /api/kinds``; ``remote_access`` keeps its commands
    in ``_commands``), even one copied from the session as read."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["attributes"], "properties": {"attributes": {"type": "object"}}},
                {"required": ["metadata"], "properties": {"metadata": {"type": "object"}}},
            ]
        },
    )

    attributes: JsonAttributes | None = None
    metadata: JsonObject | None = Field(
        default=None, description="Replaces the metadata object (at most 64 KiB encoded)."
    )


class ActionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    detail: str | None = Field(
        default=None,
        max_length=1000,
        pattern=NO_NUL,
        description="Free text, e.g. why it was stopped.",
    )


def _csv(values: list[str] | None) -> tuple[str, ...]:
    out: list[str] = []
    for v in values or []:
        out += [x.strip() for x in v.split(",") if x.strip()]
    return tuple(out)


def _kinds(hub: Hub, values: list[str] | None) -> tuple[str, ...]:
    """The ``kind`` filter of a count, each a registered kind (else a 422 naming them)."""
    kinds = _csv(values)
    for name in kinds:
        hub.kinds.get_kind(name)
    return kinds


def _states(hub: Hub, kinds: tuple[str, ...], values: list[str] | None) -> tuple[str, ...]:
    """The ``state`` filter, each a state of the named kinds (all kinds when none is named or
    known): a misspelt state would otherwise match nothing and look like an empty list."""
    states = _csv(values)
    if not states:
        return states
    named = [hub.kinds.get_kind(k) for k in kinds if k in hub.kinds]
    valid = list(dict.fromkeys(s for k in named or hub.kinds.values() for s in k.lifecycle.states))
    unknown = [s for s in states if s not in valid]
    if unknown:
        scope = f" of kind {', '.join(k.name for k in named)}" if named else ""
        message = (
            f"unknown state {', '.join(repr(s) for s in unknown)}: the states{scope} are "
            + ", ".join(valid)
        )
        raise InvalidInput(message, errors=[{"field": "state", "message": message}])
    return states


_TEXT_HELP = "Case-insensitive text that the session's id, owner or attributes contain"
_KIND_HELP = "Kind(s), comma-separated or repeated (see GET /api/kinds)"
_LIST_KIND_HELP = _KIND_HELP + "; an unknown kind matches nothing"
_STATE_HELP = (
    "State(s), comma-separated or repeated; each a state of the kinds named in `kind` "
    "(of any kind when none is named), else a 422 naming the valid ones"
)

#: ``If-Match``: a session version as its ETag (``"3"``, ``W/"3"``) or ``*`` (any version).
IF_MATCH = r'^(\*|(W/)?"?[0-9]{1,18}"?)$'
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        pattern=IF_MATCH,
        description='Apply only to this version (the ETag, e.g. "3"), else 412',
    ),
]


def _if_match(value: str | None) -> int | None:
    if value is None or value.strip() == "*":
        return None  # "*" matches any current version (RFC 9110)
    raw = value.strip().removeprefix("W/").strip('"')
    if not raw.isdigit():
        raise InvalidInput('If-Match must be a session version, e.g. If-Match: "3"')
    return int(raw)


# -- page cursors --------------------------------------------------------------------------------

#: A page cursor as the REST API spells it: the position after the last item of a page,
#: ``<created_at in microseconds since 1970>.<session id>`` (newest first, so the next page
#: holds what sorts before it). Every string of this form is a position: the pattern is all
#: a client (or a fuzzer) needs to know, and no well-formed cursor is ever refused.
CURSOR = r"^[0-9]{1,16}\.[^\x00]{1,200}$"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _rest_cursor(session: Session) -> str:
    created = session.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    micros = (created - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{session.id}"


def _store_cursor(cursor: str) -> str:
    """The store's opaque cursor for a REST cursor (its ``encode_cursor`` format: the
    base64url of ``[created_at ISO, id]``). The REST layer owns the public format so that
    the OpenAPI document can state it exactly."""
    micros, _, sid = cursor.partition(".")
    created = _EPOCH + timedelta(microseconds=int(micros))
    raw = orjson.dumps([created.isoformat(), sid])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _stream(topic: str, position: StreamPosition) -> JSON:
    return {"topic": topic, "offset": position.offset, "epoch": position.epoch}


def session_response(
    hub: HubDep, session: Session, status: int = 200, position: StreamPosition | None = None
) -> JSONResponse:
    body = hub.view(session)
    if position is not None:
        body["stream"] = _stream(f"session:{session.id}", position)
    return OrjsonResponse(body, status_code=status, headers={"ETag": f'"{session.version}"'})


class OrjsonResponse(JSONResponse):
    """A JSON answer encoded by orjson: the same compact UTF-8 JSON as Starlette's, in a
    fraction of the time (every value was checked to be plain JSON on the way in)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


# -- the bodies of the answers ---------------------------------------------------------------

_SESSION_REF: JSON = {"$ref": "#/components/schemas/Session"}


def _answer(status: int, schema: JSON, description: str | None = None) -> dict[int | str, Any]:
    entry: JSON = {"content": {"application/json": {"schema": schema}}}
    if description:
        entry["description"] = description
    return {status: entry}


_SESSION_ANSWER = _answer(200, _SESSION_REF, "The session (ETag: its version)")
_REPLAYED: dict[int | str, dict[str, Any]] = {
    **_answer(201, _SESSION_REF, "Created (ETag: its version)"),
    **_answer(
        200,
        _SESSION_REF,
        "An earlier request with this Idempotency-Key created the session: it is returned, "
        "nothing new is created",
    ),
}


@router.post(
    "/sessions",
    status_code=201,
    summary="Create a session",
    responses={**_REPLAYED, **responses(403, 409)},
)
async def create_session(
    body: CreateSession,
    hub: HubDep,
    principal: PrincipalDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=200,
            description="Repeat the request safely: the same key with the same body returns "
            "the first answer (200); with another body it is a 422",
        ),
    ] = None,
) -> JSONResponse:
    """Create a session of ``kind``. With an ``Idempotency-Key`` header, repeating the request
    returns the session created the first time (200 instead of 201) and creates nothing; the
    same key with a different body is a 422 (the key names another request)."""
    session, created = await hub.create(
        principal,
        body.kind,
        owner=body.owner,
        attributes=body.attributes,
        metadata=body.metadata,
        idempotency_key=idempotency_key,
        fingerprint=_fingerprint(body) if idempotency_key else None,
    )
    return session_response(hub, session, 201 if created else 200)


def _fingerprint(body: CreateSession) -> str:
    """A digest of what the request asks for (key order does not matter). The body's JSON
    was checked at the edge (``JsonObject``), so it always encodes."""
    canonical = orjson.dumps(body.model_dump(), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


@router.get(
    "/sessions",
    summary="List sessions",
    responses=_answer(
        200,
        {
            "type": "object",
            "required": ["items", "next_cursor", "stream"],
            "properties": {
                "items": {"type": "array", "items": _SESSION_REF},
                "next_cursor": {"type": ["string", "null"], "pattern": CURSOR},
                "stream": {"$ref": "#/components/schemas/StreamPosition"},
            },
        },
    ),
)
async def list_sessions(
    hub: HubDep,
    principal: PrincipalDep,
    kind: Annotated[list[str] | None, Query(description=_LIST_KIND_HELP)] = None,
    state: Annotated[list[str] | None, Query(description=_STATE_HELP)] = None,
    owner: Annotated[str | None, Query(max_length=200)] = None,
    text: Annotated[str | None, Query(max_length=200, description=_TEXT_HELP)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None,
        Query(max_length=500, pattern=CURSOR, description="`next_cursor` of the previous page"),
    ] = None,
) -> JSON:
    """Newest first. ``next_cursor`` fetches the next page; non-admins see only their own.

    ``stream`` is the position (topic, offset, epoch) of the realtime topic that carries
    changes to these sessions, read *before* the snapshot: subscribe from there and nothing
    is missed (a publication whose ``version`` is not newer than the snapshot's is a repeat).
    """
    kinds = _csv(kind)  # an unknown kind matches nothing (the count refuses it, see there)
    states = _states(hub, kinds, state)
    if principal.is_admin and owner is None:
        topic = f"sessions:{kinds[0]}" if len(kinds) == 1 else ALL_TOPIC
    elif principal.is_admin:
        topic = f"user:{owner}"
    else:
        # A non-admin only ever sees their own sessions, so only their own topic applies.
        topic = f"user:{principal.sub}"
    position = await hub.broker.position(topic)
    page = await hub.list_sessions(
        principal,
        SessionQuery(
            kinds=kinds,
            states=states,
            owner=owner,
            text=text or None,
            limit=limit,
            cursor=_store_cursor(cursor) if cursor else None,
        ),
    )
    more = page.next_cursor is not None and page.items
    return {
        "items": [hub.view(s) for s in page.items],
        "next_cursor": _rest_cursor(page.items[-1]) if more else None,
        "stream": _stream(topic, position),
    }


@router.get("/sessions/count", summary="Count sessions")
async def count_sessions(
    hub: HubDep,
    principal: PrincipalDep,
    kind: Annotated[list[str] | None, Query(description=_KIND_HELP)] = None,
    state: Annotated[list[str] | None, Query(description=_STATE_HELP)] = None,
    owner: Annotated[str | None, Query(max_length=200)] = None,
    text: Annotated[str | None, Query(max_length=200, description=_TEXT_HELP)] = None,
) -> JSON:
    """``count`` matches the filters; ``active_sessions`` counts those not yet ended."""
    kinds = _kinds(hub, kind)
    q = SessionQuery(kinds=kinds, states=_states(hub, kinds, state), owner=owner, text=text or None)
    total = await hub.count(principal, q)
    active = 0
    for name in kinds or tuple(hub.kinds):
        k = hub.kinds.get_kind(name)
        live = tuple(
            s
            for s in k.lifecycle.states
            if s not in k.lifecycle.ended and (not q.states or s in q.states)
        )
        if live:
            active += await hub.count(
                principal, SessionQuery(kinds=(name,), states=live, owner=owner, text=q.text)
            )
    return {"count": total, "active_sessions": active}


@router.get("/sessions/{session_id}", summary="Read a session", responses=_SESSION_ANSWER)
async def get_session(session_id: str, hub: HubDep, principal: PrincipalDep) -> JSONResponse:
    """The session, with ``stream``: the position of ``session:<id>`` this snapshot reflects."""
    position = await hub.broker.position(f"session:{session_id}")
    return session_response(hub, await hub.get(principal, session_id), position=position)


@router.patch(
    "/sessions/{session_id}",
    summary="Change attributes and metadata",
    responses={**_SESSION_ANSWER, **responses(403, 409, 412)},
)
async def patch_session(
    session_id: str,
    body: PatchSession,
    hub: HubDep,
    principal: PrincipalDep,
    if_match: IfMatch = None,
) -> JSONResponse:
    """With ``If-Match: "<version>"`` the change applies only to that version (else 412);
    without it the change is merged onto the current version. Which attributes exist, and
    which may not change after creation, is the session's kind's (``GET /api/kinds``): any
    other is a 422 naming the attribute."""
    if body.attributes is None and body.metadata is None:
        raise InvalidInput("nothing to change: send attributes and/or metadata")
    session = await hub.update(
        principal,
        session_id,
        attributes=body.attributes,
        metadata=body.metadata,
        expected_version=_if_match(if_match),
    )
    return session_response(hub, session)


@router.post(
    "/sessions/{session_id}/actions/{action}",
    summary="Apply a lifecycle action",
    responses={**_SESSION_ANSWER, **responses(403, 409, 412)},
)
async def act(
    session_id: str,
    action: str,
    hub: HubDep,
    principal: PrincipalDep,
    body: ActionBody | None = None,
    if_match: IfMatch = None,
) -> JSONResponse:
    """Move the session by a named action of its kind (GET /api/kinds lists them).
    Illegal from the current state -> 409 with ``current``; not your role -> 403."""
    session = await hub.act(
        principal,
        session_id,
        action,
        detail=body.detail if body else None,
        expected_version=_if_match(if_match),
    )
    return session_response(hub, session)


@router.post(
    "/sessions/{session_id}/heartbeat", summary="Keep a session alive", responses=responses(409)
)
async def heartbeat(session_id: str, hub: HubDep, principal: PrincipalDep) -> JSON:
    """Accepted in memory (200 at once) and written within the sweep interval (at most
    5 s); after a crash the session gets a whole timeout to be heard again, so a lost
    heartbeat never drops a live session (``docs/reliability.md``). 409: it has ended."""
    return heartbeat_answer(session_id, await hub.heartbeat(principal, session_id))


def heartbeat_answer(session_id: str, at: datetime) -> JSON:
    """The body of a heartbeat's 200 (the HTTP lane answers without awaiting, too)."""
    return {"ok": True, "session_id": session_id, "last_activity_at": iso(at)}


@router.get("/sessions/{session_id}/events", summary="A session's event log")
async def session_events(
    session_id: str,
    hub: HubDep,
    principal: PrincipalDep,
    # A version is a 32-bit column (PostgreSQL's integer): beyond it is a 422, not a
    # database error.
    after_version: Annotated[int, Query(ge=0, le=MAX_VERSION)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSON:
    events = await hub.events(principal, session_id, after_version=after_version, limit=limit)
    return {"items": [e.to_dict() for e in events]}


@router.get("/kinds", summary="The kinds this server knows")
async def kinds(hub: HubDep, _principal: PrincipalDep) -> JSON:
    out = []
    for k in hub.kinds.values():
        lc = k.lifecycle
        out.append(
            {
                "name": k.name,
                "id_prefix": k.id_prefix,
                "states": list(lc.states),
                "initial": sorted(lc.initial),
                "ended": sorted(lc.ended),
                "terminal": sorted(lc.terminal),
                "actions": [
                    {
                        "name": t.action,
                        "from": sorted(t.sources),
                        "to": t.target,
                        "roles": sorted(t.roles),
                    }
                    for t in lc.transitions
                ],
                "attributes": {
                    n: {
                        "choices": list(a.choices) if a.choices else None,
                        "default": a.default,
                        "required": a.required,
                    }
                    for n, a in k.attributes.items()
                },
                "timeouts": {
                    n: (getattr(k, n).total_seconds() if getattr(k, n) else None) for n in TIMEOUTS
                },
            }
        )
    return {"kinds": out}
