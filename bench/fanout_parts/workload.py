"""What every server in the fan-out bench is measured on, and the servers' names: shared by
the servers, the load generator, the runs and the report."""

from __future__ import annotations

from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent
SECRET = "bench-secret-0123456789abcdef0123456789"
CHANNEL = "bench"
PAD = 240  # brings a message to ~300 bytes on the wire
ALL_SERVERS = ("sessionhub", "uws", "picows", "node", "websockets")
LABEL = {
    "sessionhub": "sessionhub",
    "uws": "uWebSockets.js",
    "picows": "picows",
    "node": "Node ws",
    "websockets": "websockets",
    "cserver": "C broadcast (check)",
}
WINDOW = {100: 32, 1000: 8}
