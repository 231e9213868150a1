"""A node imports only what its configuration uses: a server whose database is already at
the newest schema, with no NINA rig and no webhooks, never loads Alembic (and Mako), httpx
or the websockets client, which would otherwise sit in its memory for nothing. Signing with
a secret, it loads neither PyJWT nor cryptography (``sessionhub/hs256.py``; about 11 MB);
on SQLite, neither SQLAlchemy's asyncio extension nor aiosqlite nor greenlet (about 8 MB:
only ``SqliteStore.transaction()`` needs them)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from sessionhub.store import schema

MIGRATIONS = Path(schema.__file__).parent / "migrations"

UNUSED = (
    "alembic",
    "mako",
    "httpx",
    "websockets.asyncio.client",
    "rich",
    "jwt",
    "cryptography",
    "sqlalchemy.ext.asyncio",
    "aiosqlite",
    "greenlet",
)

PROBE = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from sessionhub.server.app import create_app
    from sessionhub.server.runtime import build_runtime
    from sessionhub.settings import Settings

    async def main() -> None:
        settings = Settings(data_dir=Path(sys.argv[1]), jwt_secret="x" * 40)
        runtime = build_runtime(settings)
        create_app(settings, runtime=runtime)
        await runtime.start()
        token = runtime.auth.issue("alice", ["admin"])
        assert runtime.auth.verify(token).sub == "alice"
        await runtime.hub.store.ping()
        await runtime.close()

    asyncio.run(main())
    print(json.dumps(sorted(m for m in sys.modules if m.startswith(tuple(sys.argv[2:])))))
    """
)


def test_the_head_revision_constant_is_alembics_head() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == schema.HEAD_REVISION


def test_a_node_at_the_head_loads_no_migration_tool_rig_client_or_http_client(
    tmp_path: Path,
) -> None:
    migrate_cmd = [sys.executable, "-m", "sessionhub.cli", "migrate", "--data-dir", str(tmp_path)]
    done = subprocess.run(migrate_cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    probe = [sys.executable, "-c", PROBE, str(tmp_path), *UNUSED]
    out = subprocess.run(probe, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_fresh_database_is_still_migrated_by_serve_in_a_child(tmp_path: Path) -> None:
    """``serve`` migrates in a forked child; a bad URL is still one line from the parent."""
    from sessionhub import cli
    from sessionhub.settings import Settings

    settings = Settings(data_dir=tmp_path, jwt_secret="x" * 40)
    cli._migrate_in_child(settings)
    assert (tmp_path / "sessionhub.db").exists()
    # The database is at the head now: opening it needs no migration.
    probe = [sys.executable, "-c", PROBE, str(tmp_path), "alembic"]
    out = subprocess.run(probe, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
