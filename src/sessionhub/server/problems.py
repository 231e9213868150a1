"""Errors as ``application/problem+json`` (RFC 9457), never a bare 500."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..core.errors import SessionHubError

log = logging.getLogger("sessionhub.http")

PROBLEM = "application/problem+json"
#: Seconds a client is told to wait before retrying a 503 unless the error says otherwise.
RETRY_AFTER = 1


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    """A problem document. ``retry_after`` (seconds) becomes the ``Retry-After`` header, which
    every 503 carries: "unavailable" is only useful with a hint of when to come back."""
    retry_after = extra.pop("retry_after", None)
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="sessionhub"'
    if status == 503 or retry_after is not None:
        headers["Retry-After"] = str(max(0, round(retry_after or RETRY_AFTER)))
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers or None)


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


def install(app: FastAPI) -> None:
    @app.exception_handler(SessionHubError)
    async def _engine_error(_: Request, exc: SessionHubError) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_error(e, exc.body) for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
        return problem(422, "Invalid input", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {
            400: "Bad request",
            404: "Not found",
            405: "Method not allowed",
            413: "Payload too large",
        }
        detail = (_bad_body(exc) if exc.status_code == 400 else None) or str(exc.detail)
        return problem(exc.status_code, titles.get(exc.status_code, "Error"), detail)

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        # The database (or another backend) did not answer: a temporary condition the client
        # may retry, not a bug. Registered per class so Starlette does not re-raise it.
        log.warning(
            "backend unavailable on %s %s: %s: %s",
            request.method,
            request.url.path,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        return problem(503, "Unavailable", "the database is not answering right now; retry shortly")

    for cls in (OperationalError, InterfaceError, DisconnectionError, OSError, TimeoutError):
        app.add_exception_handler(cls, _unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(
            500, "Internal error", "the server failed to handle this request; it has been logged"
        )
