"""Table definitions shared by the SQL store and the Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

#: The newest migration (``migrations/versions``); a test pins it to Alembic's head. A
#: database already here is opened without importing Alembic at all (about 11 MB of memory
#: that a running server would otherwise carry for nothing).
HEAD_REVISION = "0003"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for a long-lived log.
SeqType = BigInteger().with_variant(Integer(), "sqlite")

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("owner", String(200), nullable=False),
    Column("state", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("last_activity_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("ended_at", UTCDateTime),
    Column("end_reason", String(64)),
    Column("end_detail", Text),
    Column("attributes", Text, nullable=False),
    Column("metadata", Text, nullable=False),
    Column("counters", Text, nullable=False),
    Column("idempotency_key", String(300), unique=True),
    # What the request that used ``idempotency_key`` looked like (a hash), so a replay of the
    # key with another request is told apart (0003).
    Column("idempotency_fingerprint", String(128)),
    Index("ix_sessions_kind_state", "kind", "state"),
    Index("ix_sessions_owner", "owner"),
    Index("ix_sessions_created", "created_at", "id"),
    Index("ix_sessions_activity", "last_activity_at"),
)

events = Table(
    "events",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("session_id", String(64), nullable=False),
    Column("type", String(64), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("owner", String(200), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("version", Integer, nullable=False),
    Column("data", Text, nullable=False),
    Column("published", Boolean, nullable=False, default=False),
    Index("ix_events_session", "session_id", "version"),
    Index("ix_events_unpublished", "published", "seq"),
    # AUTOINCREMENT (0003): without it SQLite hands out max(seq) + 1, so deleting the events
    # at the top of the log would let new events reuse their seqs, and a consumer tailing
    # by seq would skip them. (PostgreSQL's sequence never goes back.)
    sqlite_autoincrement=True,
)

# Notifications produced by kinds (see ``Kind.notifications``), per recipient user.
notifications = Table(
    "notifications",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("user_id", String(200), nullable=False),
    Column("event", String(100), nullable=False),
    Column("session_id", String(64)),
    Column("data", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("read_at", UTCDateTime),
    Index("ix_notifications_user", "user_id", "seq"),
)

# Chat messages of a session (workspaces), appended and read in pages. ``content`` is sealed.
chat_messages = Table(
    "chat_messages",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("session_id", String(64), nullable=False),
    Column("role", String(32), nullable=False),
    Column("content", Text, nullable=False),
    Column("metadata", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_chat_session", "session_id", "seq"),
)

# Webhook deliveries: an outbox of signed POSTs, retried with backoff until delivered.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("url", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime),
    Column("failed_at", UTCDateTime),
    Column("last_error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_webhooks_due", "delivered_at", "failed_at", "next_attempt_at"),
)

# Where each outbox-driven consumer has got to in the event log (a seq), moved by
# compare-and-set in the transaction that stores the consumer's effects.
consumer_positions = Table(
    "consumer_positions",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Named leases (leadership among nodes). ``token`` rises every time the holder changes, so
# work stamped with an older token can be refused (fencing). A released lease keeps its row
# (holder ``""``), so the next token is still greater.
leases = Table(
    "leases",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("token", BigInteger, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

# Raw input as upstream connectors received it, per source, trimmed to a bound.
raw_events = Table(
    "raw_events",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("source", String(200), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("payload", Text, nullable=False),
    Index("ix_raw_events_source", "source", "seq"),
    # Readers tail by seq: a trim down to nothing must not let seqs start over.
    sqlite_autoincrement=True,
)
