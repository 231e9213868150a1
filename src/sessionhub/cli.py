"""``sessionhub``: serve, migrate, token. Parses arguments and calls the library."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from .auth import Authenticator, load_or_create_secret
from .settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        data_dir=Path(args.data_dir) if getattr(args, "data_dir", None) else None,
        database_url=getattr(args, "database_url", None),
        broker_url=getattr(args, "broker_url", None),
        log_level=getattr(args, "log_level", None),
    )


def parse_ttl(text: str) -> timedelta:
    """``90s``, ``15m``, ``12h``, ``30d`` or plain seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad duration {text!r}: use e.g. 90s, 15m, 12h, 30d")
    n, unit = int(m.group(1)), m.group(2) or "s"
    return timedelta(seconds=n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .server.app import create_app
    from .server.observe import setup_logging
    from .server.runtime import build_runtime
    from .server.serving import uvicorn_config

    settings = _settings(args)
    setup_logging(settings.log_level)
    # Connect and migrate once before serving, so a bad database URL or an unreachable
    # server is one clear line here instead of a traceback from the ASGI lifespan.
    asyncio.run(_check_store(settings))
    runtime = build_runtime(settings)
    app = create_app(settings, runtime=runtime)
    url = settings.resolved_public_url()
    print(f"sessionhub listening on {url}  (API docs: {url}/docs)", flush=True)
    print(
        f"database: {_redact(settings.resolved_database_url())}   broker: {settings.broker_url}",
        flush=True,
    )
    if not settings.jwt_secret and not settings.jwt_public_key:
        token = runtime.auth.issue("admin", ["admin"], ttl=timedelta(hours=24))
        what = "created a signing secret in" if runtime.secret_created else "signing secret from"
        print(f"{what} {settings.data_dir / 'jwt-secret'}", flush=True)
        print(f"admin sign-in link (valid 24 h): {url}/?token={token}", flush=True)
        print(f"admin token: {token}", flush=True)
    uvicorn.Server(uvicorn_config(app, settings)).run()
    return 0


async def _check_store(settings: Settings) -> None:
    """Open the store (applying migrations) and close it again."""
    from .hub import migrate

    await migrate(settings)


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    asyncio.run(_check_store(settings))
    print(f"migrated {_redact(settings.resolved_database_url())} to the newest schema")
    return 0


def cmd_rotate_keys(args: argparse.Namespace) -> int:
    from .hub import rotate_keys

    settings = _settings(args)
    if not settings.encryption_key_list():
        print("no SESSIONHUB_ENCRYPTION_KEYS configured", file=sys.stderr)
        return 2

    n = asyncio.run(rotate_keys(settings))
    print(f"re-encrypted {n} rows with the newest key; older keys may now be removed")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    settings = _settings(args)
    secret = settings.jwt_secret
    if not secret:
        if settings.jwt_public_key:
            print(
                "this server verifies RS256 tokens; issue them where the private key is",
                file=sys.stderr,
            )
            return 2
        secret, _ = load_or_create_secret(settings.data_dir)
    auth = Authenticator(secret=secret)
    print(auth.issue(args.user, args.role or [], ttl=args.ttl))
    return 0


def cmd_genkey(_: argparse.Namespace) -> int:
    from cryptography.fernet import Fernet

    print(Fernet.generate_key().decode())
    return 0


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sessionhub", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--data-dir", help="data directory (env SESSIONHUB_DATA_DIR, default ./data)"
        )
        sp.add_argument(
            "--database-url", help="sqlite+aiosqlite:///... or postgresql+asyncpg://..."
        )

    s = sub.add_parser("serve", help="run the server")
    common(s)
    s.add_argument("--host", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default 8000)")
    s.add_argument("--broker-url", help="memory:// (default) or redis://...")
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    s.set_defaults(func=cmd_serve)

    m = sub.add_parser("migrate", help="apply database migrations and exit")
    common(m)
    m.set_defaults(func=cmd_migrate)

    r = sub.add_parser(
        "rotate-keys", help="re-encrypt stored metadata with the newest encryption key"
    )
    common(r)
    r.set_defaults(func=cmd_rotate_keys)

    g = sub.add_parser("genkey", help="print a new encryption key for SESSIONHUB_ENCRYPTION_KEYS")
    g.set_defaults(func=cmd_genkey)

    t = sub.add_parser("token", help="issue tokens")
    tsub = t.add_subparsers(dest="token_command", required=True)
    tc = tsub.add_parser("create", help="print a signed token")
    common(tc)
    tc.add_argument("--user", required=True, help="the token's subject")
    tc.add_argument("--role", action="append", help="a role (repeatable), e.g. --role admin")
    tc.add_argument(
        "--ttl", type=parse_ttl, default=timedelta(days=30), help="lifetime, e.g. 12h or 30d"
    )
    tc.set_defaults(func=cmd_token)
    return p


class ConfigError(Exception):
    """A problem with the configuration or the environment, reported as one line."""


def _is_setup_error(exc: BaseException) -> bool:
    # Bad settings (ValueError), an unreachable database (OSError) or a database error
    # raised while connecting or migrating: the user needs a message, not a traceback.
    return isinstance(exc, ValueError | OSError | ConfigError) or type(exc).__module__.startswith(
        ("sqlalchemy", "asyncpg", "sqlite3", "alembic")
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except Exception as exc:
        if not _is_setup_error(exc):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"sessionhub {args.command}: error: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
