"""The imaging and rooms panels in a real browser, fed by real traffic: a simulated NINA rig
playing a night into the server's connector, and room clients speaking Aesthetic Computer's
protocol to ``/room/<slug>``. Both panels move from the stream alone; every page is checked
afterwards for console errors and requests to other hosts (``conftest.Tab.check``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from tests.rooms.client import AcClient

from sessionhub.connectors.nina.simnight import DEFAULT_TARGETS, NightPlan
from sessionhub.connectors.nina.simulator import NinaSimulator

from .conftest import Server, Tab

pytestmark = [pytest.mark.browser, pytest.mark.slow]

OpenTab = Callable[..., Tab]
T = TypeVar("T")
RIG = "backyard"
#: A short night: two targets, two filters, two subs each, an unsafe pause, flats and darks.
NIGHT = NightPlan(
    seed=11,
    targets=DEFAULT_TARGETS[:2],
    filters=("L", "R"),
    subs_per_filter=2,
    homed_repeats=4,
    flats_per_filter=3,
    darks=2,
)
#: How long the page may take to show what the traffic did, ms.
MOVE_MS = 20000


class Loop:
    """An event loop in a thread of its own: the test's thread belongs to Playwright."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="panels", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def bg(browser: Any) -> Iterator[Loop]:
    loop = Loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def rig(bg: Loop) -> Iterator[NinaSimulator]:
    sim = NinaSimulator(plan=NIGHT, seed=11, timezone="UTC", speed=1e6)

    async def start() -> None:
        await sim.start()

    bg.run(start())
    yield sim
    bg.run(sim.close())


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, rig: NinaSimulator) -> Iterator[Server]:
    """A server following the simulated rig (guider polled often, so RMS readings come
    quickly) and writing room counts twice a second."""
    server = Server(
        tmp_path_factory.mktemp("panels") / "data",
        nina_url=f"{RIG}={rig.url}",
        nina_timezone="UTC",
        nina_guider_poll_interval=0.25,
        nina_backoff_initial=0.02,
        nina_backoff_max=0.2,
        rooms_flush_interval=0.5,
    ).start()
    yield server
    server.stop()


def sessions(server: Server, kind: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = server.call(
        "root", "GET", "/api/sessions", "admin", params={"kind": kind, "limit": 50}
    )["items"]
    return items


def wait_for(what: str, check: Callable[[], T | None], within: float = 15) -> T:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {within} s")


def number(tab: Tab, selector: str) -> float:
    return float(tab.page.inner_text(selector))


def points(tab: Tab) -> int:
    return int(tab.page.get_attribute("#img-rms-chart svg", "data-points") or 0)


def at_phone_width(tab: Tab, shot: str, panel: str, width: int = 390) -> None:
    """The page does not scroll sideways on a phone; ``panel`` saved as ``shot``."""
    tab.page.set_viewport_size({"width": width, "height": 844})
    scroll = tab.page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"the page scrolls sideways at {width}px ({scroll}px)"
    tab.shot(shot, panel)
    tab.page.set_viewport_size({"width": 1280, "height": 900})


# -- imaging -------------------------------------------------------------------------------------


def test_the_imaging_panel_follows_a_night_as_the_rig_plays(
    open_tab: OpenTab, live: Server, rig: NinaSimulator, bg: Loop
) -> None:
    bg.run(rig.wait_clients(1, within=10))
    script = rig.script
    lights = [i for i, s in enumerate(script) if s.image and s.image["ImageType"] == "LIGHT"]
    first_target = next(s for s in script if s.event == "TS-NEWTARGETSTART").fields
    # Dusk to the second light frame at once; the page then opens on a night under way.
    bg.run(rig.play(lights[1] + 1))
    night = wait_for(
        "imaging night with frames",
        lambda: next(
            (s for s in sessions(live, "imaging") if s["attributes"].get("total_images", 0) >= 2),
            None,
        ),
    )
    tab = open_tab(live)
    tab.sign_in("root", "admin", route=f"#/session/{night['id']}")
    page = tab.page
    page.wait_for_selector(f"#img-target:has-text('{first_target['TargetName']}')")
    assert page.inner_text("#img-ra") not in ("", "—")
    page.wait_for_selector("#img-per-filter tr[data-name]")
    # Guiding is on: the guider's readings arrive as the night's versions, and draw dots.
    page.wait_for_function(
        "() => Number(document.querySelector('#img-rms-chart svg')?.dataset.points) >= 2",
        timeout=MOVE_MS,
    )
    before_images, before_points = number(tab, "#img-total"), points(tab)
    page.evaluate("window.__sameDocument = true")
    # The rest of the night in about ten seconds.
    remaining = sum(s.gap for s in script[rig.position :])
    rig.speed = remaining / 10
    playing = bg.spawn(rig.play())
    page.wait_for_function(
        "([n, p]) => Number(document.querySelector('#img-total').textContent) > n"
        " && Number(document.querySelector('#img-rms-chart svg').dataset.points) > p",
        arg=[before_images, before_points],
        timeout=MOVE_MS,
    )
    page.wait_for_selector("#img-activity[data-state='imaging']", timeout=MOVE_MS)
    assert page.locator("#img-rms-chart svg circle.point").count() >= 3
    assert page.locator("#img-events li[data-type]").count() >= 1
    assert page.inner_text("#img-filter") in NIGHT.filters
    tab.shot("12-imaging-night", ".imaging-panel")
    playing.result(40)
    # The whole night: both filters, flats and darks counted, and the night finished.
    page.wait_for_selector("#img-per-type tr[data-name='DARK']", timeout=MOVE_MS)
    page.wait_for_selector(".imaging-panel :text('The night finished')", timeout=MOVE_MS)
    truth = [s.image for s in script if s.image is not None]
    per_filter = {
        f: sum(1 for i in truth if i["ImageType"] == "LIGHT" and i["Filter"] == f)
        for f in NIGHT.filters
    }
    for name, count in per_filter.items():
        cell = f"#img-per-filter tr[data-name='{name}'] td"
        assert page.inner_text(cell) == str(count), name
    assert number(tab, "#img-total") == sum(per_filter.values())
    assert page.inner_text("#img-per-type tr[data-name='FLAT'] td") == str(
        sum(1 for i in truth if i["ImageType"] == "FLAT")
    )
    assert 1 <= page.locator("#img-events li[data-type]").count() <= 20
    assert page.get_attribute("#img-events li[data-type]", "data-type") == "SEQUENCE-FINISHED"
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    tab.shot("13-imaging-finished", ".imaging-panel")
    at_phone_width(tab, "15-imaging-phone", ".imaging-panel")


# -- rooms -----------------------------------------------------------------------------------------


async def play(
    url: str, handle: str, slug: str, stop: asyncio.Event, *, hz: float = 10
) -> AcClient:
    """A player: on the socket with its handle, in the world ``field``, moving ``hz`` times
    a second until ``stop``; returns the client (still connected)."""
    client = AcClient(url, handle=handle, slug=slug)
    await client.connect()
    await client.expect("connected")
    client.send("world:field:join", {"handle": handle, "pos": {"x": 0, "y": 0}})
    await client.expect("world:field:list")

    async def move() -> None:
        x = 0
        while not stop.is_set():
            x += 1
            client.send("world:field:move", {"pos": {"x": x % 64, "y": (x * 7) % 64}})
            await asyncio.sleep(1 / hz)

    client.spawn(move())
    return client


def test_the_rooms_panel_shows_players_and_messages_per_second(
    open_tab: OpenTab, live: Server, bg: Loop
) -> None:
    slug = "plaza"
    url = f"ws://127.0.0.1:{live.port}/room/{slug}"
    stopping = bg.run(_event())
    ada = bg.run(play(url, "@ada", slug, stopping))
    bo = bg.run(play(url, "@bo", slug, stopping))
    try:
        room = wait_for(
            "room session with two players",
            lambda: next(
                (
                    s
                    for s in sessions(live, "room")
                    if s["attributes"].get("slug") == slug and s["attributes"].get("players") == 2
                ),
                None,
            ),
        )
        tab = open_tab(live)
        tab.sign_in("root", "admin", route=f"#/session/{room['id']}")
        page = tab.page
        page.wait_for_selector("#room-players li[data-handle='@ada']")
        page.wait_for_selector("#room-players li[data-handle='@bo']")
        assert page.inner_text("#room-slug") == slug
        assert page.get_attribute("#room-lookup", "href") == f"{live.url}/session/{slug}"
        assert page.inner_text("#room-socket") == url
        # Two players moving ten times a second: about 20 messages a second.
        page.wait_for_function(
            "() => Number(document.querySelector('#room-rate')?.dataset.rate) > 0",
            timeout=MOVE_MS,
        )
        page.wait_for_function(
            "() => { const r = Number(document.querySelector('#room-rate').dataset.rate);"
            " return r >= 10 && r <= 30; }",
            timeout=MOVE_MS,
        )
        page.wait_for_function(
            "() => Number(document.querySelector('#room-rate-chart svg')?.dataset.points) >= 2",
            timeout=MOVE_MS,
        )
        tab.shot("14-room", ".room-panel")
        # One leaves: the list follows the room's presence.
        bg.run(bo.close())
        page.wait_for_function(
            "() => !document.querySelector(\"#room-players li[data-handle='@bo']\")",
            timeout=MOVE_MS,
        )
        assert page.inner_text("#room-count").startswith("1 now")
        # Nobody moves: the relay stops writing, and the figure falls to zero.
        bg.loop.call_soon_threadsafe(stopping.set)
        page.wait_for_selector("#room-rate[data-rate='0']", timeout=MOVE_MS)
        assert "Quiet" in page.inner_text(".room-panel .rate")
        at_phone_width(tab, "16-room-phone", ".room-panel")
    finally:
        bg.loop.call_soon_threadsafe(stopping.set)
        bg.run(ada.close())
        bg.run(bo.close())


async def _event() -> asyncio.Event:
    """An event of the background loop (made on it)."""
    return asyncio.Event()
