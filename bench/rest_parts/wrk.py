"""Debian's ``wrk`` as the load generator: one thread, ``--wrk-connections`` connections,
pinned to CPU 1 with the server on CPU 0, a Lua script generated per run that cycles
through the sessions (optionally paced with ``delay()``) and reports one JSON line; and one
backend measured with it: sessionhub's PATCH (full rate, then half of it offered), the
ceiling, the bare-UPDATE peer.

``SERVER_CPUS`` and ``WRK_CPUS`` are set by ``rest.main``; read them as ``wrk.SERVER_CPUS``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rest_parts.apps import PEER_ROWS
from rest_parts.servers import (
    SECRET,
    pinned,
    reset_postgres,
    start_ceiling,
    start_peer,
    start_sessionhub,
)

# -- wrk: the server on CPU 0, Debian's wrk on CPU 1 --------------------------------------------

WRK_LUA = r"""
local ids = {@IDS@}
local token = "@TOKEN@"
local method, prefix = "@METHOD@", "@PREFIX@"
local pace_ms = @PACE@
-- Globals: the main state reads each thread's statuses with thread:get().
counter, statuses, threads = 0, {}, {}

function setup(thread) table.insert(threads, thread) end
function init(args) counter = 0; statuses = {} end

function request()
  counter = counter + 1
  local id = ids[(counter % #ids) + 1]
  local body = '{"attributes":{"label":"wrk-' .. counter .. '"}}'
  local headers = {["Content-Type"] = "application/json"}
  if token ~= "" then headers["Authorization"] = "Bearer " .. token end
  return wrk.format(method, prefix .. id, headers, body)
end

if pace_ms > 0 then
  function delay() return pace_ms end
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local merged, parts = {}, {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses") or {}) do merged[k] = (merged[k] or 0) + v end
  end
  for k, v in pairs(merged) do parts[#parts + 1] = '"' .. k .. '":' .. v end
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"socket_errors":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    table.concat(parts, ",")))
end
"""


@dataclass
class WrkRow:
    backend: str
    what: str
    result: dict[str, Any]
    offered: float = 0.0

    @property
    def rate(self) -> float:
        seconds = self.result["duration_us"] / 1e6
        return self.result["requests"] / seconds if seconds else 0.0

    @property
    def non2xx(self) -> float:
        """Share of the answers that were not 2xx."""
        statuses = {int(k): v for k, v in self.result["statuses"].items()}
        total = sum(statuses.values())
        bad = sum(v for k, v in statuses.items() if not 200 <= k < 300)
        return bad / total if total else 0.0

    def codes(self) -> str:
        return ", ".join(
            f"{k}: {v}" for k, v in sorted(self.result["statuses"].items()) if k[0] != "2"
        )


def run_wrk(
    url: str,
    tmp: Path,
    ids: list[str],
    method: str,
    prefix: str,
    args: argparse.Namespace,
    *,
    token: str = "",
    pace_ms: int = 0,
    seconds: float | None = None,
) -> dict[str, Any]:
    """One wrk run (one thread, ``--wrk-connections`` connections, pinned to CPU 1)."""
    script = tmp / f"wrk-{time.monotonic_ns()}.lua"
    lua = (
        WRK_LUA.replace("@IDS@", ",".join(json.dumps(i) for i in ids))
        .replace("@TOKEN@", token)
        .replace("@METHOD@", method)
        .replace("@PREFIX@", prefix)
        .replace("@PACE@", str(pace_ms))
    )
    script.write_text(lua)
    cmd = ["wrk", "-t1", f"-c{args.wrk_connections}", f"-d{seconds or args.duration:g}s"]
    cmd += ["--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=(seconds or args.duration) + 60,
        preexec_fn=pinned(WRK_CPUS),
        check=False,
    )
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            result: dict[str, Any] = json.loads(line[8:])
            return result
    raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout[-500:]}")


#: With 2+ CPUs (set by ``rest.main``): the server on the first, wrk on the second.
SERVER_CPUS: set[int] | None = None
WRK_CPUS: set[int] | None = None


def bench_wrk(
    name: str, database_url: str | None, args: argparse.Namespace, tmp: Path
) -> list[WrkRow]:
    from sessionhub.auth import Authenticator

    rows: list[WrkRow] = []
    data = tmp / f"wrk-{name}"
    data.mkdir()
    if database_url and not database_url.startswith("sqlite"):
        asyncio.run(reset_postgres(database_url))
    token = Authenticator(secret=SECRET).issue("bench")
    server = start_sessionhub(data, database_url, args.log_level, SERVER_CPUS)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
            ids = [
                c.post("/api/sessions", json={"kind": "generic"}).json()["id"]
                for _ in range(args.wrk_sessions)
            ]
        patch = "PATCH", "/api/sessions/"
        run_wrk(server.url, tmp, ids, *patch, args, token=token, seconds=1)  # warm-up
        full = WrkRow(
            name,
            "PATCH /api/sessions/{id}",
            run_wrk(server.url, tmp, ids, *patch, args, token=token),
        )
        rows.append(full)
        time.sleep(3.0)  # let whatever the changes set off (events, consumers) settle
        # Half the rate it just managed: each connection waits between its requests.
        half = full.rate / 2
        pace = max(1, round(args.wrk_connections * 1000 / half)) if half else 1000
        paced = run_wrk(server.url, tmp, ids, *patch, args, token=token, pace_ms=pace)
        rows.append(WrkRow(name, "PATCH, half that rate offered", paced, offered=half))
    finally:
        server.stop()

    ceiling = start_ceiling(data, SERVER_CPUS)
    try:
        run_wrk(ceiling.url, tmp, ids, "PATCH", "/api/sessions/", args, seconds=1)
        result = run_wrk(ceiling.url, tmp, ids, "PATCH", "/api/sessions/", args)
        rows.append(WrkRow(name, "ceiling: FastAPI PATCH {}", result))
    finally:
        ceiling.stop()

    peer_url = database_url or f"sqlite+aiosqlite:///{data / 'peer.db'}"
    if not peer_url.startswith("sqlite"):
        asyncio.run(reset_postgres(peer_url))
    peer = start_peer(data, peer_url, SERVER_CPUS)
    try:
        rows_ids = [str(random.randrange(PEER_ROWS)) for _ in range(args.wrk_sessions)]
        run_wrk(peer.url, tmp, rows_ids, "POST", "/write/", args, seconds=1)
        result = run_wrk(peer.url, tmp, rows_ids, "POST", "/write/", args)
        rows.append(WrkRow(name, "peer: 1 UPDATE/request", result))
    finally:
        peer.stop()
    return rows
