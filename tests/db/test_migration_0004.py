"""Migration 0004 on a database that has lived under 0003: an /edit's formatting moves out of
the JSON in `edited_text` into `edited_entities`, and the downgrade joins them again (both
backends)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from pushbot.db.session import alembic_config

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
BOLD = {"type": "bold", "offset": 0, "length": 5}
PUSHES = sa.table(
    "push_messages",
    sa.column("uuid", sa.Uuid()),
    sa.column("text", sa.Text()),
    sa.column("content_type", sa.String()),
    sa.column("source_chat_id", sa.BigInteger()),
    sa.column("source_message_id", sa.Integer()),
    sa.column("admin_id", sa.BigInteger()),
    sa.column("status", sa.String()),
    sa.column("audience_size", sa.Integer()),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("deleted", sa.Boolean()),
    sa.column("edited_text", sa.Text()),
)
EDITED = sa.table(
    "push_messages",
    sa.column("uuid", sa.Uuid()),
    sa.column("edited_text", sa.Text()),
    sa.column("edited_entities", sa.JSON()),
)


def a_push(edited_text: str | None) -> dict[str, object]:
    return {
        "uuid": uuid.uuid4(),
        "text": "Helo",
        "content_type": "text",
        "source_chat_id": 1,
        "source_message_id": 2,
        "admin_id": 1,
        "status": "done",
        "audience_size": 3,
        "created_at": T0,
        "deleted": False,
        "edited_text": edited_text,
    }


def test_0004_splits_the_formatting_from_the_text_and_back(empty_db_url: str) -> None:
    config = alembic_config(empty_db_url)
    command.upgrade(config, "0003")
    formatted = a_push(json.dumps({"text": "Hello world", "entities": [BOLD]}))
    plain = a_push(json.dumps({"text": "Hi", "entities": []}))
    never_edited = a_push(None)
    engine = create_engine(empty_db_url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(PUSHES.insert(), [formatted, plain, never_edited])

        command.upgrade(config, "0004")
        with engine.begin() as connection:
            rows = {
                row.uuid: (row.edited_text, row.edited_entities)
                for row in connection.execute(sa.select(EDITED))
            }
        assert rows == {
            formatted["uuid"]: ("Hello world", [BOLD]),
            plain["uuid"]: ("Hi", None),
            never_edited["uuid"]: (None, None),
        }

        command.downgrade(config, "0003")
        with engine.begin() as connection:
            joined = {
                row.uuid: row.edited_text
                for row in connection.execute(sa.select(PUSHES.c.uuid, PUSHES.c.edited_text))
            }
        assert json.loads(joined[formatted["uuid"]]) == {"text": "Hello world", "entities": [BOLD]}
        assert json.loads(joined[plain["uuid"]]) == {"text": "Hi", "entities": []}
        assert joined[never_edited["uuid"]] is None
    finally:
        engine.dispose()
