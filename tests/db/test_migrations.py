"""The migrations build the schema of the models, on both backends."""

from __future__ import annotations

import logging

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from pushbot.db.models import Base
from pushbot.db.session import alembic_config, upgrade_database

EXPECTED_TABLES = {
    "alembic_version",
    "chats",
    "chat_events",
    "push_messages",
    "push_notifications",
    "outbox",
}


def test_upgrade_builds_every_table_on_an_empty_database(empty_db_url: str) -> None:
    upgrade_database(empty_db_url)

    engine = create_engine(empty_db_url)
    try:
        assert set(inspect(engine).get_table_names()) == EXPECTED_TABLES
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    head = ScriptDirectory.from_config(alembic_config(empty_db_url)).get_current_head()
    assert current == head


def test_models_and_migrated_schema_do_not_differ(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_upgrade_is_a_no_op_on_an_up_to_date_database(db_url: str) -> None:
    upgrade_database(db_url)
    upgrade_database(db_url)

    engine = create_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) == EXPECTED_TABLES
    finally:
        engine.dispose()


def test_downgrade_to_base_removes_every_table(db_url: str) -> None:
    command.downgrade(alembic_config(db_url), "base")

    engine = create_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_leaves_the_application_logging_alone(empty_db_url: str) -> None:
    root = logging.getLogger()
    handlers_before = list(root.handlers)
    level_before = root.level
    app_logger = logging.getLogger("pushbot.some_module")

    upgrade_database(empty_db_url)

    assert root.handlers == handlers_before
    assert root.level == level_before
    assert not app_logger.disabled
