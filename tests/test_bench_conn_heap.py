"""``bench/conn_heap.py`` attributes an idle connection's heap to the lines that made it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "conn_heap.py"


def test_conn_heap_names_the_connection_object_once_per_connection() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--conns", "40", "--rows", "40"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "40 idle subscribed connections" in out
    rows = {
        m[1].strip(): (float(m[2]), float(m[3]))
        for m in re.finditer(r"^\| (.+?) \| +(\d+) \| +([\d.]+) \|", out, re.M)
    }
    # Conn.__init__'s client id (a str per connection) is one object per connection.
    conn_rows = [v for k, v in rows.items() if k.startswith("server/realtime/conn.py:")]
    assert conn_rows, out
    assert any(0.9 <= objects <= 1.1 for _, objects in conn_rows), out
    heap = float(re.search(r"Python heap per connection: +(\d+) B", out)[1])  # type: ignore[index]
    assert 500 < heap < 20_000, out
    # The floor (a bare uvloop protocol, the same count of plain TCP connections) keeps
    # some heap per socket, and less than sessionhub: the difference is what is ours.
    floor = float(
        re.search(r"floor.*?\nRSS.*?\nPython heap per connection: +(\d+) B", out, re.S)[1]
    )  # type: ignore[index]
    ours = float(re.search(r"sessionhub's own heap per connection: +(-?\d+) B", out)[1])  # type: ignore[index]
    assert 100 < floor < heap, out
    assert abs(heap - floor - ours) <= 1, out
