"""The busiest REST routes answered without FastAPI's routing and dependency machinery.

A change (``PATCH /api/sessions/{id}``), an action (``POST /api/sessions/{id}/actions/{a}``)
and a heartbeat (``POST /api/sessions/{id}/heartbeat``) are most of what a busy server is
asked. Profiled under load, about two thirds of a PATCH's event-loop time was FastAPI
around the endpoint — matching the path against every route, solving the dependencies,
validating the body through its generic machinery — against a third for the change itself
(commit, event, fan-out). This lane answers those three routes directly: the same endpoint
functions of ``rest.py``, the same body models validated the same way (stdlib
``json.loads``, then the model, as FastAPI does), the same credentials check, the same
problem documents (``problems.py``).

It only takes a request it can answer exactly as FastAPI would: credentials that verify, a
JSON body that the route's model accepts, an ``If-Match`` of the documented form. Anything
else — a 401, a 422, a body that is not JSON, an odd content type — is handed to FastAPI
with the body it already read, so every error answer (and its wording) comes from one
place. As ASGI middleware (:class:`FastLane`) it sits inside ``ObserveMiddleware`` and
names the FastAPI route it stands for in the scope, so metrics and logs are the same
whichever path a request took; under ``sessionhub serve`` the HTTP protocol meets these
requests first and answers them through the same :class:`Lane` without ASGI at all
(``httplane.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, NamedTuple

from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.errors import SessionHubError, Unauthenticated
from ..core.principal import Principal
from . import problems, rest
from .runtime import Runtime

_PREFIX = "/api/sessions/"
_PATCH = "/api/sessions/{session_id}"
_HEARTBEAT = "/api/sessions/{session_id}/heartbeat"
_ACTION = "/api/sessions/{session_id}/actions/{action}"
_IF_MATCH = re.compile(rest.IF_MATCH)
#: Content types FastAPI parses as JSON: application/json and application/*+json.
_JSON_TYPE = re.compile(r"^application/(json|[^;\s]+\+json)\s*(;.*)?$", re.IGNORECASE)

#: The request headers the lane reads (ASGI names them in lower case).
_READ = frozenset({b"authorization", b"x-api-key", b"content-type", b"if-match"})

Handler = Callable[[str, str, Principal, BaseModel | None, str | None], Awaitable[Response]]


class Hot(NamedTuple):
    """A request for one of the hot routes: the FastAPI route it stands for, the session,
    the action (or ""), the body model (None: no body is read) and the handler."""

    route: APIRoute
    session_id: str
    action: str
    model: type[BaseModel] | None
    handler: Handler


class Lane:
    """The hot routes of ``rest.py`` (see the module's docstring), for whichever layer
    meets the request first: the ASGI middleware (:class:`FastLane`) or, under ``sessionhub
    serve``, the HTTP protocol itself (``httplane.py``)."""

    def __init__(self, runtime: Runtime, routes: list[Any]) -> None:
        self.runtime = runtime
        self.hub = runtime.hub
        self.auth = runtime.auth
        # The FastAPI routes this lane stands for: their objects go in the scope, as
        # FastAPI puts them there (the metrics' route label).
        self._routes: dict[tuple[str, str], APIRoute] = {}
        for path, route in _flatten(routes):
            for method in route.methods or ():
                self._routes.setdefault((path, method), route)

    def match(self, method: str, path: str) -> Hot | None:
        """The hot route ``method path`` asks for, or None (FastAPI's to route)."""
        if not path.startswith(_PREFIX):
            return None
        parts = path[len(_PREFIX) :].split("/")
        if not parts[0]:
            return None
        model: type[BaseModel] | None
        handler: Handler
        if method == "PATCH" and len(parts) == 1:
            template, action, model, handler = _PATCH, "", rest.PatchSession, self._patch
        elif method != "POST":
            return None
        elif len(parts) == 2 and parts[1] == "heartbeat":
            template, action, model, handler = _HEARTBEAT, "", None, self._heartbeat
        elif len(parts) == 3 and parts[1] == "actions" and parts[2]:
            template, action, model, handler = _ACTION, parts[2], rest.ActionBody, self._act
        else:
            return None
        route = self._routes.get((template, method))
        if route is None:  # the route is not mounted in this app: FastAPI decides
            return None
        return Hot(route, parts[0], action, model, handler)

    async def answer(self, scope: Scope, body: bytes, hot: Hot) -> Response | None:
        """The response to ``hot`` with ``body``, or None when FastAPI must answer (an error
        it words, see the module's docstring); the scope marked as FastAPI marks it."""
        args = self.accept(scope["headers"], body, hot.model)
        if args is None:
            return None
        principal, parsed, if_match = args
        _mark(scope, hot, principal)
        try:
            return await hot.handler(hot.session_id, hot.action, principal, parsed, if_match)
        except Exception as exc:
            return _failure(scope, exc)

    def answer_now(self, scope: Scope, hot: Hot) -> Response | None:
        """:meth:`answer` without awaiting, where that is possible: a heartbeat for a
        session this node knows (its body unread, as FastAPI's route leaves it; no store).
        None: call :meth:`answer`."""
        if hot.handler != self._heartbeat:
            return None
        args = self.accept(scope["headers"], b"", None)
        if args is None:
            return None
        principal = args[0]
        try:
            at = self.hub.heartbeat_known(principal, hot.session_id)
        except Exception as exc:
            _mark(scope, hot, principal)
            return _failure(scope, exc)
        if at is None:  # not known here: read first (answer())
            return None
        _mark(scope, hot, principal)
        return rest.OrjsonResponse(rest.heartbeat_answer(hot.session_id, at))

    def accept(
        self, headers: Iterable[tuple[bytes, bytes]], body: bytes, model: type[BaseModel] | None
    ) -> tuple[Principal, BaseModel | None, str | None] | None:
        """The caller, the parsed body and If-Match, when FastAPI would accept them all."""
        first: dict[bytes, str] = {}
        for name, value in headers:
            # As Starlette's ``headers.get``: the first of several (even an empty one).
            if name in _READ and name not in first:
                first[name] = value.decode("latin-1")
        authorization, api_key = first.get(b"authorization"), first.get(b"x-api-key")
        content_type, if_match = first.get(b"content-type"), first.get(b"if-match")
        try:
            principal = self.auth.authenticate(authorization, api_key)
        except Unauthenticated:
            return None
        if model is None:  # a heartbeat: FastAPI reads neither a body nor If-Match
            return principal, None, None
        if if_match is not None and not _IF_MATCH.search(if_match):
            return None
        if not body:  # PATCH needs one (422); an action's is optional
            return (principal, None, if_match) if model is rest.ActionBody else None
        if content_type is None or not _JSON_TYPE.match(content_type):
            return None  # FastAPI's strict content type: no type is not JSON
        try:
            parsed = model.model_validate(json.loads(body))
        except (ValueError, ValidationError):  # JSONDecodeError, UnicodeDecodeError too
            return None
        return principal, parsed, if_match

    async def _patch(
        self,
        session_id: str,
        _action: str,
        principal: Principal,
        body: BaseModel | None,
        if_match: str | None,
    ) -> Response:
        assert isinstance(body, rest.PatchSession)
        return await rest.patch_session(session_id, body, self.hub, principal, if_match)

    async def _act(
        self,
        session_id: str,
        action: str,
        principal: Principal,
        body: BaseModel | None,
        if_match: str | None,
    ) -> Response:
        assert body is None or isinstance(body, rest.ActionBody)
        return await rest.act(session_id, action, self.hub, principal, body, if_match)

    async def _heartbeat(
        self,
        session_id: str,
        _action: str,
        principal: Principal,
        _body: BaseModel | None,
        _if_match: str | None,
    ) -> Response:
        return rest.OrjsonResponse(await rest.heartbeat(session_id, self.hub, principal))


class FastLane:
    """ASGI middleware: the :class:`Lane` in front of FastAPI's routing."""

    def __init__(self, app: ASGIApp, *, lane: Lane) -> None:
        self.app = app
        self.lane = lane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hot = self.lane.match(scope["method"], scope["path"])
            if hot is not None:
                await self._serve(scope, receive, send, hot)
                return
        await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, hot: Hot) -> None:
        try:
            body = await _read_body(receive)
        except ClientDisconnect:
            return
        except HTTPException as exc:  # larger than the limit (ObserveMiddleware counts)
            await problems.problem(exc.status_code, "Payload too large", str(exc.detail))(
                scope, receive, send
            )
            return
        response = await self.lane.answer(scope, body, hot)
        if response is None:
            await self.app(scope, _replay(body, receive), send)
            return
        await response(scope, receive, send)


def _mark(scope: Scope, hot: Hot, principal: Principal) -> None:
    """Mark the scope as FastAPI would: the route (the metrics' label) and the caller in
    ``state`` (the request log's user)."""
    scope["route"] = hot.route
    scope.setdefault("state", {})["principal"] = principal


def _failure(scope: Scope, exc: Exception) -> Response:
    """The problem answer to what a handler raised, as FastAPI's exception handlers give
    it (called inside the ``except``: a bug is logged with its traceback)."""
    if isinstance(exc, SessionHubError):
        return problems.for_error(exc)
    if isinstance(exc, problems.UNAVAILABLE):
        return problems.unavailable(scope["method"], scope["path"], exc)
    return problems.unexpected(scope["method"], scope["path"])


def _flatten(routes: list[Any]) -> Iterator[tuple[str, APIRoute]]:
    """(full path, route) of every FastAPI route, included routers' as FastAPI nests them."""
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:
            for ctx in contexts():
                if isinstance(ctx.original_route, APIRoute):
                    yield ctx.path, ctx.original_route
        elif isinstance(route, APIRoute):
            yield route.path, route


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands FastAPI the body already read, then the client's own."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again
