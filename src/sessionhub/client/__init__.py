"""The Python client library: REST (:class:`SessionHubClient`), realtime
(:class:`RealtimeClient`) and the gapless :func:`follow` of one session.

It depends on :mod:`sessionhub.core` only (for the shared table of protocol codes), plus
httpx, websockets and orjson.
"""

from __future__ import annotations

from .follow import SessionUpdate, follow
from .realtime import (
    Backoff,
    CommandFailed,
    ConnectionLost,
    Disconnected,
    PermissionDenied,
    Publication,
    RealtimeClient,
    RealtimeError,
    Recovery,
    Subscription,
    Unsubscribed,
    should_reconnect,
)
from .rest import (
    ApiError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PreconditionFailedError,
    ServerError,
    SessionHubClient,
    UnauthorizedError,
    UnavailableError,
    ValidationError,
)

__all__ = [
    "ApiError",
    "Backoff",
    "BadRequestError",
    "CommandFailed",
    "ConflictError",
    "ConnectionLost",
    "Disconnected",
    "ForbiddenError",
    "NotFoundError",
    "PermissionDenied",
    "PreconditionFailedError",
    "Publication",
    "RealtimeClient",
    "RealtimeError",
    "Recovery",
    "ServerError",
    "SessionHubClient",
    "SessionUpdate",
    "Subscription",
    "UnauthorizedError",
    "UnavailableError",
    "Unsubscribed",
    "ValidationError",
    "follow",
    "should_reconnect",
]
