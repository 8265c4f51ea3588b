"""The audience's history: every function that moves a chat in or out of the audience
appends the event, and nothing else does (both backends)."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from pushbot.db import queries
from pushbot.db.models import ChatEventKind
from pushbot.db.queries import ChatInfo, DeliveryOutcome, PushDraft
from tests.db.conftest import StatementLog

T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
BLOCKED = "blocked"

Factory = sessionmaker[Session]
Event = tuple[int, str, str | None, datetime]


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def user(chat_id: int) -> ChatInfo:
    return ChatInfo(id=chat_id, type="private", first_name=f"user {chat_id}")


def history(factory: Factory) -> list[Event]:
    events = queries.CHAT_EVENTS.c
    with factory.begin() as session:
        rows = session.execute(
            select(events.chat_id, events.kind, events.reason, events.at).order_by(events.id)
        )
        return [(r.chat_id, r.kind, r.reason, utc(r.at)) for r in rows]


def utc(moment: datetime) -> datetime:
    """SQLite gives the stored UTC wall-clock time back naive."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def audience_by_events(factory: Factory) -> int:
    return sum(ChatEventKind(kind).audience_delta for _, kind, _, _ in history(factory))


def audience_size(factory: Factory) -> int:
    with factory.begin() as session:
        return queries.audience_size(session)


def test_subscribing_joins_once_and_returns_after_a_stop(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        queries.subscribe_chat(session, user(1), at(0))
    with session_factory.begin() as session:
        queries.subscribe_chat(session, user(1), at(1))  # already in: nothing happens
        queries.unsubscribe_chat(session, 1, now=at(2))
    with session_factory.begin() as session:
        queries.unsubscribe_chat(session, 1, now=at(3))  # already out
        queries.subscribe_chat(session, user(1), at(4))

    assert history(session_factory) == [
        (1, "joined", None, at(0)),
        (1, "left", None, at(2)),
        (1, "returned", None, at(4)),
    ]


def test_a_purge_is_recorded_with_its_reason_once(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        queries.subscribe_chat(session, user(1), at(0))
    with session_factory.begin() as session:
        queries.purge_chat(session, 1, BLOCKED, at(5))
    with session_factory.begin() as session:
        queries.purge_chat(session, 1, "chat not found", at(6))  # already out of the audience

    assert history(session_factory) == [
        (1, "joined", None, at(0)),
        (1, "purged", BLOCKED, at(5)),
    ]


def test_an_unsubscribed_chat_neither_leaves_nor_returns_when_purged_or_restored(
    session_factory: Factory,
) -> None:
    with session_factory.begin() as session:
        queries.subscribe_chat(session, user(1), at(0))
        queries.unsubscribe_chat(session, 1, now=at(1))
    with session_factory.begin() as session:
        queries.purge_chat(session, 1, BLOCKED, at(2))
    with session_factory.begin() as session:
        queries.restore_chat(session, user(1), at(3))

    assert [kind for _, kind, _, _ in history(session_factory)] == ["joined", "left"]


def test_a_restored_chat_returns_and_an_unknown_one_joins(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        queries.subscribe_chat(session, user(1), at(0))
        queries.purge_chat(session, 1, BLOCKED, at(1))
    with session_factory.begin() as session:
        queries.restore_chat(session, user(1), at(2))
        queries.restore_chat(session, user(1), at(3))  # already back
        queries.restore_chat(session, user(2), at(4))

    assert history(session_factory) == [
        (1, "joined", None, at(0)),
        (1, "purged", BLOCKED, at(1)),
        (1, "returned", None, at(2)),
        (2, "joined", None, at(4)),
    ]


def test_a_chat_first_seen_by_record_chat_joins_and_later_sightings_do_nothing(
    session_factory: Factory,
) -> None:
    with session_factory.begin() as session:
        queries.record_chat(session, ChatInfo(id=-100, type="group", title="Club"), at(0))
    with session_factory.begin() as session:
        queries.record_chat(session, ChatInfo(id=-100, type="group", title="Club 2"), at(1))

    assert history(session_factory) == [(-100, "joined", None, at(0))]


def test_broadcast_purges_are_recorded_at_their_outcome_times_in_one_statement(
    session_factory: Factory, sql_log: StatementLog
) -> None:
    with session_factory.begin() as session:
        for chat_id in (1, 2, 3):
            queries.subscribe_chat(session, user(chat_id), at(0))
        push = queries.create_push(session, PushDraft(None, "text", 900, 1, 900), at(1))
        queries.enqueue_recipients(session, push.uuid, at(1))
    sql_log.clear()

    with session_factory.begin() as session:
        queries.record_deliveries(
            session,
            push.uuid,
            [
                DeliveryOutcome(1, None, "deactivated", purge=True, at=at(2)),
                DeliveryOutcome(2, 77, None, purge=False, at=at(3)),
                DeliveryOutcome(3, None, BLOCKED, purge=True, at=at(4)),
                # The same chat twice in a batch is lost once, for its first reason.
                DeliveryOutcome(3, None, "chat not found", purge=True, at=at(5)),
            ],
        )

    inserts = sql_log.touching("chat_events")
    assert [(s.verb, s.executemany, s.rows) for s in inserts] == [("INSERT", True, 2)]
    assert history(session_factory)[3:] == [
        (1, "purged", "deactivated", at(2)),
        (3, "purged", BLOCKED, at(4)),
    ]


def test_a_migration_is_recorded_without_moving_the_audience(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        queries.record_chat(session, ChatInfo(id=-100, type="group", title="Club"), at(0))
        queries.note_chat_migrated(session, -100, -100_200, at(1))

    events = queries.CHAT_EVENTS.c
    with session_factory.begin() as session:
        moved = session.execute(
            select(events.chat_id, events.from_chat_id).where(events.kind == "migrated")
        ).one()
    assert tuple(moved) == (-100_200, -100)
    assert ChatEventKind.MIGRATED.audience_delta == 0


def test_the_history_always_adds_up_to_the_audience(session_factory: Factory) -> None:
    """Whatever people do, in whatever order, summing the events gives the audience."""
    rng = random.Random(11)
    chat_ids = list(range(1, 16))
    for step in range(300):
        chat_id, when = rng.choice(chat_ids), at(step)
        with session_factory.begin() as session:
            match rng.randrange(6):
                case 0:
                    queries.subscribe_chat(session, user(chat_id), when)
                case 1:
                    queries.unsubscribe_chat(session, chat_id, now=when)
                case 2:
                    queries.record_chat(session, user(chat_id), when)
                case 3:
                    queries.restore_chat(session, user(chat_id), when)
                case 4:
                    queries.purge_chat(session, chat_id, BLOCKED, when)
                case _:
                    others = rng.sample(chat_ids, 4)
                    queries.purge_chats(session, dict.fromkeys(others, "kicked"), when)

    assert audience_by_events(session_factory) == audience_size(session_factory)
    with session_factory.begin() as session:
        recorded = session.execute(select(func.count()).select_from(queries.CHAT_EVENTS))
        assert recorded.scalar_one() > 2 * len(chat_ids), "the sequence moved chats in and out"


@pytest.mark.parametrize("empty_db_url", ["postgresql"], indirect=True)
def test_two_transactions_purging_one_chat_at_once_record_it_once(
    session_factory: Factory, db_engine: Engine
) -> None:
    """The ledger and a my_chat_member update purge the same user at the same moment."""
    with session_factory.begin() as session:
        queries.subscribe_chat(session, user(1), at(0))
    first = session_factory()
    first.begin()
    queries.purge_chat(first, 1, BLOCKED, at(1))
    second = threading.Thread(target=purge_in_a_transaction_of_its_own, args=(session_factory,))
    second.start()
    try:
        wait_for_a_transaction_waiting_on_a_lock(db_engine)
    finally:
        first.commit()
        first.close()
        second.join(timeout=30)

    assert not second.is_alive()
    assert history(session_factory) == [(1, "joined", None, at(0)), (1, "purged", BLOCKED, at(1))]


def purge_in_a_transaction_of_its_own(factory: Factory) -> None:
    with factory.begin() as session:
        queries.purge_chat(session, 1, "kicked", at(2))


def wait_for_a_transaction_waiting_on_a_lock(engine: Engine, timeout: float = 30.0) -> None:
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + timeout
    with engine.connect() as connection:
        while connection.execute(waiting).scalar_one() == 0:
            assert time.monotonic() < deadline, "the second purge never waited for the first"
            connection.rollback()  # a fresh snapshot of pg_stat_activity
            time.sleep(0.01)


def group(chat_id: int, kind: str = "group") -> ChatInfo:
    return ChatInfo(id=chat_id, type=kind, title=f"group {chat_id}")


def test_a_group_moving_to_its_supergroup_is_a_migration_not_a_departure(
    session_factory: Factory,
) -> None:
    with session_factory.begin() as session:
        queries.record_chat(session, group(-1), at(0))
    with session_factory.begin() as session:
        queries.move_chat(session, -1, group(-1001, "supergroup"), at(5))
        queries.move_chat(session, -1, group(-1001, "supergroup"), at(6))  # heard twice

    assert [(chat, kind) for chat, kind, _, _ in history(session_factory)] == [
        (-1, "joined"),
        (-1001, "migrated"),
    ]
    assert audience_by_events(session_factory) == audience_size(session_factory) == 1


def test_a_group_first_heard_of_as_a_supergroup_joins(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        queries.move_chat(session, -2, group(-1002, "supergroup"), at(0))

    assert [(chat, kind) for chat, kind, _, _ in history(session_factory)] == [(-1002, "joined")]
    assert audience_by_events(session_factory) == audience_size(session_factory) == 1
