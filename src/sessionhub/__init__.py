"""sessionhub: sessions of any kind, kept through their lifecycle and pushed live.

The public API is what ``__all__`` names; it is pinned by ``tests/test_public_api.py``.
Names are imported lazily, so ``import sessionhub.client`` (the client library) does not
pull in the server's dependencies.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: name -> the module that defines it.
_EXPORTS = {
    "Settings": "sessionhub.settings",
    "create_app": "sessionhub.server.app",
    "build_runtime": "sessionhub.server.runtime",
    "Runtime": "sessionhub.server.runtime",
    "Hub": "sessionhub.hub",
    "open_hub": "sessionhub.backends",
    "Kind": "sessionhub.core.kind",
    "Session": "sessionhub.core.model",
    "Event": "sessionhub.core.model",
    "Principal": "sessionhub.core.principal",
    "SessionHubError": "sessionhub.core.errors",
}

__all__ = [
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

if TYPE_CHECKING:
    from .backends import open_hub
    from .core.errors import SessionHubError
    from .core.kind import Kind
    from .core.model import Event, Session
    from .core.principal import Principal
    from .hub import Hub
    from .server.app import create_app
    from .server.runtime import Runtime, build_runtime
    from .settings import Settings


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sessionhub' has no attribute {name!r}")
    return getattr(import_module(module), name)
