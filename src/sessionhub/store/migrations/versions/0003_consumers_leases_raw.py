"""Consumer positions, leases, raw upstream input, idempotency fingerprints; on SQLite the
event log's seq becomes AUTOINCREMENT.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from sessionhub.store.schema import SeqType, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: Consumers that exist when this migration runs. They start at the end of the log, so an
#: upgraded database does not feed its whole history through them again.
CONSUMERS = ("notifications", "workspaces")


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "consumer_positions",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("token", sa.BigInteger, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "raw_events",
        sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_raw_events_source", "raw_events", ["source", "seq"])
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("idempotency_fingerprint", sa.String(128)))
    if bind.dialect.name == "sqlite":
        # Without AUTOINCREMENT SQLite hands out max(seq) + 1: deleting the events at the top
        # of the log would make new events reuse those seqs, and a consumer tailing by seq
        # would skip them. The table is rebuilt (rows, seqs and indexes copied); from here
        # on sqlite_sequence remembers the highest seq ever used.
        with op.batch_alter_table(
            "events", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass
    last = bind.execute(sa.text("SELECT COALESCE(MAX(seq), 0) FROM events")).scalar_one()
    positions = sa.table(
        "consumer_positions",
        sa.column("name", sa.String),
        sa.column("position", sa.BigInteger),
        sa.column("updated_at", UTCDateTime),
    )
    now = datetime.now(UTC)
    op.bulk_insert(
        positions, [{"name": n, "position": int(last), "updated_at": now} for n in CONSUMERS]
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        with op.batch_alter_table(
            "events", recreate="always", table_kwargs={"sqlite_autoincrement": False}
        ):
            pass
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("idempotency_fingerprint")
    op.drop_table("raw_events")
    op.drop_table("leases")
    op.drop_table("consumer_positions")
