"""The dashboard in a real browser: sign-in, the live list, actions, toasts, isolation,
reconnecting after a restart, the kinds' panels, and nothing fetched from elsewhere.

Every page a test opens is checked afterwards (see ``conftest.Tab.check``): no console
errors, and no request, HTTP or WebSocket, to any host but the server's.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from sessionhub.core.principal import Principal

from .conftest import Server, Tab, offline

pytestmark = pytest.mark.browser

OpenTab = Callable[..., Tab]
#: Console noise a test causes on purpose: the browser logs every 4xx/5xx and refused connection.
HTTP_ERRORS = (r"Failed to load resource: the server responded with a status of 4\d\d",)
NETWORK_ERRORS = (r"net::ERR_", r"Failed to load resource")


def row(sid: str) -> str:
    return f'table.sessions tr[data-id="{sid}"]'


def create(server: Server, owner: str, **body: object) -> str:
    sid: str = server.call(owner, "POST", "/api/sessions", json={"kind": "generic", **body})["id"]
    return sid


def mark(tab: Tab) -> None:
    """Mark the page, to prove later that it was never reloaded."""
    tab.page.evaluate("window.__sameDocument = true")


def assert_same_document(tab: Tab) -> None:
    assert tab.page.evaluate("window.__sameDocument === true"), "the page was reloaded"


# -- signing in ------------------------------------------------------------------------------


def test_the_sign_in_link_opens_the_dashboard_and_leaves_the_address_bar(
    open_tab: OpenTab,
) -> None:
    tab = open_tab()
    token = tab.sign_in("root", "admin")
    assert "token" not in tab.page.url and tab.page.url.endswith("/")
    assert tab.page.evaluate("sessionStorage.getItem('sessionhub.token')") == token
    assert tab.page.inner_text("#who") == "root (admin)"
    tab.page.reload()  # kept for the tab: still signed in, and the address stays clean
    tab.wait_live()
    assert "token" not in tab.page.url
    tab.page.click("#signout")
    tab.page.wait_for_selector("form.signin")
    assert tab.page.evaluate("sessionStorage.getItem('sessionhub.token')") is None


def test_without_a_link_a_pasted_token_signs_in(open_tab: OpenTab, server: Server) -> None:
    tab = open_tab(allow=HTTP_ERRORS)
    tab.page.goto(server.url + "/")
    tab.page.wait_for_selector("form.signin")
    tab.shot("01-sign-in")
    tab.page.fill("#token", "not a token")
    tab.page.click("form.signin button[type=submit]")
    assert "not a sessionhub token" in tab.page.inner_text("#signin-error")
    forged = server.token("mallory", "admin")[:-4] + "AAAA"
    tab.page.fill("#token", forged)
    tab.page.click("form.signin button[type=submit]")
    tab.page.wait_for_selector("#signin-error:has-text('The server refused it')")
    tab.page.fill("#token", server.token("alice"))
    tab.page.click("form.signin button[type=submit]")
    tab.wait_live()
    assert tab.page.inner_text("#who") == "alice"


# -- live, never polling -------------------------------------------------------------------------


def test_a_session_created_over_rest_appears_and_its_changes_show_without_reload(
    open_tab: OpenTab, server: Server
) -> None:
    tab = open_tab()
    tab.sign_in("root", "admin")
    mark(tab)
    sid = create(server, "alice", attributes={"label": "appears live"})
    tab.page.wait_for_selector(row(sid))
    assert "alice" in tab.page.inner_text(row(sid))
    # Admins get seed 001's toast with the live count, and the badge moves with it.
    toast = tab.page.wait_for_selector(f".toast:has-text('Session created: {sid}')")
    assert "active of" in toast.inner_text()
    active = int(tab.page.inner_text("#count-badge").split()[0])
    tab.shot("02-sessions")
    server.call("alice", "POST", f"/api/sessions/{sid}/actions/end", json={"detail": "done"})
    tab.page.wait_for_selector(f'{row(sid)}[data-state="ended"]')
    tab.page.wait_for_selector(f".toast:has-text('Session ended: {sid}')")
    tab.page.wait_for_function(
        "n => document.querySelector('#count-badge').textContent === `${n} active`", arg=active - 1
    )
    # Its page shows the event log as a timeline, and no action is left to take.
    tab.page.click(f"{row(sid)} a")
    tab.page.wait_for_selector(".timeline li[data-type='session.state_changed']")
    assert "end: active → ended" in tab.page.inner_text(".timeline")
    assert "done" in tab.page.inner_text(".timeline")
    assert tab.page.locator(".actions button[data-action]").count() == 0
    assert_same_document(tab)


def test_filters_narrow_the_list_and_new_sessions_follow_them(
    open_tab: OpenTab, server: Server
) -> None:
    tab = open_tab()
    tab.sign_in("root", "admin")
    settled = 'table.sessions[aria-busy="false"]'
    tab.page.fill("#f-text", "needle-in-haystack")
    tab.page.press("#f-text", "Enter")  # at once, not after the typing pause
    tab.page.wait_for_selector(settled)
    hit = create(server, "bob", attributes={"label": "needle-in-haystack"})
    miss = create(server, "bob", attributes={"label": "straw"})
    tab.page.wait_for_selector(row(hit))
    assert tab.page.locator(row(miss)).count() == 0
    tab.page.fill("#f-text", "")
    tab.page.select_option("#f-kind", "generic")
    tab.page.select_option("#f-state", "ended")
    tab.page.wait_for_selector(settled)
    assert tab.page.locator(row(miss)).count() == 0
    server.call("bob", "POST", f"/api/sessions/{miss}/actions/end")
    tab.page.wait_for_selector(row(miss))  # it now matches "ended": it joins the list
    assert tab.page.locator(row(hit)).count() == 0


def test_older_sessions_come_a_page_at_a_time(open_tab: OpenTab, server: Server) -> None:
    made = [create(server, "ivan") for _ in range(26)]
    tab = open_tab()
    tab.sign_in("ivan")
    rows = "table.sessions tbody tr[data-id]"
    tab.page.wait_for_selector(rows)
    assert tab.page.locator(rows).count() == 25  # one page, newest first
    assert tab.page.locator(rows).first.get_attribute("data-id") == made[-1]
    tab.page.click("text=Load older sessions")
    tab.page.wait_for_function(f"() => document.querySelectorAll('{rows}').length === 26")
    assert tab.page.locator(rows).last.get_attribute("data-id") == made[0]
    assert tab.page.is_hidden("text=Load older sessions")
    newest = create(server, "ivan")
    tab.page.wait_for_function(
        f"id => document.querySelector('{rows}').dataset.id === id", arg=newest
    )


def test_a_user_sees_only_their_own_sessions_and_no_action_the_server_refuses(
    open_tab: OpenTab, server: Server
) -> None:
    tab = open_tab(allow=HTTP_ERRORS)
    tab.sign_in("bob")
    alices = create(server, "alice")
    bobs = create(server, "bob")
    tab.page.wait_for_selector(row(bobs))  # bob's arrives live, so alice's would have too
    assert tab.page.locator(row(alices)).count() == 0
    assert tab.page.locator("#f-owner").count() == 0  # no owner filter for a user
    tab.go(f"#/session/{alices}")
    tab.page.wait_for_selector(".session-view [role=alert]:has-text('no session')")
    # bob's own pending request: he may stop it, but approving is for admins.
    remote = server.call("bob", "POST", "/api/remote/start", json={"safety_mode": "autonomous"})
    tab.go("#/remote")
    item = tab.page.wait_for_selector(f".request[data-id='{remote['session_id']}']")
    assert item.query_selector("button[data-action=stop]") is not None
    assert item.query_selector("button[data-action=approve]") is None
    assert item.query_selector("button[data-action=deny]") is None


def test_approving_a_pending_remote_access_request_by_clicking(
    open_tab: OpenTab, server: Server
) -> None:
    admin = open_tab()
    admin.sign_in("root", "admin", route="#/remote")
    user = open_tab()
    user.sign_in("carol")
    started = server.call("carol", "POST", "/api/remote/start", json={"safety_mode": "autonomous"})
    sid = started["session_id"]
    pending = admin.page.wait_for_selector(f"#h-pending + .requests .request[data-id='{sid}']")
    # The approval request reaches the admins as a notification toast, too.
    admin.page.wait_for_selector(f".toast:has-text('{sid} needs approval')")
    admin.shot("03-remote-pending")
    pending.query_selector("button[data-action=approve]").click()
    admin.page.wait_for_selector(f"#h-active + .requests .request[data-id='{sid}']")
    assert admin.page.locator(f"#h-pending + .requests .request[data-id='{sid}']").count() == 0
    assert server.call("carol", "GET", f"/api/remote/status/{sid}")["status"] == "active"
    # The requester hears of it at once (notifications:carol).
    user.page.wait_for_selector(".toast:has-text('approved and activated')")
    admin.shot("04-remote-approved")


def test_a_refused_action_shows_the_servers_answer(open_tab: OpenTab, server: Server) -> None:
    """409 in the server's words. The stream is blocked here, so the page cannot know the
    session ended meanwhile and still offers the button."""
    tab = open_tab(allow=HTTP_ERRORS + NETWORK_ERRORS)
    tab.page.add_init_script("globalThis.sessionhubConfig = { pollMs: 600000 }")
    tab.page.route("**/api/stream**", lambda route: route.abort())
    sid = create(server, "alice")
    token = server.token("root", "admin")
    tab.page.goto(f"{server.url}/?token={token}#/session/{sid}")
    tab.page.wait_for_selector("button[data-action=end]")
    server.call("alice", "POST", f"/api/sessions/{sid}/actions/end")
    tab.page.click("button[data-action=end]")
    alert = tab.page.wait_for_selector(".session-view .form-error:has-text('409')")
    assert "409 Illegal transition" in alert.inner_text() and "ended" in alert.inner_text()


def test_without_a_stream_it_reads_over_http_and_says_so(open_tab: OpenTab, server: Server) -> None:
    tab = open_tab(allow=NETWORK_ERRORS)
    tab.page.add_init_script("globalThis.sessionhubConfig = { pollMs: 500 }")
    tab.page.route("**/api/stream**", lambda route: route.abort())  # a proxy that blocks it
    tab.page.goto(f"{server.url}/?token={server.token('root', 'admin')}")
    tab.page.wait_for_selector('#conn[data-state="polling"]')
    assert "No live stream: updating every 1 s" in tab.page.inner_text("#conn")
    sid = create(server, "alice")
    tab.page.wait_for_selector(row(sid), timeout=3000)
    tab.shot("10-fallback-polling")


def test_the_stream_reconnects_after_a_restart_and_shows_what_changed_meanwhile(
    open_tab: OpenTab, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = Server(data).start()
    tab = open_tab(first, allow=NETWORK_ERRORS)
    try:
        tab.sign_in("root", "admin")
        ends = create(first, "alice")
        tab.page.wait_for_selector(row(ends))
        mark(tab)
    finally:
        first.stop()
    tab.page.wait_for_selector('#conn:not([data-state="live"])')

    async def change_meanwhile() -> None:
        # The server is down: change the database it will find when it comes back.
        from sessionhub.backends import open_hub

        hub = open_hub(first.settings)
        await hub.start()
        try:
            await hub.act(Principal("alice"), ends, "end", detail="while the server was down")
            made, _ = await hub.create(Principal("alice"), "generic")
            created.append(made.id)
        finally:
            await hub.close()

    created: list[str] = []
    offline(change_meanwhile)
    second = Server(data, port=first.port).start()
    try:
        tab.server = second
        tab.wait_live()
        tab.page.wait_for_selector(row(created[0]))
        tab.page.wait_for_selector(f'{row(ends)}[data-state="ended"]')
        assert_same_document(tab)
        tab.page.goto("about:blank")  # closes the stream, so the server stops at once
    finally:
        second.stop()


# -- the kinds' panels -----------------------------------------------------------------------


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-colour PNG, made here (the relay carries any bytes; the page draws images)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"IDAT", zlib.compress(rows)),
            chunk(b"IEND", b""),
        )
    )


def test_screen_share_frames_reach_an_admitted_viewer(open_tab: OpenTab, server: Server) -> None:
    from websockets.sync.client import ClientConnection, connect

    share = server.call(
        "dave", "POST", "/api/screen_share/start", json={"quality": "low", "viewers": ["erin"]}
    )
    sid = share["session_id"]
    url = f"ws://127.0.0.1:{server.port}/stream/{sid}?role=sharer&token={server.token('dave')}"
    stop = threading.Event()

    def send_frames(sharer: ClientConnection) -> None:
        colours = [(29, 78, 216), (20, 98, 47), (161, 27, 27)]
        i = 0
        while not stop.wait(0.1):
            sharer.send(png(160, 90, colours[i % 3]))
            i += 1

    with connect(url) as sharer:
        sharer.recv(timeout=5)  # {"type": "ready", ...}
        sender = threading.Thread(target=send_frames, args=(sharer,), daemon=True)
        sender.start()
        try:
            _watch_share(open_tab, sid)
        finally:
            stop.set()
            sender.join(5)


def _watch_share(open_tab: OpenTab, sid: str) -> None:
    """The owner on the session's page, and an admitted viewer on the watch page (they may
    not read someone else's session), both see frames move."""
    owner = open_tab()
    owner.sign_in("dave", route=f"#/session/{sid}")
    owner.page.wait_for_function(
        "() => { const i = document.querySelector('img.frame');"
        " return i && Number(i.dataset.frames) >= 2 && i.naturalWidth === 160; }"
    )
    owner.shot("06-screen-share")
    viewer = open_tab()
    viewer.sign_in("erin", route=f"#/watch/{sid}")
    viewer.page.wait_for_function(
        "() => Number(document.querySelector('img.frame')?.dataset.frames) >= 2"
    )


def test_remote_access_commands_with_their_output(open_tab: OpenTab, server: Server) -> None:
    started = server.call("frank", "POST", "/api/remote/start", json={"safety_mode": "supervised"})
    sid = started["session_id"]
    tab = open_tab()
    tab.sign_in("frank", route=f"#/session/{sid}")
    tab.page.fill("#cmd-text", "ls -la /srv")
    tab.page.click(".command-form button[type=submit]")
    item = tab.page.wait_for_selector(".command[data-status='pending_approval']")
    cid = item.get_attribute("data-id")
    tab.page.click(f".command[data-id='{cid}'] button:has-text('Approve command')")
    tab.page.wait_for_selector(f".command[data-id='{cid}'][data-status='approved']")
    # The agent reports the result elsewhere; the page hears of it through the stream.
    server.call(
        "frank",
        "POST",
        f"/api/remote/{sid}/commands/{cid}/complete",
        json={"success": True, "exit_code": 0, "output": "total 0\ndrwxr-xr-x 2 root root ."},
    )
    output = tab.page.wait_for_selector(f".command[data-id='{cid}'] pre.output")
    assert "total 0" in output.inner_text()
    tab.page.wait_for_selector(".panel:has-text('1 commands executed')")
    tab.shot("05-remote-commands")


def test_workspace_chat_and_linked_mission(open_tab: OpenTab, server: Server) -> None:
    ws = server.call("42", "POST", "/api/sessions/", json={})
    for role, content in (("user", "Find papers on CRISPR"), ("assistant", "Here are three.")):
        server.call(
            "42",
            "POST",
            f"/api/sessions/{ws['id']}/messages",
            json={"role": role, "content": content},
        )
    server.call("42", "POST", f"/api/sessions/{ws['id']}/link-mission/mission-123")
    tab = open_tab()
    tab.sign_in("root", "admin", route=f"#/session/{ws['id']}")
    tab.page.wait_for_selector(".chat .message.assistant:has-text('Here are three.')")
    assert "Find papers on CRISPR" in tab.page.inner_text(".chat")
    tab.page.wait_for_selector(".panel dd code:has-text('mission-123')")
    tab.shot("07-workspace")


def test_live_counts_move_with_the_stream(open_tab: OpenTab, server: Server) -> None:
    tab = open_tab()
    tab.sign_in("root", "admin", route="#/counts")
    before = int(tab.page.inner_text("#n-active .value"))
    create(server, "gina")
    create(server, "gina")
    tab.page.wait_for_function(
        "n => document.querySelector('#n-active .value').textContent === String(n)",
        arg=before + 2,
    )
    assert int(tab.page.inner_text("#n-created .value")) >= 2
    label = tab.page.get_attribute("svg.chart", "aria-label")
    assert label and f"{before + 2} now" in label
    tab.shot("08-live-counts")


def test_at_phone_width_everything_still_reads(open_tab: OpenTab, server: Server) -> None:
    create(server, "hana", attributes={"label": "on a phone"})
    tab = open_tab()
    tab.page.set_viewport_size({"width": 390, "height": 844})
    tab.sign_in("hana")
    tab.page.wait_for_selector("table.sessions tbody tr[data-id]")
    scroll = tab.page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= 390, f"the page scrolls sideways ({scroll}px)"
    tab.shot("09-phone")


def test_the_api_docs_load_and_offer_authorize_with_nothing_from_elsewhere(
    open_tab: OpenTab, server: Server
) -> None:
    tab = open_tab()
    tab.page.goto(server.url + "/docs")
    tab.page.wait_for_selector(".swagger-ui button.authorize")
    tab.shot("11-docs")
    tab.page.goto(server.url + "/redoc")
    tab.page.wait_for_selector("redoc [role=navigation], .menu-content", state="attached")


# -- the gapless merge, in the page's own modules ------------------------------------------------

MERGE_CHECKS = """
async () => {
  const { SessionList } = await import('/dashboard/js/sessions.js');
  const { formatId } = await import('/dashboard/js/live.js');
  const at = (n) => `2026-01-01T12:00:${String(n).padStart(2, '0')}Z`;
  const s = (id, version, state = 'active', n = 1) =>
    ({ id, kind: 'generic', owner: 'a', state, version, created_at: at(n), attributes: {} });
  const ev = (session, type = 'session.state_changed') =>
    ({ type, session_id: session.id, kind: 'generic', version: session.version, data: { session } });
  let release;
  const api = { get: () => new Promise((ok) => { release = ok; }) };
  const list = new SessionList(api, { state: 'active' });
  const out = {};
  // A publication that arrives while the snapshot loads waits for it, then applies on top.
  const loading = list.load();
  list.apply(ev(s('x', 3, 'active', 3), 'session.created'));
  list.apply(ev(s('b', 2, 'ended', 2)));
  release({ items: [s('b', 1, 'active', 2), s('a', 4, 'active', 1)], next_cursor: null,
            stream: { topic: 'sessions', offset: 9, epoch: 'e' } });
  out.position = await loading;
  out.afterLoad = list.items.map((i) => `${i.id}@${i.version}`);
  // Repeats and older versions are skipped; a newer one applies.
  out.repeat = list.apply(ev(s('a', 4, 'active', 1)));
  out.older = list.apply(ev(s('a', 2, 'active', 1)));
  out.newer = list.apply(ev({ ...s('a', 5, 'active', 1), attributes: { label: 'new' } }));
  // Deleted: gone, and a late repeat of an older event cannot bring it back.
  out.deleted = list.apply({ type: 'session.deleted', session_id: 'x', version: 4, data: {} });
  out.zombie = list.apply(ev(s('x', 3, 'active', 3)));
  out.final = list.items.map((i) => `${i.id}@${i.version}`);
  out.ids = [
    formatId({ t: { offset: 3, epoch: 'e' } }, ['t']),
    formatId({ t: { offset: 3, epoch: 'e' } }, ['t', 'notifications:a']),
  ];
  return out;
}
"""


def test_the_snapshot_and_the_stream_merge_without_gaps_or_repeats(
    open_tab: OpenTab, server: Server
) -> None:
    tab = open_tab()
    tab.sign_in("root", "admin")
    out = tab.page.evaluate(MERGE_CHECKS)
    assert out["position"] == {"topic": "sessions", "offset": 9, "epoch": "e"}
    # x (created meanwhile) is added; b's end (v2, newer than the snapshot's v1) removes it.
    assert out["afterLoad"] == ["x@3", "a@4"]
    assert (out["repeat"], out["older"], out["newer"]) == (False, False, True)
    assert (out["deleted"], out["zombie"]) == (True, False)
    assert out["final"] == ["a@5"]
    assert out["ids"] == ["3:e", "t@3:e"]
