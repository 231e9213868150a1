"""geckos.io (v3) signalling on the HTTP port: what the real ``@geckos.io/client`` calls.

Routes, under ``/.wrtc/v2`` (the shared room; what the Aesthetic Computer client uses) and
``/room/{slug}/.wrtc/v2`` (that slug's room), ``/.wrtc/v1`` served alike for older clients:

* ``POST /connections`` (no body) -> ``{"userData": {}, "id": <24 [A-Za-z0-9]>,
  "localDescription": {"type": "offer", "sdp"}}``; 429 over the peer limits, 401 without a
  good token when ``SESSIONHUB_ROOMS_REQUIRE_TOKEN=1`` (the client's ``authorization``
  option: ``Bearer <jwt>`` or the bare token), 503 without aiortc.
* ``POST /connections/{id}/remote-description`` with ``{type: "answer", sdp}`` -> 200.
* ``GET /connections/{id}/additional-candidates`` -> ``[]`` (the offer carries every one).
* ``POST /connections/{id}/close`` -> 200.
* ``OPTIONS`` on any of them -> 200.

Every answer carries CORS headers that work cross-origin (``*``, methods ``OPTIONS, GET,
POST``, headers ``content-type, authorization``), errors included, so a browser sees the
status instead of a network error. The client treats any status >= 300 as a failed connect.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from ...core.errors import SessionHubError, Unauthenticated
from ...kinds import room as kind
from ..deps import get_runtime
from .aesthetic import rooms_of

router = APIRouter(tags=["Aesthetic Computer (seed 003)"])

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "OPTIONS, GET, POST",
    "Access-Control-Allow-Headers": "content-type, authorization",
    "Access-Control-Max-Age": "600",
}
PREFIXES = (
    "/.wrtc/v2",
    "/.wrtc/v1",
    "/room/{slug}/.wrtc/v2",
    "/room/{slug}/.wrtc/v1",
)
_ID = re.compile(r"^[0-9A-Za-z]{24}$")
#: Largest signalling body read (an answer SDP is a few KB).
MAX_BODY = 64 * 1024

Handler = Callable[[Request], Awaitable[Response]]


def _json(value: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status, headers=CORS, media_type="application/json")


def _guarded(handler: Handler) -> Handler:
    async def serve(request: Request) -> Response:
        try:
            return await handler(request)
        except SessionHubError as exc:
            return _json({"error": exc.title, "detail": exc.detail}, exc.status)

    return serve


def _slug(request: Request) -> str:
    return str(request.path_params.get("slug", kind.SHARED))


def _id(request: Request) -> str:
    pid = str(request.path_params.get("id", ""))
    if not _ID.match(pid):
        raise SessionHubError("a connection id is 24 letters and digits")
    return pid


def _authorize(request: Request) -> None:
    rooms = rooms_of(request)
    if not rooms.config.require_token:
        return
    value = (request.headers.get("authorization") or "").strip()
    if not value:
        raise Unauthenticated("a token is required: geckos({authorization: 'Bearer <jwt>'})")
    if " " not in value:
        value = f"Bearer {value}"  # geckos sends the option as given: accept a bare token
    get_runtime(request).auth.authenticate(value, None)


async def connections(request: Request) -> Response:
    _authorize(request)
    datagrams = rooms_of(request).datagrams
    address = request.client.host if request.client else ""
    return _json(await datagrams.offer(_slug(request), address))


async def remote_description(request: Request) -> Response:
    datagrams = rooms_of(request).datagrams
    pid = _id(request)
    body = await request.body()
    if len(body) > MAX_BODY:
        raise SessionHubError("the answer is too large")
    try:
        description = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise SessionHubError("the body must be JSON {type, sdp}") from None
    await datagrams.answer(pid, description)
    return _json({})


async def additional_candidates(request: Request) -> Response:
    return _json(rooms_of(request).datagrams.candidates(_id(request)))


async def close(request: Request) -> Response:
    await rooms_of(request).datagrams.close_peer(_id(request))
    return _json({})


async def preflight(request: Request) -> Response:
    return Response(status_code=200, headers=CORS)


for _prefix in PREFIXES:
    router.add_api_route(
        f"{_prefix}/connections", _guarded(connections), methods=["POST"], include_in_schema=False
    )
    router.add_api_route(
        f"{_prefix}/connections/{{id}}/remote-description",
        _guarded(remote_description),
        methods=["POST"],
        include_in_schema=False,
    )
    router.add_api_route(
        f"{_prefix}/connections/{{id}}/additional-candidates",
        _guarded(additional_candidates),
        methods=["GET"],
        include_in_schema=False,
    )
    router.add_api_route(
        f"{_prefix}/connections/{{id}}/close",
        _guarded(close),
        methods=["POST"],
        include_in_schema=False,
    )
    router.add_api_route(
        f"{_prefix}/{{rest:path}}", preflight, methods=["OPTIONS"], include_in_schema=False
    )
