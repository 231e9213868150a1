"""The ``sessionhub`` command line: parses arguments and calls the library."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from . import __version__
from .auth import DEFAULT_TTL, LEEWAY, MIN_API_KEY_CHARS, SECRET_FILE, Authenticator, load_secret
from .core.errors import SessionHubError
from .settings import ENV_PREFIX, Settings

# What `sessionhub --help` says: what the tool is for, then how to start (argparse would
# otherwise show a module docstring written for programmers).
DESCRIPTION = """\
sessionhub keeps sessions of any kind (remote access, screen shares, workspaces, ...)
through their lifecycle, stores them durably and pushes every change live to browsers
and programs. `sessionhub serve` starts the server and prints the dashboard's sign-in
link; the other commands prepare its database and issue its tokens."""

EPILOG = f"""\
examples:
  sessionhub serve                               # http://127.0.0.1:8000, data in ./data
  sessionhub token create --user alice           # a user's token (sees only her sessions)
  sessionhub token create --user root --role admin --data-dir /srv/sessionhub/data

tokens:
  HS256 JWTs signed with the secret the server keeps in <data dir>/{SECRET_FILE}
  (created on its first start). A token lives {DEFAULT_TTL.days} days unless --ttl says otherwise;
  the server still accepts it for {LEEWAY:.0f} s after it expires (clock skew between machines).
  API keys (SESSIONHUB_API_KEYS=name:key[:role+role],...) need {MIN_API_KEY_CHARS}+ characters.

Every setting is also an environment variable, SESSIONHUB_<NAME> (see the README)."""


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        data_dir=Path(args.data_dir) if getattr(args, "data_dir", None) else None,
        database_url=getattr(args, "database_url", None),
        broker_url=getattr(args, "broker_url", None),
        log_level=getattr(args, "log_level", None),
        tls_cert=getattr(args, "tls_cert", None),
        tls_key=getattr(args, "tls_key", None),
    )


def parse_ttl(text: str) -> timedelta:
    """``90s``, ``15m``, ``12h``, ``30d`` or plain seconds; more than zero."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad duration {text!r}: use e.g. 90s, 15m, 12h, 30d")
    n, unit = int(m.group(1)), m.group(2) or "s"
    if n == 0:
        # A token that expires as it is made is never what was meant (and "0" does not mean
        # "never expires" here: tokens always expire).
        raise argparse.ArgumentTypeError(
            f"bad duration {text!r}: a token must live longer than 0 s, e.g. 12h or 30d"
        )
    return timedelta(seconds=n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .server.app import create_app
    from .server.observe import flushing_signals, setup_logging
    from .server.runtime import build_runtime
    from .server.serving import uvicorn_config

    settings = _settings(args)
    setup_logging(settings.log_level)
    # Connect and migrate once before serving, so a bad database URL or an unreachable
    # server is one clear line here instead of a traceback from the ASGI lifespan. In a
    # child process: Alembic then never enters the server's memory (the server itself
    # finds the database at the head and skips it).
    _migrate_in_child(settings)
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
    # Once the node has started, what was imported and built lives as long as the process:
    # the lifespan moves it out of the cyclic collector's sight (``app.state.freeze_gc``).
    # A full collection walked all of it (FastAPI, pydantic, SQLAlchemy: hundreds of
    # thousands of objects), pausing every request for 50-100 ms now and then: the p99 of
    # PATCH at half load went from about 106 ms to 16-24 ms without it. Not in create_app
    # itself: a process that builds many apps (the tests) would keep every one.
    app.state.freeze_gc = True
    with flushing_signals():  # the log's last lines, when uvicorn re-raises SIGTERM
        uvicorn.Server(uvicorn_config(app, settings)).run()
    return 0


async def _check_store(settings: Settings) -> None:
    """Open the store (applying migrations) and close it again."""
    from .backends import migrate

    await migrate(settings)


def _migrate_in_child(settings: Settings) -> None:
    """``_check_store`` in a forked child; its exception (a setup error) is raised here."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if "fork" not in multiprocessing.get_all_start_methods():  # pragma: no cover - not Linux
        asyncio.run(_check_store(settings))
        return
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        pool.submit(_check_store_sync, settings).result()


def _check_store_sync(settings: Settings) -> None:
    asyncio.run(_check_store(settings))


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    asyncio.run(_check_store(settings))
    print(f"migrated {_redact(settings.resolved_database_url())} to the newest schema")
    return 0


def cmd_rotate_keys(args: argparse.Namespace) -> int:
    from .backends import rotate_keys

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
        secret = _server_secret(args, settings)
    auth = Authenticator(secret=secret)
    print(auth.issue(args.user, args.role or [], ttl=args.ttl))
    return 0


def _server_secret(args: argparse.Namespace, settings: Settings) -> str:
    """The secret of the server whose data directory this is. Never created here: a token
    signed with a fresh secret would be refused by the server, which is worse than an error."""
    secret = load_secret(settings.data_dir)
    if secret is not None:
        return secret
    path = (settings.data_dir / SECRET_FILE).resolve()
    if args.data_dir or ENV_PREFIX + "DATA_DIR" in os.environ:
        raise ConfigError(
            f"no signing secret at {path}: is this the server's data directory? The server "
            "creates it on its first start (sessionhub serve --data-dir DIR)"
        )
    raise ConfigError(
        f"no signing secret at {path}: run this in the directory the server runs in, or pass "
        "--data-dir (or set SESSIONHUB_DATA_DIR) to the server's data directory, "
        "or set SESSIONHUB_JWT_SECRET to the server's secret"
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo

    return demo(list(args.rest))


def cmd_nina_sim(args: argparse.Namespace) -> int:
    from .connectors.nina.simulator import main as simulate

    return simulate(list(args.rest))


def cmd_genkey(_: argparse.Namespace) -> int:
    from cryptography.fernet import Fernet

    print(Fernet.generate_key().decode())
    return 0


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sessionhub",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"sessionhub {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    s.add_argument("--tls-cert", metavar="FILE", help="PEM certificate: serve https:// and wss://")
    s.add_argument("--tls-key", metavar="FILE", help="the certificate's PEM private key")
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

    # Commands with options of their own (``sessionhub demo --help``): the rest passes through.
    for name, func, help_text, description in (
        (
            "demo",
            cmd_demo,
            "run a server with something moving in every kind, and print its sign-in link",
            "A server on a temporary SQLite with a simulated NINA rig and scripted users.",
        ),
        (
            "nina-sim",
            cmd_nina_sim,
            "serve a simulated NINA rig (Advanced API) on loopback",
            "Plays a night of a NINA rig: event and image history, guider info and the live "
            "socket.",
        ),
    ):
        passthrough = sub.add_parser(
            name,
            help=help_text,
            add_help=False,
            description=f"{description} Options: sessionhub {name} --help.",
        )
        passthrough.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        passthrough.set_defaults(func=func)

    t = sub.add_parser("token", help="issue tokens")
    tsub = t.add_subparsers(dest="token_command", required=True)
    tc = tsub.add_parser(
        "create",
        help="print a signed token",
        description="Print a token signed with the server's secret. Run it where the server "
        "runs, or point it at the server's data directory (--data-dir, SESSIONHUB_DATA_DIR); "
        "it never creates a secret.",
        epilog=f"The server accepts a token until its expiry plus {LEEWAY:.0f} s of leeway.",
    )
    common(tc)
    tc.add_argument("--user", required=True, help="the token's subject")
    tc.add_argument("--role", action="append", help="a role (repeatable), e.g. --role admin")
    tc.add_argument(
        "--ttl",
        type=parse_ttl,
        default=DEFAULT_TTL,
        help=f"lifetime, e.g. 90s, 15m, 12h or 30d (default {DEFAULT_TTL.days}d; must be > 0)",
    )
    tc.set_defaults(func=cmd_token)
    return p


class ConfigError(Exception):
    """A problem with the configuration or the environment, reported as one line."""


def _is_setup_error(exc: BaseException) -> bool:
    # Bad settings (ValueError), an unreachable database (OSError, or the store's own
    # Unavailable) or a database error raised while connecting or migrating: the user needs
    # a message, not a traceback.
    if isinstance(exc, ValueError | OSError | ConfigError | SessionHubError):
        return True
    return type(exc).__module__.startswith(("sqlalchemy", "asyncpg", "sqlite3", "alembic"))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["nina-sim"]:
        return cmd_nina_sim(argparse.Namespace(rest=argv[1:]))  # its own options and --help
    if argv[:1] == ["demo"]:
        return cmd_demo(argparse.Namespace(rest=argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except Exception as exc:
        if not _is_setup_error(exc):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # Our own errors are sentences already; others get their type name as context.
        what = "" if isinstance(exc, ConfigError) else f"{type(exc).__name__}: "
        print(f"sessionhub {args.command}: error: {what}{message}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
