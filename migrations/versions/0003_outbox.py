"""The outbox: replies owed to users, kept until Telegram took them.

A /start's welcome (and every other reply to a user) is written in the same commit as the
subscription it answers and deleted once sent, so a crash with replies still queued leaves
them here, and the next start sends them (pushbot.bot.outbox).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 09:00:00.000000+00:00

Written by hand in the style of 0001/0002; tests/db/test_migrations.py checks that it matches
the models and downgrades, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("reply_to_message_id", sa.Integer(), nullable=True),
        sa.Column("message_thread_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )


def downgrade() -> None:
    # Replies still owed are dropped with the table: the old code has nowhere to keep them.
    op.drop_table("outbox")
