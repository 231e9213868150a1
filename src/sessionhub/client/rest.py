"""An async client for sessionhub's REST API (``/api/sessions``...), built on httpx.

Every call returns the decoded JSON the server sent. An error answer (RFC 9457
``application/problem+json``) raises an :class:`ApiError` subclass picked by status, so
callers can ``except NotFoundError`` or read ``ConflictError.current`` (the session as it is
now) without parsing bodies themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any

import httpx

JSON = dict[str, Any]


class ApiError(Exception):
    """The server answered with an error status; ``body`` is the problem document."""

    def __init__(self, status: int, title: str, detail: str, body: Mapping[str, Any]) -> None:
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")
        self.status = status
        self.title = title
        self.detail = detail
        self.body: Mapping[str, Any] = body

    @property
    def current(self) -> JSON | None:
        """The session as it is now, when the server sent it (409 and 412 answers)."""
        cur = self.body.get("current")
        return cur if isinstance(cur, dict) else None


class BadRequestError(ApiError):
    """400: the request was malformed."""


class UnauthorizedError(ApiError):
    """401: no credentials, or a bad or expired token / API key."""


class ForbiddenError(ApiError):
    """403: authenticated, but not allowed (someone else's session, a role missing)."""


class NotFoundError(ApiError):
    """404: no such session (or one you may not see)."""


class ConflictError(ApiError):
    """409: an illegal transition or a concurrent change; ``current`` is the session now."""


class PreconditionFailedError(ApiError):
    """412: ``If-Match`` named a version that is not the current one; see ``current``."""


class ValidationError(ApiError):
    """422: invalid input; ``errors`` lists the fields when the server named them."""

    @property
    def errors(self) -> list[JSON]:
        errs = self.body.get("errors")
        return [e for e in errs if isinstance(e, dict)] if isinstance(errs, list) else []


class UnavailableError(ApiError):
    """503: the server's backend is not answering right now; worth retrying."""


class ServerError(ApiError):
    """Any other 5xx."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    412: PreconditionFailedError,
    422: ValidationError,
    503: UnavailableError,
}


def error_for(response: httpx.Response) -> ApiError:
    """The typed error for an error ``response`` (problem+json or anything else)."""
    body: Mapping[str, Any]
    try:
        decoded = response.json()
        body = decoded if isinstance(decoded, dict) else {"detail": str(decoded)}
    except ValueError:  # not JSON at all (a proxy's HTML page, ...)
        body = {"detail": response.text[:500]}
    status = response.status_code
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    title = str(body.get("title") or response.reason_phrase or "Error")
    return cls(status, title, str(body.get("detail") or ""), body)


def _etag(version: int | str | None) -> dict[str, str]:
    if version is None:
        return {}
    return {"If-Match": version if isinstance(version, str) else f'"{version}"'}


def _csv(values: str | Iterable[str] | None) -> str | None:
    if values is None or isinstance(values, str):
        return values
    return ",".join(values)


class SessionHubClient:
    """An async REST client. Use as ``async with SessionHubClient(url, token=...) as c:``.

    ``token`` is sent as ``Authorization: Bearer``, ``api_key`` as ``X-API-Key``.
    ``transport`` lets an application (or a test) plug in any httpx transport.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if api_key is not None:
            headers["X-API-Key"] = api_key
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> SessionHubClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One call; raises the typed :class:`ApiError` for a 4xx/5xx answer."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        response = await self._http.request(method, path, json=json, params=query, headers=headers)
        if response.status_code >= 400:
            raise error_for(response)
        return response

    async def _json(self, method: str, path: str, **kw: Any) -> JSON:
        data = (await self.request(method, path, **kw)).json()
        if not isinstance(data, dict):
            raise ApiError(502, "Bad response", "expected a JSON object", {"body": data})
        return data

    # -- sessions -----------------------------------------------------------------------------

    async def create_session(
        self,
        kind: str = "generic",
        attributes: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        owner: str | None = None,
        idempotency_key: str | None = None,
    ) -> JSON:
        """Create a session. With ``idempotency_key`` a retry returns the first one."""
        body: JSON = {"kind": kind}
        if attributes is not None:
            body["attributes"] = dict(attributes)
        if metadata is not None:
            body["metadata"] = dict(metadata)
        if owner is not None:
            body["owner"] = owner
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return await self._json("POST", "/api/sessions", json=body, headers=headers)

    async def get_session(self, session_id: str) -> JSON:
        """One session, with ``stream`` (the topic position this snapshot reflects)."""
        return await self._json("GET", f"/api/sessions/{session_id}")

    async def list_page(
        self,
        *,
        kind: str | Iterable[str] | None = None,
        state: str | Iterable[str] | None = None,
        owner: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JSON:
        """One page: ``{items, next_cursor, stream}``."""
        params = {
            "kind": _csv(kind),
            "state": _csv(state),
            "owner": owner,
            "limit": limit,
            "cursor": cursor,
        }
        return await self._json("GET", "/api/sessions", params=params)

    async def list_sessions(
        self,
        *,
        kind: str | Iterable[str] | None = None,
        state: str | Iterable[str] | None = None,
        owner: str | None = None,
        page_size: int = 100,
        max_pages: int = 10_000,
    ) -> AsyncIterator[JSON]:
        """Every matching session, newest first, following ``next_cursor`` page by page.

        Stops after ``max_pages`` pages, and raises if the server ever hands back a cursor
        it gave before (which would otherwise loop forever)."""
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(max_pages):
            page = await self.list_page(
                kind=kind, state=state, owner=owner, limit=page_size, cursor=cursor
            )
            for item in page.get("items", []):
                yield item
            cursor = page.get("next_cursor")
            if not cursor:
                return
            if cursor in seen:
                raise ApiError(502, "Bad response", f"cursor {cursor!r} repeated", page)
            seen.add(cursor)

    async def count(
        self,
        *,
        kind: str | Iterable[str] | None = None,
        state: str | Iterable[str] | None = None,
        owner: str | None = None,
    ) -> JSON:
        """``{count, active_sessions}`` for the filters."""
        params = {"kind": _csv(kind), "state": _csv(state), "owner": owner}
        return await self._json("GET", "/api/sessions/count", params=params)

    async def update(
        self,
        session_id: str,
        *,
        attributes: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        if_match: int | str | None = None,
    ) -> JSON:
        """Change attributes and/or metadata; ``if_match`` (a version) makes it conditional."""
        body: JSON = {}
        if attributes is not None:
            body["attributes"] = dict(attributes)
        if metadata is not None:
            body["metadata"] = dict(metadata)
        return await self._json(
            "PATCH", f"/api/sessions/{session_id}", json=body, headers=_etag(if_match)
        )

    async def act(
        self,
        session_id: str,
        action: str,
        detail: str | None = None,
        if_match: int | str | None = None,
    ) -> JSON:
        """Apply a lifecycle action (``end``, ...). Illegal now -> :class:`ConflictError`."""
        body = {"detail": detail} if detail is not None else {}
        return await self._json(
            "POST",
            f"/api/sessions/{session_id}/actions/{action}",
            json=body,
            headers=_etag(if_match),
        )

    async def heartbeat(self, session_id: str) -> JSON:
        """Keep the session alive: ``{ok, session_id, last_activity_at}``."""
        return await self._json("POST", f"/api/sessions/{session_id}/heartbeat")

    async def events(
        self, session_id: str, *, after_version: int = 0, limit: int = 100
    ) -> list[JSON]:
        """The session's event log after ``after_version``."""
        page = await self._json(
            "GET",
            f"/api/sessions/{session_id}/events",
            params={"after_version": after_version, "limit": limit},
        )
        items = page.get("items", [])
        return [e for e in items if isinstance(e, dict)]

    async def kinds(self) -> list[JSON]:
        """The kinds the server knows, with their states and actions."""
        kinds = (await self._json("GET", "/api/kinds")).get("kinds", [])
        return [k for k in kinds if isinstance(k, dict)]
