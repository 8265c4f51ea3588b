"""Migration 0003 on a database that has lived under 0002: the outbox table appears, the rest
is untouched, and the downgrade removes the outbox alone (both backends)."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from sqlalchemy import create_engine, inspect
from sqlalchemy.pool import NullPool

from pushbot.db.session import alembic_config

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
CHATS = sa.table(
    "chats",
    sa.column("id", sa.BigInteger()),
    sa.column("type", sa.String()),
    sa.column("subscribed", sa.Boolean()),
    sa.column("first_seen", sa.DateTime(timezone=True)),
    sa.column("last_seen", sa.DateTime(timezone=True)),
)
OUTBOX = sa.table(
    "outbox",
    sa.column("id", sa.BigInteger()),
    sa.column("chat_id", sa.BigInteger()),
    sa.column("text", sa.Text()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


def test_0003_adds_the_outbox_and_its_downgrade_removes_only_that(empty_db_url: str) -> None:
    config = alembic_config(empty_db_url)
    command.upgrade(config, "0002")
    engine = create_engine(empty_db_url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(
                CHATS.insert().values(
                    id=42, type="private", subscribed=True, first_seen=T0, last_seen=T0
                )
            )
        assert "outbox" not in inspect(engine).get_table_names()

        command.upgrade(config, "0003")
        assert "outbox" in inspect(engine).get_table_names()
        with engine.begin() as connection:
            connection.execute(
                OUTBOX.insert().values(chat_id=42, text="👋 Welcome!", created_at=T0)
            )
            connection.execute(OUTBOX.insert().values(chat_id=42, text="second", created_at=T0))
            ids = connection.execute(sa.select(OUTBOX.c.id).order_by(OUTBOX.c.id)).scalars()
            assert list(ids) == [1, 2]

        command.downgrade(config, "0002")
        assert "outbox" not in inspect(engine).get_table_names()
        with engine.begin() as connection:
            assert connection.execute(sa.select(CHATS.c.id)).scalars().all() == [42]
        command.upgrade(config, "head")
        assert "outbox" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
