"""The official ``centrifuge`` JavaScript SDK (npm) under Node against a real server.

``make test`` installs it from ``package.json``; skipped with a reason where Node or the
npm packages are absent.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from tests.live import LiveServer
from tests.realtime.helpers import node_or_skip

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "node" / "centrifuge_sdk.mjs"

pytestmark = [pytest.mark.node, pytest.mark.slow]


async def run_scenario(live: LiveServer, scenario: str) -> dict[str, Any]:
    node = node_or_skip()
    env = {
        **os.environ,
        "WS_URL": live.ws_url,
        "HTTP_URL": live.url,
        "TOKEN_ALICE": live.token("alice"),
        "TOKEN_BOB": live.token("bob"),
        "TOKEN_ADMIN": live.token("root", "admin"),
        "SCENARIO": scenario,
    }
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 55)
    assert proc.returncode == 0, err.decode()[-2000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def test_js_sdk_connect_subscribe_publications_presence_recovery(
    make_server: Any,
) -> None:
    live = make_server()
    r = await run_scenario(live, "main")
    assert r["bad_token_code"] == 3500
    assert r["connected"] == "connected"
    assert r["refused_code"] == 103 and r["state_after_refusal"] == "connected"
    assert r["offsets"] == [1, 2, 3, 4] and r["versions"] == [1, 2, 3, 4]
    assert r["presence_users"] == ["alice", "root"]
    assert "root" in r["joins"] and r["leaves"] == ["root"]
    assert r["was_recovering"] is True and r["recovered"] is True
    assert r["after_recovery"] == [[5, "away1"], [6, "away2"]]


async def test_js_sdk_recovery_out_of_the_window(make_server: Any) -> None:
    live = make_server(history_size=2)
    r = await run_scenario(live, "window")
    assert r["was_recovering"] is True and r["recovered"] is False
    assert r["offsets"] == [1]
