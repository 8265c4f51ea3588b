"""Issue 11's schema: the audience's history, and what a push needs to be scheduled, aimed
at a segment, sent quietly or protected, and edited.

- chat_events (new): one row whenever a chat enters or leaves the audience, backfilled from
  the chats already on record;
- push_messages: segment, disable_notification, protect_content, scheduled_at, edited_text,
  edited_at (the statuses `scheduled` and `editing` need no schema: status is a string);
- push_notifications: edit_status, edit_error, edited_at (per copy, like the retraction).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 09:00:00.000000+00:00

Written by hand in the style of 0001; tests/db/test_migrations.py checks that it matches the
models, that the backfill is right, and that it downgrades, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The history the old schema allows: when each chat was first seen, when it was purged.
# When an unsubscribed chat sent /stop was never stored; its last contact stands in for it,
# so that the events add up to today's audience (the /stats chart counts back from it).
BACKFILLED_STOP_REASON = "time unknown (before the history began): last seen"

_chats = sa.table(
    "chats",
    sa.column("id", sa.BigInteger()),
    sa.column("subscribed", sa.Boolean()),
    sa.column("purged_at", sa.DateTime(timezone=True)),
    sa.column("purge_reason", sa.String()),
    sa.column("first_seen", sa.DateTime(timezone=True)),
    sa.column("last_seen", sa.DateTime(timezone=True)),
)
_pushes = sa.table("push_messages", sa.column("status", sa.String()))
_events = sa.table(
    "chat_events",
    sa.column("chat_id", sa.BigInteger()),
    sa.column("kind", sa.String()),
    sa.column("reason", sa.String()),
    sa.column("at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    op.create_table(
        "chat_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("from_chat_id", sa.BigInteger(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_events")),
    )
    op.create_index("ix_chat_events_at", "chat_events", ["at"])
    _backfill_chat_events()

    with op.batch_alter_table("push_messages") as batch:
        batch.add_column(
            sa.Column("segment", sa.String(length=64), server_default="all", nullable=False)
        )
        batch.add_column(
            sa.Column(
                "disable_notification", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
        batch.add_column(
            sa.Column("protect_content", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("edited_text", sa.Text(), nullable=True))
        batch.add_column(sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("push_notifications") as batch:
        batch.add_column(sa.Column("edit_status", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("edit_error", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True))


def _backfill_chat_events() -> None:
    columns = ["chat_id", "kind", "reason", "at"]
    joined = sa.select(_chats.c.id, sa.literal("joined"), sa.null(), _chats.c.first_seen)
    purged = sa.select(
        _chats.c.id, sa.literal("purged"), _chats.c.purge_reason, _chats.c.purged_at
    ).where(_chats.c.purged_at.is_not(None))
    stopped = sa.select(
        _chats.c.id, sa.literal("left"), sa.literal(BACKFILLED_STOP_REASON), _chats.c.last_seen
    ).where(sa.not_(_chats.c.subscribed), _chats.c.purged_at.is_(None))
    for source in (joined, purged, stopped):
        op.execute(_events.insert().from_select(columns, source))


# What the old code can live with: a scheduled push was never sent (cancelled), an edit in
# progress is abandoned on copies that were all delivered (done).
DOWNGRADED_STATUSES = {"scheduled": "cancelled", "editing": "done"}


def downgrade() -> None:
    for new, old in DOWNGRADED_STATUSES.items():
        op.execute(_pushes.update().where(_pushes.c.status == new).values(status=old))

    with op.batch_alter_table("push_notifications") as batch:
        batch.drop_column("edited_at")
        batch.drop_column("edit_error")
        batch.drop_column("edit_status")

    with op.batch_alter_table("push_messages") as batch:
        batch.drop_column("edited_at")
        batch.drop_column("edited_text")
        batch.drop_column("scheduled_at")
        batch.drop_column("protect_content")
        batch.drop_column("disable_notification")
        batch.drop_column("segment")

    op.drop_index("ix_chat_events_at", table_name="chat_events")
    op.drop_table("chat_events")
