"""Alembic environment for pushbot.

The URL comes from the alembic Config when pushbot runs the upgrade itself (see
`pushbot.db.session.upgrade_database`), otherwise from pushbot's settings (DATABASE_URL in the
environment or `.env`), so the alembic command line and the bot always agree on the database.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import make_url

from pushbot.config import load_settings
from pushbot.db.models import Base
from pushbot.db.session import SKIP_LOGGING_CONFIG

config = context.config
target_metadata = Base.metadata

# Inside the app, logging is already set up: fileConfig would silence or duplicate its loggers.
if config.config_file_name is not None and not config.attributes.get(SKIP_LOGGING_CONFIG):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    configured = config.get_main_option("sqlalchemy.url")
    if configured:
        return configured
    return load_settings(require_token=False).database_url


def run_migrations_offline() -> None:
    """`alembic upgrade --sql`: print the SQL instead of running it."""
    url = database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=make_url(url).get_backend_name() == "sqlite",
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # A private engine without the app's SQLite pragmas: foreign_keys=ON would make batch
    # mode's table rebuilds cascade deletes into child tables.
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                compare_type=True,
                # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
