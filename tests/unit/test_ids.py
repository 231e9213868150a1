"""Pooled random ids: the right length, never repeated, and a forked child does not reuse
its parent's pool."""

from __future__ import annotations

import os

import pytest

from sessionhub import ids


def test_ids_have_the_asked_length_and_do_not_repeat() -> None:
    seen = {ids.random_hex(16) for _ in range(3 * ids.POOL // 16)}  # across refills
    assert len(seen) == 3 * ids.POOL // 16
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in seen)
    assert len(ids.random_bytes(ids.POOL)) == ids.POOL  # a whole pool at once


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_draws_fresh_bytes() -> None:
    ids.random_hex(1)  # the pool is filled: a child that kept it would repeat what follows
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, ids.random_hex(16).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child != ids.random_hex(16)
