"""Typed errors raised by the core and the hub; transports map them to status codes."""

from __future__ import annotations

from typing import Any, ClassVar


class SessionHubError(Exception):
    """Base of every error the engine raises on purpose.

    ``status`` is the HTTP status the REST layer answers with; ``extra`` goes into the
    problem document (for example the current session on a conflict). A subclass names its
    status and title in its class line: ``class NotFound(SessionHubError, status=404,
    title="Not found")``.
    """

    status: ClassVar[int] = 400
    title: ClassVar[str] = "Bad request"

    def __init_subclass__(cls, *, status: int | None = None, title: str | None = None) -> None:
        super().__init_subclass__()
        if status is not None:
            cls.status = status
        if title is not None:
            cls.title = title

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(SessionHubError, status=422, title="Invalid input"):
    """The request names something that cannot be (a bad attribute, an unknown kind)."""


class NotFound(SessionHubError, status=404, title="Not found"):
    """No such thing, or one the caller may not see (ids of others do not leak)."""


class Unauthenticated(SessionHubError, status=401, title="Unauthenticated"):
    """No credentials, or bad or expired ones."""


class Forbidden(SessionHubError, status=403, title="Forbidden"):
    """The caller's role may not do this."""


class IllegalTransition(SessionHubError, status=409, title="Illegal transition"):
    """The action is not allowed from the session's current state (or it is terminal)."""


class VersionConflict(SessionHubError, status=409, title="Version conflict"):
    """A concurrent change won the compare-and-set on ``version``."""


class DuplicateId(SessionHubError, status=409, title="Duplicate id"):
    """A session with this id exists already."""


class PreconditionFailed(SessionHubError, status=412, title="Precondition failed"):
    """``If-Match`` named a version that is not the current one."""


class Unavailable(SessionHubError, status=503, title="Unavailable"):
    """A backend (the database, the broker) is not answering: retry shortly."""


class IdempotencyConflict(SessionHubError, status=422, title="Idempotency-Key reused"):
    """An ``Idempotency-Key`` was used before, by the same owner, for a different request
    (another fingerprint): the IETF idempotency-key draft answers 422, not a replay."""


class TooManyRequests(SessionHubError, status=429, title="Too many requests"):
    """A per-client limit was reached (connections per address, request rates)."""
