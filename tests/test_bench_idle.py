"""``bench/idle.py`` measures idle subscribers that stay connected (they answer pings)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a real node and a client fleet, several seconds

BENCH = Path(__file__).resolve().parents[1] / "bench" / "idle.py"


def test_idle_bench_keeps_every_subscriber_and_reports_the_servers_cpu() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--ns", "30", "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    row = re.search(r"^\| 30 \| this tree \| ([\d.]+)% \| (\d+) \| ([\d.]+) s \| - \|$", out, re.M)
    assert row, out
    assert int(row[2]) == 30, out  # none dropped: the figure is of connections that stayed
    assert 0 < float(row[1]) < 100, out  # a live node spends something, and at most a core
