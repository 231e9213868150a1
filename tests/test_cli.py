"""The command line: migrate, token, genkey, rotate-keys, settings, and clean errors."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from sessionhub import cli
from sessionhub.core.principal import Principal
from sessionhub.settings import Settings
from sessionhub.store import open_store


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for var in list(os.environ):
        if var.startswith("SESSIONHUB_"):
            monkeypatch.delenv(var)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("12h", 43200), ("30d", 2592000), (" 1h ", 3600)],
)
def test_parse_ttl(text: str, seconds: int) -> None:
    assert cli.parse_ttl(text) == timedelta(seconds=seconds)


def test_a_bad_ttl_is_an_argument_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["token", "create", "--user", "u", "--ttl", "soon"])
    assert exc.value.code == 2 and "bad duration" in capsys.readouterr().err


def test_migrate_creates_the_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["migrate", "--data-dir", str(tmp_path / "d")]) == 0
    out = capsys.readouterr()
    assert "migrated sqlite+aiosqlite:///" in out.out and out.err == ""
    db = sqlite3.connect(tmp_path / "d" / "sessionhub.db")
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()
    assert {"sessions", "events", "alembic_version"} <= tables
    assert cli.main(["migrate", "--data-dir", str(tmp_path / "d")]) == 0  # idempotent


@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        (["migrate", "--database-url", "mysql://x"], {}, "unsupported database URL"),
        (["migrate", "--database-url", "postgresql+asyncpg://u@127.0.0.1:1/x"], {}, "Connect"),
        (["migrate"], {"SESSIONHUB_PORT": "eighty"}, "SESSIONHUB_PORT must be an integer"),
        (["serve", "--database-url", "mysql://x"], {}, "unsupported database URL"),
        (["serve", "--port", "0"], {"SESSIONHUB_KIND_TIMEOUTS": "{bad"}, "not valid JSON"),
        (["serve"], {"SESSIONHUB_KIND_TIMEOUTS": '{"generic": 5}'}, "must be a JSON object"),
        (["serve"], {"SESSIONHUB_API_KEYS": "nope"}, "bad API key"),
    ],
)
def test_configuration_errors_are_one_line_without_traceback(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    env: dict[str, str],
    fragment: str,
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("SESSIONHUB_DATA_DIR", str(tmp_path))
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_genkey_prints_a_fernet_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["genkey"]) == 0
    Fernet(capsys.readouterr().out.strip().encode())  # raises if not a valid key


def test_rotate_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "d"
    assert cli.main(["rotate-keys", "--data-dir", str(data)]) == 2
    assert "ENCRYPTION_KEYS" in capsys.readouterr().err

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    url = Settings(data_dir=data).resolved_database_url()

    async def seed() -> str:
        from sessionhub.broker.memory import MemoryBroker
        from sessionhub.hub import Hub
        from sessionhub.kinds.registry import default_registry

        hub = Hub(open_store(url, encryption_keys=[old]), MemoryBroker(), default_registry())
        await hub.start()
        try:
            s, _ = await hub.create(Principal("a"), "generic", metadata={"pin": "2468"})
            return s.id
        finally:
            await hub.close()

    sid = asyncio.run(seed())
    monkeypatch.setenv("SESSIONHUB_ENCRYPTION_KEYS", f"{new},{old}")
    assert cli.main(["rotate-keys", "--data-dir", str(data)]) == 0
    assert "re-encrypted 2 rows" in capsys.readouterr().out

    async def read() -> dict[str, object]:
        store = open_store(url, encryption_keys=[new])
        await store.start()
        try:
            s = await store.get(sid)
            assert s is not None
            return s.metadata
        finally:
            await store.close()

    assert asyncio.run(read()) == {"pin": "2468"}


def test_settings_from_env_and_overrides(tmp_path: Path) -> None:
    env = {
        "SESSIONHUB_PORT": "9001",
        "SESSIONHUB_HOST": "0.0.0.0",
        "SESSIONHUB_DATA_DIR": str(tmp_path),
        "SESSIONHUB_SWEEP_INTERVAL": "2.5",
        "SESSIONHUB_KIND_TIMEOUTS": '{"generic": {"heartbeat_timeout": 60}}',
        "SESSIONHUB_ENCRYPTION_KEYS": "a, b,",
        "OTHER": "ignored",
    }
    s = Settings.from_env(env, port="9002", log_level=None)
    assert s.port == 9002 and s.host == "0.0.0.0" and s.data_dir == tmp_path
    assert s.sweep_interval == 2.5
    assert s.timeout_overrides() == {"generic": {"heartbeat_timeout": 60}}
    assert s.encryption_key_list() == ["a", "b"]
    assert s.resolved_database_url() == f"sqlite+aiosqlite:///{tmp_path.resolve()}/sessionhub.db"
    assert s.resolved_public_url() == "http://127.0.0.1:9002"
    assert (
        Settings(public_url="https://hub.example/").resolved_public_url() == "https://hub.example"
    )
    assert Settings().public_key_pem() is None
    with pytest.raises(ValueError, match="SESSIONHUB_SWEEP_INTERVAL must be a number"):
        Settings.from_env({"SESSIONHUB_SWEEP_INTERVAL": "often"})


def test_passwords_are_redacted_from_printed_urls() -> None:
    assert cli._redact("postgresql+asyncpg://me:s3cret@db:5432/x") == (
        "postgresql+asyncpg://me:***@db:5432/x"
    )
    assert cli._redact("sqlite+aiosqlite:///data/x.db") == "sqlite+aiosqlite:///data/x.db"


def test_unexpected_errors_are_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(_: object) -> int:
        raise KeyError("bug")

    monkeypatch.setattr(cli, "cmd_genkey", boom)
    with pytest.raises(KeyError):
        cli.main(["genkey"])
