"""Engine and session set-up, and schema upgrades at start-up.

One engine serves the whole process from many threads at once: the broadcaster's writer
thread and the bot's handlers (via `asyncio.to_thread`) share it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

# The top-level migrations/ folder, installed as the package `pushbot.migrations` (see
# pyproject.toml): the checkout's folder in an editable install, site-packages' otherwise.
MIGRATIONS_DIR = Path(str(resources.files("pushbot.migrations")))

# Several threads write at once (broadcast outcomes, handlers recording chats); SQLite has
# a single writer, so a writer waits for the lock instead of failing with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 15_000
# One round trip per flush: outcome batches are at most 500 rows.
POSTGRES_BATCH_PAGE_SIZE = 500

# Read by migrations/env.py: when alembic runs inside the app, the app owns logging.
SKIP_LOGGING_CONFIG = "pushbot_skip_logging_config"


def create_db_engine(url: str, pool_size: int = 5) -> Engine:
    """An engine tuned for the backend in `url` (SQLite or PostgreSQL via psycopg2)."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return _create_sqlite_engine(url, pool_size)
    if backend == "postgresql":
        return _create_postgres_engine(url, pool_size)
    raise ValueError(f"unsupported database backend {backend!r} (use sqlite or postgresql)")


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    # Results are copied into plain dataclasses, but expiring on commit would still cost a
    # SELECT per attribute if anyone touched an ORM object after the transaction.
    return sessionmaker(bind=engine, expire_on_commit=False)


def upgrade_database(url: str) -> None:
    """`alembic upgrade head` on `url`; a no-op when the schema is already current."""
    command.upgrade(alembic_config(url), "head")


def alembic_config(url: str) -> Config:
    """Alembic configuration for programmatic use (tests use it for autogenerate checks)."""
    # No alembic.ini: everything it would say for the app is set here (it stays at the top
    # level for the `alembic` command line in a checkout).
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolates '%', which appears in URL-escaped passwords.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes[SKIP_LOGGING_CONFIG] = True
    return config


def _create_sqlite_engine(url: str, pool_size: int) -> Engine:
    in_memory = make_url(url).database in (None, "", ":memory:")
    options: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if in_memory:
        # Every connection to ":memory:" is a separate empty database: share one connection.
        options["poolclass"] = StaticPool
    else:
        options["pool_size"] = pool_size
    engine = create_engine(url, **options)
    event.listen(engine, "connect", _configure_sqlite_connection)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets readers (handlers, progress reports) run while the broadcaster writes.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # With WAL, NORMAL is still crash-safe for the database; only the last commits may be
        # lost on power failure, which the broadcast ledger tolerates (it resumes).
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _create_postgres_engine(url: str, pool_size: int) -> Engine:
    return create_engine(
        url,
        pool_size=pool_size,
        # Long broadcasts idle connections for a while; a server restart must not surface as
        # an error on the next flush.
        pool_pre_ping=True,
        # Bulk UPDATEs (delivery outcomes) go through execute_batch: one round trip per page
        # instead of one per row.
        executemany_mode="values_plus_batch",
        executemany_batch_page_size=POSTGRES_BATCH_PAGE_SIZE,
    )
