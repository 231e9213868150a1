"""The dependency rule of DESIGN.md, enforced by reading every module's imports (ast).

``core`` -> nothing · ``kinds`` -> core · ``store``, ``broker``, ``presence`` -> core ·
``hub`` (hub.py) -> all of those · ``consumers``, ``relay``, ``connectors``, ``scheduler``
(and ``workflows``, see docs/architecture.md) -> hub and below · ``server``, ``cli`` -> hub,
consumers, relay, connectors, scheduler, workflows - never store, broker or presence directly ·
``client`` -> core only. ``auth`` (-> core), ``settings``, ``ids`` and ``tasks`` (-> nothing) are leaves anyone
above the core may use; ``redis_calls`` (-> core) is the Redis plumbing the broker and the
presence share (neither may import the other). The package root re-exports the public API.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "sessionhub"

#: What the hub may use, and so what "hub and below" means.
BELOW_HUB = {
    "core",
    "kinds",
    "store",
    "broker",
    "presence",
    "redis_calls",
    "settings",
    "ids",
    "tasks",
    "root",
}
#: The layers at the hub's side that transports may use.
SERVICES = {"consumers", "relay", "connectors", "scheduler", "workflows"}
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "kinds": {"core", "kinds"},
    "store": {"core", "store"},
    "broker": {"core", "broker", "redis_calls"},
    "presence": {"core", "presence", "redis_calls"},
    "redis_calls": {"core", "redis_calls"},
    "settings": {"settings"},
    "ids": {"ids"},
    "tasks": {"tasks"},
    "auth": {"core", "auth", "root"},
    "client": {"core", "client", "root"},
    "hub": BELOW_HUB | {"hub"},
    **{layer: BELOW_HUB | {"hub", layer} for layer in SERVICES},
    # A workflow applies a consumer's rule at once where a request needs its answer
    # (JamBot's create and the one-active rule).
    "workflows": BELOW_HUB | {"hub", "workflows", "consumers"},
    "server": {"core", "kinds", "hub", "auth", "settings", "ids", "tasks", "server", "root"}
    | SERVICES,
    "cli": {"core", "kinds", "hub", "auth", "settings", "ids", "tasks", "server", "cli", "root"}
    | SERVICES,
    # The package's __init__ re-exports the public API (lazily, so importing the client
    # pulls in nothing of the server): it names what every layer offers.
    "root": {"core", "kinds", "hub", "settings", "server", "root"},
}
TOP_LEVEL = {
    "hub": "hub",
    "leadership": "hub",
    "outbox": "hub",
    "backends": "hub",
    "scheduler": "scheduler",
    "auth": "auth",
    "hs256": "auth",
    "settings": "settings",
    "ids": "ids",
    "tasks": "tasks",
    "redis_calls": "redis_calls",
    "cli": "cli",
    "demo": "cli",
    "__init__": "root",
    "__main__": "cli",
}

# The core is sans-I/O: no event loop, no sockets, threads, databases, web frameworks.
CORE_FORBIDDEN = {
    "asyncio",
    "anyio",
    "socket",
    "ssl",
    "select",
    "selectors",
    "threading",
    "multiprocessing",
    "concurrent",
    "subprocess",
    "sqlite3",
    "http",
    "urllib",
    "time",
    "sqlalchemy",
    "starlette",
    "fastapi",
    "uvicorn",
    "httpx",
    "aiosqlite",
    "asyncpg",
    "redis",
}
# Pure, I/O-free libraries the core may use.
CORE_THIRD_PARTY = {"orjson"}
# Connectors and the client must not reach the servers' internals either.
CLIENT_FORBIDDEN = {"sqlalchemy", "starlette", "fastapi", "uvicorn", "aiosqlite", "asyncpg"}


def modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.parts)


def layer_of(parts: list[str]) -> str:
    """``["sessionhub", "server", "rest"]`` -> ``"server"``."""
    if len(parts) < 2:
        return "root"
    if len(parts) == 2:
        return TOP_LEVEL.get(parts[1], parts[1])
    return parts[1]


def module_parts(path: Path) -> list[str]:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return parts


def imports(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line, absolute dotted target) for every import in the module, lazy ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parts = module_parts(path)
    package = parts if path.name == "__init__.py" else parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
            else:
                target = (node.module or "").split(".")
            if target == ["sessionhub"]:
                # ``from .. import hub`` names a module; ``from .. import __version__`` the root.
                for alias in node.names:
                    yield node.lineno, [*target, alias.name]
            else:
                yield node.lineno, target


def _is_module(name: str) -> bool:
    return (
        name in ALLOWED
        or name in TOP_LEVEL
        or (SRC / name).is_dir()
        or (SRC / f"{name}.py").exists()
    )


def violations(path: Path) -> list[str]:
    parts = module_parts(path)
    layer = layer_of(parts)
    out: list[str] = []
    for line, target in imports(path):
        where = f"{path.relative_to(SRC.parent)}:{line} imports {'.'.join(target)}"
        top = target[0]
        if top == "sessionhub":
            dep = layer_of(target[:2] if len(target) >= 2 else target)
            if len(target) >= 2 and not _is_module(target[1]):
                dep = "root"  # a name defined in sessionhub/__init__.py, e.g. __version__
            if dep not in ALLOWED.get(layer, set()):
                out.append(f"{where} ({layer} -> {dep} breaks the dependency rule)")
            continue
        if layer == "core":
            if top in CORE_FORBIDDEN:
                out.append(f"{where} (the core does no I/O)")
            elif top not in sys.stdlib_module_names and top not in CORE_THIRD_PARTY:
                out.append(f"{where} (the core depends on nothing outside the standard library)")
        if layer in ("client", "kinds") and top in CLIENT_FORBIDDEN:
            out.append(f"{where} ({layer} must not use server-side libraries)")
    return out


def test_there_are_modules_to_check() -> None:
    found = {layer_of(module_parts(p)) for p in modules()}
    assert {"core", "kinds", "store", "broker", "presence", "hub", "server", "cli"} <= found
    assert {"consumers", "relay", "scheduler", "workflows"} <= found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_module_follows_the_dependency_rule(path: Path) -> None:
    assert violations(path) == []


def test_the_core_never_reads_the_clock_or_randomness() -> None:
    for path in (SRC / "core").rglob("*.py"):
        text = path.read_text()
        for needle in (
            ".now(",
            "utcnow(",
            "time.time(",
            "monotonic(",
            "random.",
            "secrets.",
            "uuid",
        ):
            assert needle not in text, f"{path.name} uses {needle}: time/ids are arguments"


def test_the_checker_catches_violations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker itself works: a fake core module importing the hub and asyncio is caught."""
    fake = tmp_path / "sessionhub"
    (fake / "core").mkdir(parents=True)
    (fake / "store").mkdir()
    bad = fake / "core" / "bad.py"
    bad.write_text(
        "import asyncio\nimport sqlalchemy\nfrom ..hub import Hub\nfrom . import model\n"
    )
    (fake / "store" / "leak.py").write_text("from ..server import app\nfrom ..core import model\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake)
    found = violations(bad)
    assert len(found) == 3, found
    assert any("core -> hub" in v for v in found)
    assert any("asyncio" in v for v in found) and any("sqlalchemy" in v for v in found)
    leak = violations(fake / "store" / "leak.py")
    assert len(leak) == 1 and "store -> server" in leak[0]
