"""Migration 0002 on a database that has lived under 0001: the audience's history is
backfilled, pushes get their defaults, and the downgrade gives the old schema back with every
row kept (both backends)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import Engine, create_engine, inspect
from sqlalchemy.pool import NullPool

from pushbot.db.session import alembic_config

T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
PUSH_UUID = uuid.UUID("00000000-0000-0000-0000-0000000000aa")
OTHER_PUSH_UUID = uuid.UUID("00000000-0000-0000-0000-0000000000bb")

NEW_PUSH_COLUMNS = {
    "segment",
    "disable_notification",
    "protect_content",
    "scheduled_at",
    "edited_text",
    "edited_at",
}
NEW_NOTIFICATION_COLUMNS = {"edit_status", "edit_error", "edited_at"}

# The tables as 0001 made them (only the columns these rows need).
CHATS = sa.table(
    "chats",
    sa.column("id", sa.BigInteger()),
    sa.column("type", sa.String()),
    sa.column("subscribed", sa.Boolean()),
    sa.column("purged_at", sa.DateTime(timezone=True)),
    sa.column("purge_reason", sa.String()),
    sa.column("first_seen", sa.DateTime(timezone=True)),
    sa.column("last_seen", sa.DateTime(timezone=True)),
)
PUSHES = sa.table(
    "push_messages",
    sa.column("uuid", sa.Uuid()),
    sa.column("content_type", sa.String()),
    sa.column("source_chat_id", sa.BigInteger()),
    sa.column("source_message_id", sa.Integer()),
    sa.column("admin_id", sa.BigInteger()),
    sa.column("status", sa.String()),
    sa.column("audience_size", sa.Integer()),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("deleted", sa.Boolean()),
)
NOTIFICATIONS = sa.table(
    "push_notifications",
    sa.column("message_uuid", sa.Uuid()),
    sa.column("chat_id", sa.BigInteger()),
    sa.column("status", sa.String()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
EVENTS = sa.table(
    "chat_events",
    sa.column("chat_id", sa.BigInteger()),
    sa.column("kind", sa.String()),
    sa.column("reason", sa.String()),
    sa.column("at", sa.DateTime(timezone=True)),
)


def chat(chat_id: int, subscribed: bool, purged_at: datetime | None = None) -> dict[str, Any]:
    return {
        "id": chat_id,
        "type": "private",
        "subscribed": subscribed,
        "purged_at": purged_at,
        "purge_reason": "blocked" if purged_at else None,
        "first_seen": T0 + timedelta(days=chat_id),
        "last_seen": T0 + timedelta(days=chat_id, hours=5),
    }


def push(push_uuid: uuid.UUID, status: str) -> dict[str, Any]:
    return {
        "uuid": push_uuid,
        "content_type": "text",
        "source_chat_id": 1,
        "source_message_id": 1,
        "admin_id": 1,
        "status": status,
        "audience_size": 1,
        "created_at": T0,
        "deleted": False,
    }


@pytest.fixture
def engine_at_0001(empty_db_url: str) -> Iterator[Engine]:
    """A database under 0001 with chats of every kind, two pushes and their recipients."""
    command.upgrade(alembic_config(empty_db_url), "0001")
    engine = create_engine(empty_db_url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(
            CHATS.insert(),
            [
                chat(1, subscribed=True),  # in the audience
                chat(2, subscribed=False),  # sent /stop at a time nobody recorded
                chat(3, subscribed=True, purged_at=T0 + timedelta(days=10)),  # blocked the bot
                chat(4, subscribed=False, purged_at=T0 + timedelta(days=11)),
            ],
        )
        connection.execute(PUSHES.insert(), [push(PUSH_UUID, "done")])
        connection.execute(
            NOTIFICATIONS.insert(),
            [
                {"message_uuid": PUSH_UUID, "chat_id": n, "status": "sent", "created_at": T0}
                for n in (1, 3)
            ],
        )
    yield engine
    engine.dispose()


def columns(engine: Engine, table: str) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns(table)}


def events(engine: Engine) -> list[tuple[int, str, str | None, datetime]]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(EVENTS).order_by(EVENTS.c.chat_id, EVENTS.c.at, EVENTS.c.kind)
        )
        return [(r.chat_id, r.kind, r.reason, _utc(r.at)) for r in rows]


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def test_the_history_is_backfilled_from_the_chats_on_record(
    empty_db_url: str, engine_at_0001: Engine
) -> None:
    command.upgrade(alembic_config(empty_db_url), "0002")

    first_seen = {n: T0 + timedelta(days=n) for n in range(1, 5)}
    assert events(engine_at_0001) == [
        (1, "joined", None, first_seen[1]),
        (2, "joined", None, first_seen[2]),
        # When it stopped is unknown: its last contact stands in, so the events add up.
        (
            2,
            "left",
            "time unknown (before the history began): last seen",
            first_seen[2] + timedelta(hours=5),
        ),
        (3, "joined", None, first_seen[3]),
        (3, "purged", "blocked", T0 + timedelta(days=10)),
        (4, "joined", None, first_seen[4]),
        (4, "purged", "blocked", T0 + timedelta(days=11)),
    ]


def test_the_backfilled_history_adds_up_to_todays_audience(
    empty_db_url: str, engine_at_0001: Engine
) -> None:
    command.upgrade(alembic_config(empty_db_url), "0002")

    deltas = {"joined": 1, "returned": 1, "left": -1, "purged": -1}
    in_audience = 1  # chat 1
    assert sum(deltas[kind] for _, kind, _, _ in events(engine_at_0001)) == in_audience


def test_existing_pushes_get_the_defaults_of_the_new_columns(
    empty_db_url: str, engine_at_0001: Engine
) -> None:
    command.upgrade(alembic_config(empty_db_url), "0002")

    with engine_at_0001.connect() as connection:
        stored = connection.execute(
            sa.text(
                "SELECT segment, disable_notification, protect_content, scheduled_at,"
                " edited_text, edited_at FROM push_messages"
            )
        ).one()
        copies = connection.execute(
            sa.text("SELECT edit_status, edit_error, edited_at FROM push_notifications")
        ).all()
    assert tuple(stored) == ("all", False, False, None, None, None)
    assert [tuple(copy) for copy in copies] == [(None, None, None)] * 2


def test_the_downgrade_gives_0001_back_with_every_row(
    empty_db_url: str, engine_at_0001: Engine
) -> None:
    config = alembic_config(empty_db_url)
    command.upgrade(config, "0002")
    with engine_at_0001.begin() as connection:
        connection.execute(PUSHES.insert(), [push(OTHER_PUSH_UUID, "scheduled")])
        connection.execute(
            PUSHES.update().where(PUSHES.c.uuid == PUSH_UUID).values(status="editing")
        )

    command.downgrade(config, "0001")

    assert "chat_events" not in inspect(engine_at_0001).get_table_names()
    assert columns(engine_at_0001, "push_messages").isdisjoint(NEW_PUSH_COLUMNS)
    assert columns(engine_at_0001, "push_notifications").isdisjoint(NEW_NOTIFICATION_COLUMNS)
    with engine_at_0001.connect() as connection:
        statuses = dict(connection.execute(sa.select(PUSHES.c.uuid, PUSHES.c.status)).all())
        recipients = connection.execute(
            sa.select(NOTIFICATIONS.c.chat_id).order_by(NOTIFICATIONS.c.chat_id)
        ).scalars()
        chats = connection.execute(sa.select(sa.func.count()).select_from(CHATS)).scalar_one()
        # Statuses the old code does not know become the nearest it does.
        assert statuses == {PUSH_UUID: "done", OTHER_PUSH_UUID: "cancelled"}
        # Rebuilding push_messages (SQLite's way to drop columns) cascaded into nothing.
        assert list(recipients) == [1, 3]
        assert chats == 4

    command.upgrade(config, "head")
    assert columns(engine_at_0001, "push_messages") >= NEW_PUSH_COLUMNS
    assert len(events(engine_at_0001)) == 7
