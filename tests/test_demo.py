"""``sessionhub demo``: it starts, prints a sign-in link, every kind moves (a room among them,
with players moving in it), and Ctrl-C stops it cleanly."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import httpx
import pytest
from tests.processes import free_port

pytestmark = pytest.mark.slow


async def test_the_demo_moves_every_kind_and_stops_on_ctrl_c() -> None:
    port = free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
        [sys.executable, "-m", "sessionhub.cli", "demo", "--port", str(port), "--pace", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        token = ""
        deadline = time.monotonic() + 30
        while not token and time.monotonic() < deadline:
            line = await asyncio.to_thread(proc.stdout.readline)
            m = re.search(r"sign-in link: (\S+)/\?token=(\S+)", line)
            if m:
                assert m.group(1) == f"http://127.0.0.1:{port}"
                token = m.group(2)
        assert token, "no sign-in link printed"
        seen: Counter[str] = Counter()
        moved: dict[str, Any] = {}
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}
        ) as c:
            for _ in range(200):  # bounded: 20 s
                items = (await c.get("/api/sessions", params={"limit": 200})).json()["items"]
                seen = Counter(s["kind"] for s in items)
                by_kind = {s["kind"]: s for s in items}
                moved = {
                    "remote_access": any(
                        s["kind"] == "remote_access" and s["state"] == "pending_approval"
                        for s in items
                    ),
                    "screen_share": any(
                        s["kind"] == "screen_share" and s.get("frames_captured", 0) > 0
                        for s in items
                    ),
                    "workspace": "workspace" in by_kind,
                    "imaging": any(s["kind"] == "imaging" and s["version"] > 3 for s in items),
                    "generic": seen["generic"] >= 2,
                    # Players present with their handles, and what they send counted.
                    "room": any(
                        s["kind"] == "room"
                        and s["attributes"].get("players", 0) >= 2
                        and len(s["attributes"].get("handles") or []) >= 2
                        and s["counters"].get("messages", 0) > 0
                        for s in items
                    ),
                }
                if all(moved.values()):
                    break
                await asyncio.sleep(0.1)
            assert all(moved.values()), (moved, seen)
            ws = next(s for s in items if s["kind"] == "workspace")
            chat = await c.get(f"/api/sessions/{ws['id']}/messages")
            assert chat.json()["total"] >= 1
        proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=20)
        assert proc.returncode == 0, out
        assert "demo stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
