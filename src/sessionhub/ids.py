"""Random identifiers without a system call each.

``os.urandom`` is a system call, and a system call releases the GIL: with the SQLite writer
thread busy, the event loop then waits for the GIL to come back (up to the interpreter's
switch interval, 5 ms), once per event id. Ids here come from a pool of ``os.urandom``
bytes, refilled every ``POOL`` bytes, so they are as unpredictable as ``secrets`` ids and
cost one system call per few hundred. The pool is dropped in a forked child, which must not
hand out its parent's ids.
"""

from __future__ import annotations

import os

#: Random bytes fetched per system call.
POOL = 4096

_pool = b""
_at = 0


def _reset() -> None:
    global _pool, _at
    _pool, _at = b"", 0


os.register_at_fork(after_in_child=_reset)


def random_bytes(n: int) -> bytes:
    """``n`` random bytes (``n`` at most ``POOL``) from the pool."""
    global _pool, _at
    if _at + n > len(_pool):
        _pool, _at = os.urandom(max(POOL, n)), 0
    out = _pool[_at : _at + n]
    _at += n
    return out


def random_hex(n: int) -> str:
    """``2 * n`` hexadecimal digits of randomness (like ``secrets.token_hex(n)``)."""
    return random_bytes(n).hex()
