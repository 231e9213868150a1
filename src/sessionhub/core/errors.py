"""Typed errors raised by the core and the hub; transports map them to status codes."""

from __future__ import annotations

from typing import Any


class SessionHubError(Exception):
    """Base of every error the engine raises on purpose.

    ``status`` is the HTTP status the REST layer answers with; ``extra`` goes into the
    problem document (for example the current session on a conflict).
    """

    status = 400
    title = "Bad request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(SessionHubError):
    status = 422
    title = "Invalid input"


class NotFound(SessionHubError):
    status = 404
    title = "Not found"


class Unauthenticated(SessionHubError):
    status = 401
    title = "Unauthenticated"


class Forbidden(SessionHubError):
    status = 403
    title = "Forbidden"


class IllegalTransition(SessionHubError):
    """The action is not allowed from the session's current state (or it is terminal)."""

    status = 409
    title = "Illegal transition"


class VersionConflict(SessionHubError):
    """A concurrent change won the compare-and-set on ``version``."""

    status = 409
    title = "Version conflict"


class DuplicateId(SessionHubError):
    """A session with this id exists already."""

    status = 409
    title = "Duplicate id"


class PreconditionFailed(SessionHubError):
    """``If-Match`` named a version that is not the current one."""

    status = 412
    title = "Precondition failed"


class Unavailable(SessionHubError):
    status = 503
    title = "Unavailable"


class IdempotencyConflict(SessionHubError):
    """An ``Idempotency-Key`` was used before, by the same owner, for a different request
    (another fingerprint): the IETF idempotency-key draft answers 422, not a replay."""

    status = 422
    title = "Idempotency-Key reused"


class TooManyRequests(SessionHubError):
    """A per-client limit was reached (connections per address, request rates)."""

    status = 429
    title = "Too many requests"
