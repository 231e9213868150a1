"""The command line: migrate, token, genkey, rotate-keys, settings, and clean errors."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterator
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


@pytest.fixture(autouse=True)
def root_logging() -> Iterator[None]:
    """``serve`` sets up logging before it fails on a bad setting: its handler writes to this
    test's captured stderr, which is closed once the test ends, so later tests in the same
    process would print logging errors. Put the root logger back as it was."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


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


# -- a first hour without snags ----------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from sessionhub import __version__

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"sessionhub {__version__}"


def test_top_level_help_says_what_the_tool_is_for(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "keeps sessions of any kind" in out and "sessionhub serve" in out
    assert "Parses arguments" not in out  # not a module docstring written for programmers
    # What a newcomer needs to know about tokens and keys.
    assert "30 days" in out and "30 s after it expires" in out and "16+ characters" in out


def test_token_help_documents_the_lifetime_and_leeway(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["token", "create", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "default 30d" in out and "30 s of leeway" in out and "never creates a secret" in out


def test_a_zero_ttl_is_an_argument_error(capsys: pytest.CaptureFixture[str]) -> None:
    for ttl in ("0", "0s", "0d"):
        with pytest.raises(SystemExit) as exc:
            cli.main(["token", "create", "--user", "u", "--ttl", ttl])
        assert exc.value.code == 2 and "longer than 0 s" in capsys.readouterr().err


def _server_data_dir(tmp_path: Path) -> tuple[Path, str]:
    """A data directory as the server leaves it on its first start, and that server's secret."""
    from sessionhub.server.runtime import build_runtime

    data = tmp_path / "server-data"
    runtime = build_runtime(Settings(data_dir=data, sweep_interval=3600))
    assert runtime.secret_created
    return data, (data / "jwt-secret").read_text().strip()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_token_create_from_another_directory_uses_the_servers_data_dir(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    import jwt

    data, secret = _server_data_dir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    argv = ["token", "create", "--user", "alice"]
    if how == "flag":
        argv += ["--data-dir", str(data)]
    else:
        monkeypatch.setenv("SESSIONHUB_DATA_DIR", str(data))
    assert cli.main(argv) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), secret, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["exp"] - claims["iat"] == 30 * 86400  # the documented default
    assert list(elsewhere.iterdir()) == []  # nothing made where it ran


def test_token_create_without_the_servers_secret_is_a_clear_error_and_creates_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["token", "create", "--user", "alice"]) == 1
    err = capsys.readouterr().err
    assert "no signing secret" in err and "--data-dir" in err and "SESSIONHUB_DATA_DIR" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()  # the old behaviour made ./data/jwt-secret here

    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["token", "create", "--user", "alice", "--data-dir", str(empty)]) == 1
    assert "server's data directory" in capsys.readouterr().err
    assert list(empty.iterdir()) == []


def test_token_create_with_a_configured_secret_needs_no_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import jwt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SESSIONHUB_JWT_SECRET", "configured-secret-0123456789abcdef")
    assert cli.main(["token", "create", "--user", "svc", "--ttl", "90s"]) == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, "configured-secret-0123456789abcdef", algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 90 and list(tmp_path.iterdir()) == []


def test_the_head_deadline_is_a_setting(tmp_path: Path) -> None:
    from sessionhub.server.app import create_app
    from sessionhub.server.serving import uvicorn_config

    s = Settings.from_env({"SESSIONHUB_HTTP_HEAD_TIMEOUT": "2.5"}, data_dir=tmp_path)
    assert s.http_head_timeout == 2.5
    s.jwt_secret = "x" * 40
    config = uvicorn_config(create_app(s), s)
    assert getattr(config.http, "deadline", None) == 2.5
