"""The README's screenshots, taken from ``sessionhub demo``.

    .venv/bin/python docs/screenshots.py [--out docs/images] [--chromium /usr/bin/chromium]

Starts ``sessionhub demo`` on a free port (a subprocess), opens the sign-in link it prints in
Debian's chromium through Playwright (the system's browser: nothing is downloaded) at a
desktop size, and saves ``dashboard.png`` (the sessions list) and one image per panel:
``remote-access.png``, ``screen-share.png``, ``workspace.png``, ``imaging.png``,
``room.png`` and ``live-counts.png``. Everything shown is the demo's own scripted traffic.
The demo is stopped with Ctrl-C (SIGINT) at the end, as a user would.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
#: A desktop browser window; device pixels 1:1, so the images stay small.
VIEWPORT: Any = {"width": 1200, "height": 760}
#: Tallest panel image, CSS pixels (a panel's long lists are cut there).
MAX_PANEL_HEIGHT = 1060
WAIT_S = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Demo:
    """``sessionhub demo`` in a subprocess, and REST calls with its admin token."""

    def __init__(self, port: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sessionhub.cli", "demo", "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.link = ""
        said: list[str] = []
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while not self.link and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                break
            said.append(line)
            m = re.search(r"sign-in link: (\S+)", line)
            if m:
                self.link = m.group(1)
        if not self.link:
            self.stop()
            raise SystemExit("sessionhub demo printed no sign-in link:\n" + "".join(said[-20:]))
        base, _, token = self.link.partition("/?token=")
        self.http = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

    def sessions(self, kind: str) -> list[dict[str, Any]]:
        r = self.http.get("/api/sessions", params={"kind": kind, "limit": 50})
        r.raise_for_status()
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    def chatted(self, session: dict[str, Any]) -> bool:
        """A workspace with a few messages (chat is not a session change: read it)."""
        r = self.http.get(f"/api/sessions/{session['id']}/messages")
        return r.is_success and r.json()["total"] >= 3

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def until(what: str, find: Callable[[], Any]) -> Any:
    """``find()`` once it answers something, within ``WAIT_S``."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = find()
        if found:
            return found
        time.sleep(0.5)
    raise SystemExit(f"the demo showed no {what} within {WAIT_S:.0f} s")


def first(items: list[dict[str, Any]], test: Callable[[dict[str, Any]], bool]) -> Any:
    return next((s for s in items if test(s)), None)


def shoot(page: Any, selector: str, path: Path, *, cut: str | None = None) -> None:
    """The element ``selector`` into ``path``: down to the bottom of ``cut`` (an element
    inside it) if given, and never taller than ``MAX_PANEL_HEIGHT``."""
    box = page.locator(selector).bounding_box()  # relative to the viewport
    assert box is not None, selector
    bottom = box["y"] + box["height"]
    if cut is not None:
        inner = page.locator(cut).bounding_box()
        if inner is not None:
            bottom = min(bottom, inner["y"] + inner["height"] + 12)
    scroll = page.evaluate("() => [window.scrollX, window.scrollY]")
    clip = {
        "x": box["x"] + scroll[0],
        "y": box["y"] + scroll[1],
        "width": box["width"],
        "height": min(bottom - box["y"], MAX_PANEL_HEIGHT),
    }
    page.screenshot(path=str(path), clip=clip, full_page=True)
    done(path)


def done(path: Path) -> None:
    before = path.stat().st_size
    shrink(path)
    print(f"{path}: {before // 1024} KB from the browser, {path.stat().st_size // 1024} KB kept")


# -- smaller PNGs: 256 colours, as a UI screenshot needs (pure Python, no imaging library) --


def _chunks(data: bytes) -> dict[bytes, bytes]:
    pos, out = 8, dict[bytes, bytes]()
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        tag = data[pos + 4 : pos + 8]
        out[tag] = out.get(tag, b"") + data[pos + 8 : pos + 8 + n]
        pos += 12 + n
    return out


def _pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and the RGB pixels of an 8-bit RGB or RGBA PNG (alpha dropped)."""
    chunks = _chunks(path.read_bytes())
    w, h, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    if depth != 8 or colour not in (2, 6):
        raise ValueError(f"{path}: not an 8-bit RGB(A) PNG")
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(chunks[b"IDAT"])
    stride = w * bpp
    prev = bytearray(stride)
    pixels: list[bytes] = []
    for y in range(h):
        i = y * (stride + 1)
        kind, line = raw[i], bytearray(raw[i + 1 : i + 1 + stride])
        if kind == 1:
            for x in range(bpp, stride):
                line[x] = (line[x] + line[x - bpp]) & 255
        elif kind == 2:
            for x in range(stride):
                line[x] = (line[x] + prev[x]) & 255
        elif kind == 3:
            for x in range(stride):
                left = line[x - bpp] if x >= bpp else 0
                line[x] = (line[x] + (left + prev[x]) // 2) & 255
        elif kind == 4:
            for x in range(stride):
                a = line[x - bpp] if x >= bpp else 0
                b, c = prev[x], (prev[x - bpp] if x >= bpp else 0)
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        row = bytes(line)
        pixels.extend(row[x : x + 3] for x in range(0, stride, bpp))
        prev = line
    return w, h, pixels


def _palette(counts: Counter[bytes], size: int = 256) -> list[bytes]:
    """The most used colours exactly (a UI's flat backgrounds, text, accents), and for the
    rest (anti-aliased edges) the weighted means of a median cut."""
    if len(counts) <= size:
        return list(counts)
    exact = [c for c, _ in counts.most_common(size // 4)]
    rest = [(c, n) for c, n in counts.items() if c not in set(exact)]
    boxes = [rest]
    while len(boxes) < size - len(exact):
        spans = [
            max(max(c[k] for c, _ in b) - min(c[k] for c, _ in b) for k in range(3))
            if len(b) > 1
            else -1
            for b in boxes
        ]
        i = max(range(len(boxes)), key=lambda j: spans[j])
        if spans[i] <= 0:
            break
        box = boxes.pop(i)
        axis = max(range(3), key=lambda k: max(c[k] for c, _ in box) - min(c[k] for c, _ in box))
        box.sort(key=lambda e: e[0][axis])
        half, acc, cut = sum(n for _, n in box) / 2, 0, 1
        for j, (_, n) in enumerate(box):
            acc += n
            if acc >= half:
                cut = min(max(j, 1), len(box) - 1)
                break
        boxes += [box[:cut], box[cut:]]
    means = []
    for b in boxes:
        total = sum(n for _, n in b)
        means.append(bytes(round(sum(c[k] * n for c, n in b) / total) for k in range(3)))
    return exact + means


def shrink(path: Path) -> None:
    """Rewrite ``path`` with 256 colours (an indexed PNG): about half the bytes, and the
    same picture to the eye."""
    w, h, pixels = _pixels(path)
    counts = Counter(pixels)
    palette = _palette(counts)
    index: dict[bytes, int] = {}
    for colour in counts:
        index[colour] = min(
            range(len(palette)),
            key=lambda i: sum((colour[k] - palette[i][k]) ** 2 for k in range(3)),
        )
    rows = b"".join(
        b"\x00" + bytes(index[p] for p in pixels[y * w : (y + 1) * w]) for y in range(h)
    )

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
        + chunk(b"PLTE", b"".join(palette))
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def run(out: Path, chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    demo = Demo(free_port())
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=chromium,
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-lcd-text"],
            )
            page = browser.new_page(viewport=VIEWPORT, color_scheme="light", device_scale_factor=1)
            page.set_default_timeout(WAIT_S * 1000)
            page.goto(demo.link)
            page.wait_for_selector('#conn[data-state="live"]')
            # Toasts come and go over whatever is below them: not in these pictures.
            page.evaluate("() => { document.getElementById('toasts').style.display = 'none'; }")
            # Let every scripted user get going (the remote request waits for approval, the
            # workspace has chatted a little, the room has players and counts).
            until("room with players", lambda: first(
                demo.sessions("room"), lambda s: s["attributes"].get("players", 0) >= 2))  # fmt: skip
            until("workspace chat", lambda: first(demo.sessions("workspace"), demo.chatted))
            page.wait_for_selector("table.sessions tbody tr[data-id]")
            page.screenshot(path=str(out / "dashboard.png"))
            done(out / "dashboard.png")

            def session(kind: str, test: Callable[[dict[str, Any]], bool]) -> str:
                s = until(kind.replace("_", " "), lambda: first(demo.sessions(kind), test))
                page.evaluate("id => { location.hash = `#/session/${id}`; }", s["id"])
                page.wait_for_selector(".session-view .panel")
                sid: str = s["id"]
                return sid

            session(
                "remote_access",
                lambda s: s["state"] == "active" and s["counters"].get("commands_executed", 0) >= 1,
            )
            page.wait_for_selector(".command pre.output")
            shoot(page, ".panel", out / "remote-access.png")

            session("screen_share", lambda s: s["state"] == "active")
            page.wait_for_function(
                "() => Number(document.querySelector('img.frame')?.dataset.frames) >= 3"
            )
            shoot(page, ".panel", out / "screen-share.png")

            session("workspace", demo.chatted)
            page.wait_for_selector(".chat .message.assistant")
            shoot(page, ".panel", out / "workspace.png")

            # A night well under way: guided for a while, frames in more than one filter.
            def night() -> bool:
                session(
                    "imaging",
                    lambda s: (
                        s["state"] == "active"
                        and len(s["attributes"].get("images_per_filter") or {}) >= 2
                    ),
                )
                try:
                    page.wait_for_function(
                        "() => Number(document.querySelector('#img-rms-chart svg')"
                        "?.dataset.points) >= 10 && document.querySelector("
                        "\"#img-activity[data-state='imaging']\")",
                        timeout=20000,
                    )
                except Exception:
                    return False  # the night ended first: the next one
                return True

            until("imaging night with guiding", night)
            shoot(page, ".panel", out / "imaging.png", cut="#img-events li:nth-child(5)")

            session("room", lambda s: s["state"] == "active")
            page.wait_for_function(
                "() => Number(document.querySelector('#room-rate')?.dataset.rate) > 0"
                " && Number(document.querySelector('#room-rate-chart svg')"
                "?.dataset.points) >= 4"
            )
            shoot(page, ".panel", out / "room.png")

            # The counts' chart is drawn from the stream since the page opened: last.
            page.evaluate("() => { location.hash = '#/counts'; }")
            page.wait_for_selector("#n-active")
            shoot(page, ".counts-view", out / "live-counts.png")
            browser.close()
    finally:
        demo.stop()
    total = sum(p.stat().st_size for p in out.glob("*.png"))
    print(f"{total // 1024} KB in all")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=HERE / "images")
    p.add_argument(
        "--chromium",
        default=os.environ.get("SESSIONHUB_CHROMIUM")
        or shutil.which("chromium")
        or "/usr/bin/chromium",
    )
    args = p.parse_args()
    run(args.out.resolve(), args.chromium)
    return 0


if __name__ == "__main__":
    sys.exit(main())
