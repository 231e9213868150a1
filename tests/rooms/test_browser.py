"""The real ``@geckos.io/client`` (npm, unchanged) in headless Chromium against sessionhub.

The test bundles the npm client with esbuild (``--bundle --format=iife``) into a temporary
directory and serves it, with a page, from a second HTTP server on another port, so the
signalling is cross-origin (CORS and its preflights) as it is for the real site. (That
origin is on loopback too: Chromium refuses a page it counts as public access to loopback
addresses without a permission prompt.)
Chromium is Debian's (``/usr/bin/chromium``), with ``--allow-loopback-in-peer-connection``
and ``--disable-features=WebRtcHideLocalIpsWithMdns`` for a loopback-only network; the
server gathers its candidates on 127.0.0.1. Two pages in one room exchange ``tv`` (everyone,
the sender too) and ``fairy:point`` (everyone but the sender); a page in another room
receives nothing. Without chromium, Playwright, node or the npm packages the test skips,
saying which, unless ``SESSIONHUB_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from .conftest import RoomServer

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("SESSIONHUB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
REQUIRE = os.environ.get("SESSIONHUB_REQUIRE_SERVICES") == "1"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
PAGE = """<!doctype html><meta charset="utf-8"><title>geckos</title>
<script src="/geckos.js"></script>
<script>
window.got = [];
window.start = (url) => new Promise((resolve, reject) => {
  const channel = geckos({ url, port: null });
  window.channel = channel;
  channel.onConnect((error) => error ? reject(String(error.message || error)) : resolve(channel.id));
  channel.on("tv", (data) => window.got.push(["tv", data]));
  channel.on("fairy:point", (data) => window.got.push(["fairy:point", data]));
});
</script>"""

pytestmark = [pytest.mark.browser, pytest.mark.node, pytest.mark.slow]


def unavailable(what: str, reason: str) -> NoReturn:
    message = f"{what} is not available ({reason})"
    if REQUIRE:
        pytest.fail(message + " and SESSIONHUB_REQUIRE_SERVICES=1")
    pytest.skip(message)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``@geckos.io/client`` bundled for the browser (it ships bare-import ES modules)."""
    esbuild = ROOT / "node_modules" / ".bin" / "esbuild"
    if not (ROOT / "node_modules" / "@geckos.io" / "client" / "package.json").exists():
        unavailable("@geckos.io/client", "npm install @geckos.io/client esbuild")
    if not esbuild.exists() or shutil.which("node") is None:
        unavailable("esbuild", "node and npm install esbuild")
    out = tmp_path_factory.mktemp("geckos") / "geckos.js"
    (out.parent / "index.html").write_text(PAGE)
    entry = "import geckos from '@geckos.io/client'; window.geckos = geckos;"
    done = subprocess.run(
        [str(esbuild), "--bundle", "--format=iife", f"--outfile={out}", "--log-level=warning"],
        input=entry.encode(),
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return out


@pytest.fixture(scope="module")
def origin(bundle: Path) -> Iterator[str]:
    """The page's own origin: a static server of the bundle's directory."""
    handler = functools.partial(_Quiet, directory=str(bundle.parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture(scope="module")
def browser(bundle: Path) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        unavailable("chromium", f"{CHROMIUM} not found; apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright", "pip install playwright (the browser is Debian's)")
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
    except Exception as exc:
        playwright.stop()
        unavailable("chromium", f"it did not start: {str(exc).splitlines()[0]}")
    yield chromium
    chromium.close()
    playwright.stop()


def open_page(browser: Any, origin: str) -> Any:
    page = browser.new_page()
    page.goto(f"{origin}/index.html")
    return page


def got(page: Any) -> list[list[Any]]:
    value: list[list[Any]] = page.evaluate("window.got")
    return value


def wait_until(what: str, check: Callable[[], bool], wait: float = 10.0) -> None:
    deadline = time.monotonic() + wait
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_the_real_geckos_client_plays_in_rooms(
    browser: Any, origin: str, make_rooms: Callable[..., RoomServer]
) -> None:
    server = make_rooms(rooms_ice_addresses="127.0.0.1")
    one, two, elsewhere = (open_page(browser, origin) for _ in range(3))
    try:
        for page, slug in ((one, "alpha"), (two, "alpha"), (elsewhere, "beta")):
            page.evaluate("url => window.start(url)", f"{server.url}/room/{slug}")
        one.evaluate("window.channel.emit('tv', JSON.stringify({frame: 1}))")
        wait_until("tv on both pages", lambda: all(got(p) for p in (one, two)))
        assert got(one) == got(two) == [["tv", '{"frame":1}']]
        two.evaluate("window.channel.emit('fairy:point', {x: 0.5, y: 0.25})")
        wait_until("the point on page one", lambda: len(got(one)) == 2)
        assert got(one)[1] == ["fairy:point", {"x": 0.5, "y": 0.25}]
        time.sleep(0.3)
        assert got(two) == [["tv", '{"frame":1}']]  # fairy:point is not sent back
        assert got(elsewhere) == []  # another room hears nothing
        assert server.rooms.datagrams.stats()["peers"] == 3
        one.evaluate("window.channel.close()")  # POSTs /close
        wait_until("the peer to be closed", lambda: server.rooms.datagrams.stats()["peers"] == 2)
    finally:
        for page in (one, two, elsewhere):
            page.close()
