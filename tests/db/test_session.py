"""Engine set-up: SQLite pragmas, PostgreSQL batching, use from many threads at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, func, select, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from pushbot.db import queries
from pushbot.db.models import PushMessage, PushNotification
from pushbot.db.queries import ChatInfo, DeliveryOutcome, PushDraft
from pushbot.db.session import (
    SKIP_LOGGING_CONFIG,
    SQLITE_BUSY_TIMEOUT_MS,
    alembic_config,
    create_db_engine,
    create_session_factory,
)

Factory = sessionmaker[Session]
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def pragma(engine: Engine, name: str) -> object:
    with engine.connect() as connection:
        return connection.exec_driver_sql(f"PRAGMA {name}").scalar()


def test_sqlite_engine_pragmas(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'bot.sqlite3'}")
    try:
        assert pragma(engine, "journal_mode") == "wal"
        assert pragma(engine, "busy_timeout") == SQLITE_BUSY_TIMEOUT_MS
        assert SQLITE_BUSY_TIMEOUT_MS >= 5_000
        assert pragma(engine, "foreign_keys") == 1
        assert pragma(engine, "synchronous") == 1  # NORMAL
    finally:
        engine.dispose()


def test_sqlite_engine_allows_use_from_other_threads(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'bot.sqlite3'}", pool_size=1)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            connection.commit()
        # The pooled connection, created here, is checked out again by another thread.
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(pragma, engine, "foreign_keys").result() == 1
    finally:
        engine.dispose()


def test_in_memory_sqlite_is_one_database_for_every_thread() -> None:
    engine = create_db_engine("sqlite://")
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            connection.exec_driver_sql("INSERT INTO t VALUES (1)")
        with ThreadPoolExecutor(1) as pool:
            count = pool.submit(
                lambda: engine.connect().exec_driver_sql("SELECT count(*) FROM t").scalar()
            )
            assert count.result() == 1
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_engine_is_pooled_and_batches_executemany(postgres_url: str) -> None:
    engine = create_db_engine(postgres_url, pool_size=12)
    try:
        assert isinstance(engine.pool, QueuePool) and engine.pool.size() == 12
        # UPDATE executemany goes through psycopg2's execute_batch, a page per round trip.
        mode = getattr(engine.dialect, "executemany_mode", None)
        assert mode is not None and mode.name == "EXECUTEMANY_VALUES_PLUS_BATCH"
        assert getattr(engine.dialect, "executemany_batch_page_size", None) == 500
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_engine_survives_a_dropped_connection(postgres_url: str) -> None:
    engine = create_db_engine(postgres_url, pool_size=1)
    try:
        with engine.connect() as connection:
            pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with create_db_engine(postgres_url).connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            other.commit()

        # The pooled connection is dead: pre-ping replaces it instead of failing the query.
        with engine.connect() as connection:
            assert connection.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid
    finally:
        engine.dispose()


def test_unsupported_backends_are_refused() -> None:
    with pytest.raises(ValueError, match="mysql"):
        create_db_engine("mysql://user@localhost/pushbot")


def test_session_factory_does_not_expire_on_commit(db_engine: Engine) -> None:
    factory = create_session_factory(db_engine)

    assert factory.kw["expire_on_commit"] is False
    assert factory.kw["bind"] is db_engine


def test_alembic_config_keeps_url_escapes_intact() -> None:
    # Passwords are URL-escaped ("p%40ss" for "p@ss"); alembic's ConfigParser would
    # interpolate a bare "%".
    url = "postgresql+psycopg2://bot:p%40ss%25@db.example:5432/pushbot"

    config = alembic_config(url)

    assert config.get_main_option("sqlalchemy.url") == url
    assert config.attributes[SKIP_LOGGING_CONFIG] is True


def test_deleting_a_push_deletes_its_recipients(session_factory: Factory) -> None:
    # On SQLite this needs foreign_keys=ON on every connection.
    with session_factory.begin() as session:
        queries.subscribe_chat(session, ChatInfo(id=1, type="private"))
        push = queries.create_push(session, PushDraft("hi", "text", 9, 1, 9))
        queries.enqueue_recipients(session, push.uuid)

    with session_factory.begin() as session:
        session.execute(delete(PushMessage).where(PushMessage.uuid == push.uuid))

    with session_factory.begin() as session:
        remaining = session.execute(select(func.count()).select_from(PushNotification))
        assert remaining.scalar_one() == 0


def test_concurrent_writers_from_many_threads(session_factory: Factory) -> None:
    """The broadcaster's writer thread flushes outcomes while handler threads record chats:
    writers wait for each other (busy_timeout on SQLite) instead of failing."""
    with session_factory.begin() as session:
        for chat_id in range(1, 401):
            queries.record_chat(session, ChatInfo(id=chat_id, type="private"), T0)
        push = queries.create_push(session, PushDraft("hi", "text", 9, 1, 9))
        queries.enqueue_recipients(session, push.uuid)
    start = threading.Barrier(9)

    def writer() -> None:
        start.wait()
        for first in range(1, 401, 20):
            outcomes = [
                DeliveryOutcome(n, n, None, purge=False, at=T0) for n in range(first, first + 20)
            ]
            with session_factory.begin() as session:
                queries.record_deliveries(session, push.uuid, outcomes)

    def handler(worker: int) -> None:
        start.wait()
        for n in range(25):
            chat = ChatInfo(id=10_000 + worker * 100 + n, type="private")
            with session_factory.begin() as session:
                queries.subscribe_chat(session, chat)
                queries.record_chat(session, ChatInfo(id=n + 1, type="private", title="x"))

    with ThreadPoolExecutor(9) as pool:
        futures = [pool.submit(writer)] + [pool.submit(handler, w) for w in range(8)]
        for future in futures:
            future.result()

    with session_factory.begin() as session:
        assert queries.push_counts(session, push.uuid).sent == 400
        assert queries.audience_size(session) == 400 + 8 * 25
