"""Seed 002: "Session metadata encrypted in database" - and the chat with it.

With a key configured, plaintext written through the API must not appear anywhere in the
SQLite files (database, WAL, shared memory) while the API still returns it; ``sessionhub
rotate-keys`` re-seals everything so that the old key can be dropped.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text
from tests.inprocess import serve_in_process

from sessionhub import cli
from sessionhub.server.runtime import Runtime, build_runtime
from sessionhub.settings import Settings

SECRET = "encryption-test-secret-0123456789abcdef"
KEY1 = Fernet.generate_key().decode()
KEY2 = Fernet.generate_key().decode()
Auth = Callable[..., dict[str, str]]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", jwt_secret=SECRET, sweep_interval=3600.0, encryption_keys=KEY1
    )


def markers() -> dict[str, str]:
    tag = uuid.uuid4().hex
    return {k: f"{k}-plaintext-{tag}" for k in ("meta1", "meta2", "content", "msgmeta")}


def db_bytes(data_dir: Path) -> bytes:
    files = sorted(data_dir.glob("sessionhub.db*"))
    assert any(f.name == "sessionhub.db" for f in files), files
    return b"".join(f.read_bytes() for f in files)


async def write_secrets(
    client: httpx.AsyncClient, headers: dict[str, str], m: dict[str, str]
) -> str:
    r = await client.post(
        "/api/sessions/",
        json={"name": "visible-workspace-name", "session_metadata": {"s": m["meta1"]}},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    sid: str = r.json()["id"]
    r = await client.put(
        f"/api/sessions/{sid}", json={"session_metadata": {"s": m["meta2"]}}, headers=headers
    )
    assert r.status_code == 200, r.text
    r = await client.post(
        f"/api/sessions/{sid}/messages",
        json={"role": "user", "content": m["content"], "message_metadata": {"n": m["msgmeta"]}},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    return sid


async def read_back(client: httpx.AsyncClient, headers: dict[str, str], sid: str) -> dict[str, Any]:
    rec = (await client.get(f"/api/sessions/{sid}", headers=headers)).json()
    msgs = (await client.get(f"/api/sessions/{sid}/messages", headers=headers)).json()
    events = (await client.get(f"/api/sessions/{sid}/events", headers=headers)).json()
    return {"record": rec, "messages": msgs["messages"], "events": events["items"]}


async def test_metadata_and_chat_never_reach_the_disk_in_plaintext(
    client: httpx.AsyncClient, auth: Auth, runtime: Runtime, settings: Settings
) -> None:
    alice = auth("alice")
    m = markers()
    sid = await write_secrets(client, alice, m)
    got = await read_back(client, alice, sid)
    assert got["record"]["session_metadata"] == {"s": m["meta2"]}
    assert got["messages"][0]["content"] == m["content"]
    assert got["messages"][0]["message_metadata"] == {"n": m["msgmeta"]}
    assert got["events"][0]["data"]["session"]["metadata"] == {"s": m["meta1"]}
    await runtime.hub.flush_heartbeats()

    raw = db_bytes(settings.data_dir)
    # The scan does see what is stored in the clear (attributes), so absence means something.
    assert b"visible-workspace-name" in raw
    for name, value in m.items():
        assert value.encode() not in raw, f"{name} found in plaintext on disk"


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    runtime = build_runtime(settings)
    async with serve_in_process(runtime) as c:
        yield c, runtime


async def test_rotate_keys_keeps_everything_readable_with_only_the_new_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "rot"
    base: dict[str, Any] = {"data_dir": data_dir, "jwt_secret": SECRET, "sweep_interval": 3600.0}
    m = markers()
    async with serve(Settings(**base, encryption_keys=KEY1)) as (client, rt):
        alice = {"Authorization": f"Bearer {rt.auth.issue('alice')}"}
        sid = await write_secrets(client, alice, m)

    monkeypatch.setenv("SESSIONHUB_ENCRYPTION_KEYS", f"{KEY2},{KEY1}")
    code = await asyncio.to_thread(cli.main, ["rotate-keys", "--data-dir", str(data_dir)])
    assert code == 0

    # Every sealed column now opens with KEY2 alone.
    engine = create_engine(f"sqlite:///{data_dir / 'sessionhub.db'}")
    try:
        with engine.connect() as conn:
            sealed = [r[0] for r in conn.execute(text("SELECT content FROM chat_messages"))]
            sealed += [r[0] for r in conn.execute(text("SELECT metadata FROM chat_messages"))]
            sealed += [r[0] for r in conn.execute(text("SELECT metadata FROM sessions"))]
            sealed += [r[0] for r in conn.execute(text("SELECT data FROM events"))]
    finally:
        engine.dispose()
    assert len(sealed) == 5  # 1 session, 2 events, 1 message (content + metadata)
    only_new = Fernet(KEY2.encode())
    for value in sealed:
        assert value.startswith("fernet:")
        only_new.decrypt(value.removeprefix("fernet:").encode())  # raises if still KEY1's

    async with serve(Settings(**base, encryption_keys=KEY2)) as (client, rt):
        alice = {"Authorization": f"Bearer {rt.auth.issue('alice')}"}
        got = await read_back(client, alice, sid)
    assert got["record"]["session_metadata"] == {"s": m["meta2"]}
    assert got["messages"][0]["content"] == m["content"]
    assert got["messages"][0]["message_metadata"] == {"n": m["msgmeta"]}
    assert got["events"][0]["data"]["session"]["metadata"] == {"s": m["meta1"]}
