"""The ledger on its own: keyset feeds, group commit and the uncommitted-sends bound."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from pushbot.broadcast.ledger import OutcomeWriter, copies_to_delete, pending_recipients
from pushbot.db import queries
from tests.broadcast import helpers
from tests.broadcast.helpers import counts, create_push, notifications, subscribe

Factory = sessionmaker[Session]


def launch(factory: Factory, chat_ids: list[int]) -> queries.PushSummary:
    subscribe(factory, chat_ids)
    push_uuid = create_push(factory)
    with factory.begin() as session:
        queries.enqueue_recipients(session, push_uuid)
        push = queries.get_push(session, push_uuid)
    assert push is not None
    return push


def delivered(chat_id: int) -> queries.DeliveryOutcome:
    return queries.DeliveryOutcome(chat_id, chat_id + 10, None, False, datetime.now(UTC))


def deliveries_writer(
    factory: Factory, push: queries.PushSummary, slots: int, **options: float
) -> OutcomeWriter[queries.DeliveryOutcome]:
    def write(session: Session, batch: Sequence[queries.DeliveryOutcome]) -> None:
        queries.record_deliveries(session, push.uuid, batch)

    return OutcomeWriter(
        name="test",
        session_factory=factory,
        write=write,
        slots=slots,
        **options,  # type: ignore[arg-type]
    )


def test_pending_recipients_walks_every_page_in_order(session_factory: Factory) -> None:
    chat_ids = list(range(1, 24))
    push = launch(session_factory, chat_ids)
    assert list(pending_recipients(session_factory, push.uuid, page_size=5)) == chat_ids


def test_pending_recipients_skips_what_is_already_recorded(session_factory: Factory) -> None:
    push = launch(session_factory, [1, 2, 3, 4])
    with session_factory.begin() as session:
        queries.record_deliveries(session, push.uuid, [delivered(2), delivered(3)])
    assert list(pending_recipients(session_factory, push.uuid, page_size=2)) == [1, 4]


def test_copies_to_delete_lists_sent_copies_with_their_message_ids(
    session_factory: Factory,
) -> None:
    push = launch(session_factory, [1, 2, 3])
    with session_factory.begin() as session:
        queries.record_deliveries(session, push.uuid, [delivered(1), delivered(3)])
    assert list(copies_to_delete(session_factory, push.uuid, page_size=1)) == [(1, 11), (3, 13)]


def test_group_commit_stores_outcomes_in_few_transactions(session_factory: Factory) -> None:
    push = launch(session_factory, list(range(1, 201)))
    writer = deliveries_writer(session_factory, push, slots=200, batch_size=100, interval=5.0)
    writer.start()
    stop = threading.Event()
    for chat_id in range(1, 201):
        assert writer.take_slot(stop)
        writer.submit(delivered(chat_id))
    assert writer.close() == 0
    assert writer.committed == 200
    assert writer.flushes <= 3
    assert counts(session_factory, push.uuid).sent == 200


def test_an_outcome_is_committed_within_the_interval(session_factory: Factory) -> None:
    push = launch(session_factory, [1])
    writer = deliveries_writer(session_factory, push, slots=5, interval=0.2)
    writer.start()
    assert writer.take_slot(threading.Event())
    writer.submit(delivered(1))
    helpers.wait_until(lambda: writer.committed > 0, timeout=3)
    assert writer.committed == 1
    writer.close()


def test_no_more_than_slots_sends_are_ever_uncommitted(session_factory: Factory) -> None:
    push = launch(session_factory, list(range(1, 5)))
    gate = threading.Event()

    def slow_write(session: Session, batch: Sequence[queries.DeliveryOutcome]) -> None:
        gate.wait(5)
        queries.record_deliveries(session, push.uuid, batch)

    writer = OutcomeWriter(name="t", session_factory=session_factory, write=slow_write, slots=3)
    writer.start()
    stop = threading.Event()
    for chat_id in (1, 2, 3):
        assert writer.take_slot(stop)
        writer.submit(delivered(chat_id))
    taken: list[bool] = []
    fourth = threading.Thread(target=lambda: taken.append(writer.take_slot(stop)))
    fourth.start()
    helpers.wait_until(lambda: writer.senders_waiting, timeout=5)
    assert taken == [] and writer.uncommitted == 3  # blocked: 3 outcomes not yet committed
    gate.set()  # the commit lands, the slots come back
    fourth.join(timeout=5)
    assert taken == [True]
    writer.give_back_slot()
    writer.close()
    assert counts(session_factory, push.uuid).sent == 3


def test_the_writer_flushes_at_once_when_senders_are_starved(session_factory: Factory) -> None:
    push = launch(session_factory, [1, 2, 3])
    writer = deliveries_writer(session_factory, push, slots=2, interval=30.0)
    writer.start()
    stop = threading.Event()
    started = time.monotonic()
    for chat_id in (1, 2, 3):
        assert writer.take_slot(stop)
        writer.submit(delivered(chat_id))
    assert time.monotonic() - started < 2  # did not wait for the 30 s interval
    writer.close()


def test_take_slot_gives_up_when_stopped(session_factory: Factory) -> None:
    push = launch(session_factory, [1])
    writer = deliveries_writer(session_factory, push, slots=1)
    writer.start()
    stop = threading.Event()
    assert writer.take_slot(stop)
    threading.Timer(0.2, stop.set).start()
    assert writer.take_slot(stop) is False
    writer.give_back_slot()
    writer.close()


def test_a_failing_database_is_retried_and_nothing_is_lost(
    session_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    push = launch(session_factory, [1, 2])
    failures = [RuntimeError("database is down"), RuntimeError("still down")]

    def flaky_write(session: Session, batch: Sequence[queries.DeliveryOutcome]) -> None:
        if failures:
            raise failures.pop(0)
        queries.record_deliveries(session, push.uuid, batch)

    writer = OutcomeWriter(
        name="flaky", session_factory=session_factory, write=flaky_write, slots=5
    )
    writer.start()
    stop = threading.Event()
    with caplog.at_level(logging.ERROR, logger="pushbot.broadcast.ledger"):
        for chat_id in (1, 2):
            assert writer.take_slot(stop)
            writer.submit(delivered(chat_id))
        assert writer.close() == 0
    assert counts(session_factory, push.uuid).sent == 2
    assert "could not record" in caplog.text and "flaky" in caplog.text


# PostgreSQL only, not skipped on SQLite: the writer holds a connection of its own only
# there (SQLite has no server to drop it).
@pytest.mark.parametrize(
    "empty_db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_a_connection_the_database_closed_is_replaced_at_once_without_an_error(
    session_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    """On PostgreSQL the writer keeps its connection from one commit to the next; when the
    server drops it (a restart), the next commit reconnects as the pool's pre-ping would:
    no failed attempt, no error, nothing lost."""
    bind = session_factory.kw["bind"]
    assert bind.dialect.name == "postgresql"
    push = launch(session_factory, [1, 2])
    writer = deliveries_writer(session_factory, push, slots=1)
    writer.start()
    stop = threading.Event()
    with caplog.at_level(logging.DEBUG, logger="pushbot.broadcast.ledger"):
        assert writer.take_slot(stop)
        writer.submit(delivered(1))
        assert writer.take_slot(stop)  # the first outcome is committed
        killer = create_engine(bind.url, poolclass=NullPool)
        with killer.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        killer.dispose()
        writer.submit(delivered(2))
        assert writer.close() == 0
    assert counts(session_factory, push.uuid).sent == 2
    assert "its database connection was closed; reconnecting" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_outcomes_the_database_never_took_are_logged_not_dropped_silently(
    session_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    push = launch(session_factory, [41, 42])

    def broken_write(session: Session, batch: Sequence[queries.DeliveryOutcome]) -> None:
        raise RuntimeError("disk full")

    writer = OutcomeWriter(
        name="broken",
        session_factory=session_factory,
        write=broken_write,
        slots=5,
        close_deadline=0.5,
        describe_outcome=lambda outcome: outcome.chat_id,
    )
    writer.start()
    stop = threading.Event()
    with caplog.at_level(logging.ERROR, logger="pushbot.broadcast.ledger"):
        for chat_id in (41, 42):
            assert writer.take_slot(stop)
            writer.submit(delivered(chat_id))
        assert writer.close() == 2
    assert "giving up on 2 outcomes" in caplog.text and "41, 42" in caplog.text
    # They stay pending, so a resume sends them again rather than forgetting them.
    rows = notifications(session_factory, push.uuid)
    assert {row.status for row in rows.values()} == {"pending"}
