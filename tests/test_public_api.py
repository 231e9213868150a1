"""The public API of ``sessionhub`` and ``sessionhub.client``, pinned: a name or a signature
that changes here is a change users see (bump the version, say so in the CHANGELOG)."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import sessionhub
import sessionhub.client as client

SERVER_API = [
    "Event",
    "Hub",
    "Kind",
    "Principal",
    "Runtime",
    "Session",
    "SessionHubError",
    "Settings",
    "__version__",
    "build_runtime",
    "create_app",
    "open_hub",
]

CLIENT_API = [
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

#: The signatures of the callables users call most, as ``inspect`` renders them.
SIGNATURES = {
    "sessionhub.create_app": "(settings: 'Settings | None' = None, *, runtime: 'Runtime | None' "
    "= None) -> 'FastAPI'",
    "sessionhub.build_runtime": "(settings: 'Settings', *, clock: 'Callable[[], datetime]' = "
    "<function utcnow>) -> 'Runtime'",
    "sessionhub.client.follow": "(rest: 'SessionHubClient', realtime: 'RealtimeClient', "
    "session_id: 'str', *, max_reloads: 'int' = 100) -> 'AsyncIterator[SessionUpdate]'",
}


def _render(fn: object) -> str:
    # A function default renders with its address: keep the name only.
    return re.sub(r" at 0x[0-9a-f]+>", ">", str(inspect.signature(fn)))  # type: ignore[arg-type]


def test_the_server_package_exports_what_it_documents() -> None:
    assert sessionhub.__all__ == SERVER_API
    for name in SERVER_API:
        assert getattr(sessionhub, name) is not None, name
    assert isinstance(sessionhub.__version__, str)


def test_the_client_package_exports_what_it_documents() -> None:
    assert sorted(client.__all__) == CLIENT_API
    for name in CLIENT_API:
        assert getattr(client, name) is not None, name


def test_the_main_signatures_are_pinned() -> None:
    objects = {
        "sessionhub.create_app": sessionhub.create_app,
        "sessionhub.build_runtime": sessionhub.build_runtime,
        "sessionhub.client.follow": client.follow,
    }
    for name, fn in objects.items():
        assert _render(fn) == SIGNATURES[name], name


METHODS = {
    "SessionHubClient": [
        "aclose",
        "act",
        "count",
        "create_session",
        "events",
        "get_session",
        "heartbeat",
        "kinds",
        "list_page",
        "list_sessions",
        "request",
        "update",
    ],
    "RealtimeClient": [
        "aclose",
        "call",
        "connect",
        "connected",
        "error",
        "subscribe",
        "wait_closed",
    ],
    "Subscription": ["get", "unsubscribe"],
}


def test_public_methods_of_the_client_classes_are_pinned() -> None:
    for name, expected in METHODS.items():
        cls = getattr(client, name)
        public = sorted(n for n, _ in inspect.getmembers(cls) if not n.startswith("_"))
        assert public == expected, name


def test_importing_the_client_pulls_in_no_server_dependency() -> None:
    code = (
        "import sys, sessionhub.client; "
        "print(sorted(m for m in ('fastapi', 'sqlalchemy', 'uvicorn', 'starlette') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_package_is_typed() -> None:
    from importlib.resources import files

    assert files("sessionhub").joinpath("py.typed").is_file()
