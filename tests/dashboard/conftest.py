"""Browser tests of the dashboard: Debian's chromium, driven by Playwright, against a real
server on a free port (what `sessionhub serve` runs: uvicorn with the realtime engine).

The browser is the system's (`apt-get install chromium`); no test tool ever downloads one.
Without chromium or the `playwright` package the tests skip, saying so, unless
SESSIONHUB_REQUIRE_SERVICES=1 (CI), where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn

from sessionhub.server.app import create_app
from sessionhub.server.runtime import Runtime, build_runtime
from sessionhub.server.serving import uvicorn_config
from sessionhub.settings import Settings

SECRET = "dashboard-test-secret-0123456789abcdef"
CHROMIUM = os.environ.get("SESSIONHUB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
REQUIRE = os.environ.get("SESSIONHUB_REQUIRE_SERVICES") == "1"
#: How long to wait for the page to show something, ms.
WAIT_MS = 8000


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives Debian's chromium through Playwright")


def unavailable(what: str, reason: str) -> NoReturn:
    message = f"{what} is not available ({reason})"
    if REQUIRE:
        pytest.fail(message + " and SESSIONHUB_REQUIRE_SERVICES=1")
    pytest.skip(message + "; apt-get install chromium and pip install playwright to run it")


class Server:
    """A live server in a thread. ``port`` 0 picks a free one; a stopped server's port and
    data directory can be given to a new one: that is a restart."""

    def __init__(self, data_dir: Path, port: int = 0, **extra: Any) -> None:
        self.settings = Settings(
            data_dir=data_dir, jwt_secret=SECRET, sweep_interval=3600.0, port=port
        )
        # Settings.extra: the connectors' and relays' own (``nina_url``, ``rooms_...``).
        self.settings.extra.update(extra)
        self.runtime: Runtime = build_runtime(self.settings)
        self.app = create_app(runtime=self.runtime)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self.port: int = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # uvicorn waits for open responses to finish before it stops, and an open dashboard
        # holds an event stream that never finishes by itself: bound that wait.
        config = uvicorn_config(self.app, self.settings, timeout_graceful_shutdown=1)
        self.uvicorn = uvicorn.Server(config)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="dashboard-server", daemon=True)
        self.rest = httpx.Client(base_url=self.url, timeout=10)

    def _run(self) -> None:
        asyncio.run(self.uvicorn.serve(sockets=[self._sock]))

    def start(self) -> Server:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.rest.close()
        self.uvicorn.should_exit = True
        self._thread.join(20)
        assert not self._thread.is_alive(), "the server did not stop"

    def token(self, sub: str, *roles: str) -> str:
        return self.runtime.auth.issue(sub, roles)

    def call(self, sub: str, method: str, path: str, *roles: str, **kw: Any) -> Any:
        """A REST call as ``sub``; the JSON answer (asserting success)."""
        headers = {"Authorization": f"Bearer {self.token(sub, *roles)}"}
        r = self.rest.request(method, path, headers=headers, **kw)
        assert r.status_code < 300, r.text
        return r.json()


def offline(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``coro`` in a thread of its own: the test's thread belongs to Playwright's loop."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(coro())
        except BaseException as exc:  # reported in the test's thread
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    if errors:
        raise errors[0]


class Tab:
    """A page that records what would be wrong however the test goes: console errors,
    uncaught exceptions, and every request (HTTP and WebSocket) to another origin."""

    def __init__(self, page: Any, server: Server) -> None:
        self.page = page
        self.server = server
        self.errors: list[str] = []
        self.urls: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        page.on("request", lambda r: self.urls.append(r.url))
        page.on("websocket", lambda ws: self.urls.append(ws.url))
        page.set_default_timeout(WAIT_MS)

    def sign_in(self, sub: str, *roles: str, route: str = "") -> str:
        """Open the sign-in link ``sessionhub serve`` prints, as ``sub``; wait until live."""
        token = self.server.token(sub, *roles)
        self.page.goto(f"{self.server.url}/?token={token}{route}")
        self.wait_live()
        return token

    def wait_live(self) -> None:
        self.page.wait_for_selector('#conn[data-state="live"]')

    def go(self, route: str) -> None:
        self.page.evaluate("route => { location.hash = route; }", route)

    def shot(self, name: str, selector: str | None = None) -> None:
        """The whole page (or only ``selector``) into ``artifacts/<name>.png``."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = str(ARTIFACTS / f"{name}.png")
        if selector is None:
            self.page.screenshot(path=path, full_page=True)
        else:
            self.page.locator(selector).screenshot(path=path)

    def check(self, allow: tuple[str, ...] = ()) -> None:
        origin = urlsplit(self.server.url).netloc
        foreign = [u for u in self.urls if urlsplit(u).netloc not in (origin, "")]
        assert not foreign, f"requests to other hosts: {foreign}"
        unexpected = [e for e in self.errors if not any(re.search(a, e) for a in allow)]
        assert not unexpected, f"console errors: {unexpected}"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One chromium per module, with a fresh profile."""
    if not Path(CHROMIUM).exists():
        unavailable("chromium", f"{CHROMIUM} not found")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright", "the Python package is not installed")
    playwright = sync_playwright().start()
    try:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
    except Exception as exc:
        playwright.stop()
        unavailable("chromium", f"it did not start: {str(exc).splitlines()[0]}")
    yield context
    context.close()
    playwright.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[Server]:
    live = Server(tmp_path_factory.mktemp("dashboard") / "data").start()
    yield live
    live.stop()


@pytest.fixture
def open_tab(browser: Any, server: Server) -> Iterator[Callable[..., Tab]]:
    """``open_tab()`` or ``open_tab(other_server, allow=(regex, ...))``: a new page. Each is
    checked after the test for console errors (bar ``allow``) and foreign requests."""
    made: list[tuple[Tab, tuple[str, ...]]] = []

    def make(target: Server | None = None, allow: tuple[str, ...] = ()) -> Tab:
        tab = Tab(browser.new_page(), target or server)
        made.append((tab, allow))
        return tab

    yield make
    try:
        for tab, allow in made:
            tab.check(allow)
    finally:
        for tab, _ in made:
            tab.page.close()
