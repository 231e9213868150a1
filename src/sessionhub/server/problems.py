"""Errors as ``application/problem+json`` (RFC 9457), never a bare 500; and what the OpenAPI
document says about them.

Each route declares the problems particular to it with ``responses=responses(403, 409)``;
:func:`document` adds those every route of a shape can answer (401 where credentials are
needed, 422 where anything is validated, 400 and 413 where a body is read, 404 where a path
names something, 503 where a backend is asked) and replaces FastAPI's own 422 entry, which
describes a body this server never sends.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from ..core.errors import SessionHubError

log = logging.getLogger("sessionhub.http")

PROBLEM = "application/problem+json"
#: The pattern of text the store keeps (owners, reasons, ...): PostgreSQL text cannot hold
#: NUL characters, so every backend refuses them alike, at the edge.
NO_NUL = r"^[^\x00]*$"
#: Patterns of request fields, in words (a client is told what is wrong, not the regex).
PATTERN_WORDS = {NO_NUL: "must not contain NUL characters"}
#: Seconds a client is told to wait before retrying a 503 (or a 429) unless the error says.
RETRY_AFTER = 1


def problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """A problem document. ``retry_after`` (seconds) becomes the ``Retry-After`` header, which
    every 503 and 429 carries: "unavailable" is only useful with a hint of when to come back."""
    retry_after = extra.pop("retry_after", None)
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="sessionhub"'
    if status in (429, 503) or retry_after is not None:
        headers["Retry-After"] = str(max(0, round(retry_after or RETRY_AFTER)))
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers or None)


# -- the OpenAPI side ----------------------------------------------------------------------------

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An error (RFC 9457). Some carry more fields: `errors` (422: one entry per "
    "invalid field), `current` (409/412: the session as it is now).",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

#: What each problem status means here (the OpenAPI response descriptions).
MEANINGS = {
    400: "Bad request: the body is not JSON in UTF-8, or the resource refuses the request "
    "in its current state (a compat API's own code)",
    401: "No credentials, or credentials that are not valid (a bearer JWT or an X-API-Key)",
    403: "The credentials are valid, but not for this (another role is needed)",
    404: "No such resource, or none the caller may see (existence does not leak)",
    409: "Not allowed in the resource's current state, or a concurrent change won; "
    "`current` is the session as it is now",
    412: "If-Match named another version than the current one; `current` is the session",
    413: "The request body is larger than the server accepts",
    422: "Invalid input; `errors` names each field and what is wrong with it",
    429: "Too many open streams and sockets from this address: retry after Retry-After",
    503: "A backend (the database) is not answering: retry after Retry-After",
}
_HEADERS = {
    401: {"WWW-Authenticate": "Bearer"},
    429: {"Retry-After": "Seconds to wait"},
    503: {"Retry-After": "Seconds to wait"},
}


def _entry(status: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "description": MEANINGS[status],
        "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    headers = _HEADERS.get(status)
    if headers:
        entry["headers"] = {
            name: {"description": text, "required": True, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return entry


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route for the problems particular to it."""
    return {status: _entry(status) for status in statuses}


#: Operations that ask no backend (memory only): no 503.
NO_BACKEND = frozenset({"/api/health", "/api/config/health"})


def document(schema: dict[str, Any]) -> dict[str, Any]:
    """Add to every operation of an OpenAPI document the problems its shape can answer (after
    the security requirements are in place: an operation with ``security: []`` is public)."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            answers = operation.setdefault("responses", {})
            params = operation.get("parameters", [])
            for param in params:
                _absent_is_null(param)
            shared: set[int] = set()
            if operation.get("security") != []:
                shared.add(401)
            if params or "requestBody" in operation:
                shared.add(422)
            if "requestBody" in operation:
                shared |= {400, 413}
            if any(p.get("in") == "path" for p in params):
                shared.add(404)
            if path not in NO_BACKEND:
                shared.add(503)
            for status in shared:
                answers[str(status)] = _entry(status)
    return schema


def _absent_is_null(param: dict[str, Any]) -> None:
    """An optional query or header parameter is ``None`` when it is absent: there is no way
    to send a null on the wire (``?cursor=null`` is the text "null"), so the document does
    not offer one. FastAPI writes ``anyOf: [<schema>, {"type": "null"}]`` for them."""
    schema = param.get("schema", {})
    options = schema.get("anyOf")
    if param.get("in") not in ("query", "header") or not isinstance(options, list):
        return
    rest = [o for o in options if o != {"type": "null"}]
    if len(rest) == len(options) or param.get("required"):
        return
    del schema["anyOf"]
    if len(rest) == 1:
        schema.update(rest[0])
    else:
        schema["anyOf"] = rest


def _route_table(app: Any) -> list[tuple[str, re.Pattern[str], frozenset[str]]]:
    """Every HTTP route of ``app`` as (path template, its regex, methods), built once.
    FastAPI nests included routers (``effective_route_contexts`` yields each route with its
    full path); a plain Starlette route is taken as it is."""
    table: list[tuple[str, re.Pattern[str], frozenset[str]]] | None = getattr(
        app.state, "_allow_table", None
    )
    if table is not None:
        return table
    table = []
    for route in app.router.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        found = (
            [(ctx.path, ctx.original_route) for ctx in contexts()]
            if contexts is not None
            else [(getattr(route, "path", ""), route)]
        )
        for template, original in found:
            methods = getattr(original, "methods", None)
            if methods and template:
                table.append((template, compile_path(template)[0], frozenset(methods)))
    app.state._allow_table = table
    return table


def _allowed(request: Request) -> str:
    """``Allow`` of a 405: the methods of the path's resource, which is the most specific
    route template matching it (fewest parameters: ``/api/sessions/active`` is not
    ``/api/sessions/{session_id}`` although both match). Starlette's own names only the
    first route that matched, while several routes may share one template."""
    path = request.scope.get("path", "")
    matching = [(t.count("{"), t, m) for t, rx, m in _route_table(request.app) if rx.match(path)]
    if not matching:
        return ""
    fewest = min(n for n, _, _ in matching)
    methods = set().union(*(m for n, _, m in matching if n == fewest)) - {"HEAD"}
    order = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
    return ", ".join(sorted(methods, key=lambda m: (order.index(m) if m in order else 99, m)))


def _loc(loc: Any) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(loc[0] if loc else "request")


def _where(doc: object, pos: int) -> str:
    """A character position in words: "line 1, column 10 (character 9)"."""
    if not isinstance(doc, str):
        return f"character {pos}"
    line = doc.count("\n", 0, pos) + 1
    column = pos - (doc.rfind("\n", 0, pos) + 1) + 1
    return f"line {line}, column {column} (character {pos})"


def _error(e: dict[str, Any], body: object) -> dict[str, str]:
    """One validation error as ``{field, message}`` in words a client can act on."""
    loc: Sequence[Any] = e.get("loc", ())
    kind = e.get("type")
    if kind == "json_invalid":
        # FastAPI reports the syntax error's offset as the last part of the location, which
        # would read as a field named "9".
        pos = loc[-1] if loc and isinstance(loc[-1], int) else 0
        reason = str((e.get("ctx") or {}).get("error") or "syntax error")
        return {
            "field": "body",
            "message": f"the body is not valid JSON: {reason} at {_where(body, pos)}",
        }
    if tuple(loc) == ("body",) and kind in ("model_attributes_type", "dict_type"):
        return {"field": "body", "message": "the body must be a JSON object ({...})"}
    if tuple(loc) == ("body",) and kind == "missing":
        return {"field": "body", "message": "a JSON body is required"}
    if kind == "string_pattern_mismatch":
        words = PATTERN_WORDS.get(str((e.get("ctx") or {}).get("pattern")))
        if words is not None:
            return {"field": _loc(loc), "message": words}
    return {"field": _loc(loc), "message": str(e.get("msg", "invalid"))}


def _bad_body(exc: StarletteHTTPException) -> str | None:
    """What is wrong with a body FastAPI could not parse, when the cause tells (else None)."""
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return (
            f"the body is not valid UTF-8 (byte 0x{cause.object[cause.start]:02x} at position "
            f"{cause.start}): send JSON encoded as UTF-8"
        )
    return None


def for_error(exc: SessionHubError) -> JSONResponse:
    """The answer to an engine error (404, 409, 412, ...)."""
    return problem(exc.status, exc.title, exc.detail, **exc.extra)


#: Exceptions meaning a backend did not answer (503), not a bug.
UNAVAILABLE: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    OSError,
    TimeoutError,
)


def unavailable(method: str, path: str, exc: Exception) -> JSONResponse:
    """The answer when the database (or another backend) did not answer: a temporary
    condition the client may retry."""
    log.warning(
        "backend unavailable on %s %s: %s: %s",
        method,
        path,
        type(exc).__name__,
        str(exc).splitlines()[0] if str(exc) else "",
    )
    return problem(503, "Unavailable", "the database is not answering right now; retry shortly")


def unexpected(method: str, path: str) -> JSONResponse:
    """The answer to a bug: logged with its traceback (call it in the ``except``), 500
    without internals."""
    log.exception("unhandled error on %s %s", method, path)
    return problem(
        500, "Internal error", "the server failed to handle this request; it has been logged"
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(SessionHubError)
    async def _engine_error(_: Request, exc: SessionHubError) -> JSONResponse:
        return for_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_error(e, exc.body) for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
        return problem(422, "Invalid input", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {
            400: "Bad request",
            404: "Not found",
            405: "Method not allowed",
            413: "Payload too large",
        }
        detail = (_bad_body(exc) if exc.status_code == 400 else None) or str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # RFC 9110: a 405 lists what the resource does allow.
            headers["Allow"] = _allowed(request)
            detail = f"{request.method} is not allowed here; allowed: {headers['Allow']}"
        return problem(exc.status_code, titles.get(exc.status_code, "Error"), detail, headers)

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        # Registered per class so Starlette does not re-raise it.
        return unavailable(request.method, request.url.path, exc)

    for cls in UNAVAILABLE:
        app.add_exception_handler(cls, _unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected(request.method, request.url.path)
